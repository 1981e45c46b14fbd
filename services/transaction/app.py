"""The transaction service: the one owner of the database, inbound /send, outbound queues.

`create_app(settings)` builds a fresh app with no module-level state. Its lifespan opens
the database (refusing a second service on the same file), starts the relay to pdu and
the per-destination senders, and closes everything on shutdown.

Invariant: EDUs enter the outbound queue only through the `/edus` route, each at most
MAX_EDU_BYTES of canonical JSON (413 M_TOO_LARGE, nothing queued), so no queued EDU is too
big for a remote to take; one the remote refuses anyway is dropped as poison by the sender.
"""
from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager

from fastapi import Query, Request
from starlette.responses import Response

from services.transaction import store_events as se
from services.transaction import store_federation as sf
from services.transaction import store_edus
from services.transaction import store_stats
from services.transaction import store_trace
from services.transaction.routes import admin as admin_routes
from shared import gauges
from shared.metrics import Metrics
from services.transaction.db import Database
from services.transaction.sql import DataOutOfRange, read_only
from services.transaction.device_resync import DeviceResync
from services.transaction.edu_checks import EduChecker
from services.transaction.inbound import InboundTransactions
from services.transaction.room_servers import RoomServers
from services.transaction.routes import devices as devices_routes
from services.transaction.routes import directory as directory_routes
from services.transaction.routes import edus as edus_routes
from services.transaction.routes import rooms as rooms_routes
from services.transaction.relay import Relay
from services.transaction.sender import Sender
from shared.contracts import transaction as c
from shared.contracts.pdu import PduClient
from shared.contracts.transport import FederationRequest, FederationResponse, ServerKeys, TransportClient
from shared.canonical import CanonicalJSONError, canonical_json
from shared.errors import MatrixError, error_response, json_response
from shared.routing import body_doc, new_app, read_json, serve_lean
from shared.settings import Settings


class TransactionService:
    """Everything the routes need; one instance per app."""

    def __init__(self, settings: Settings, *, transport_client=None, pdu_client=None,
                 metrics: Metrics | None = None):
        self.settings = settings
        secret = settings.secret()
        self.metrics = metrics = metrics or Metrics("transaction")
        self.db = Database(settings.db_url(), metrics)
        self.transport = transport_client or TransportClient(settings.transport_url, secret)
        self.pdu = pdu_client or PduClient(settings.pdu_url, secret)
        self.relay = Relay(self.db, self.pdu, metrics=metrics)
        self.sender = Sender(self.db, self.transport, settings, metrics=metrics)
        metrics.on_scrape(self.scrape)
        self.room_servers = RoomServers(self.pdu)
        self.edu_checker = EduChecker(settings.server_name, self.room_servers)
        self.device_resync = DeviceResync(self.db, self.transport, self.wake_stream)
        self.inbound = InboundTransactions(self.db, self.relay.wake, self.edu_checker,
                                           self.edus_stored)
        self.new_events = asyncio.Condition()

    async def start(self):
        await self.db.start()
        self.relay.start()
        self.device_resync.start()
        await self.sender.start()
        await self.sender.poke_all()

    async def stop(self):
        await self.relay.stop()
        await self.device_resync.stop()
        await self.sender.stop()
        await self.transport.aclose()
        await self.pdu.aclose()
        await self.db.close()

    async def scrape(self) -> None:
        """The gauges of current state: queues, backoffs and subscription lags."""
        gauges.set_destinations(self.metrics, await admin_routes.destinations_view(self),
                                self.sender.clock())
        gauges.set_subscriptions(self.metrics, await self.db.run(store_stats.subscriptions))

    async def wake_stream(self) -> None:
        """New items in the live stream (EDUs): wake the long polls."""
        async with self.new_events:
            self.new_events.notify_all()

    async def edus_stored(self) -> None:
        """A transaction's EDUs were committed (a device list resync may be owed)."""
        self.device_resync.wake()
        await self.wake_stream()

    async def persist(self, req: dict) -> dict:
        result = await self.db.run(se.persist, req)
        self.room_servers.persisted(req.get("events") or ())
        dests = {d for ds in req.get("destinations", {}).values() for d in ds}
        self.sender.notify(dests)
        if any(v.get("new") or v.get("upgraded") for v in result["events"].values()):
            async with self.new_events:
                self.new_events.notify_all()
        return result

    async def wait_stream(self, after: int, limit: int, room_id, timeout_ms: int,
                          save: tuple[str, str | None] | None = None, edus: bool = False) -> dict:
        """Live events (and with `edus`, received EDUs) after `after`, waiting up to
        timeout_ms for some. `save` (subscription_id, owner): first save `after` as that
        subscription's position, in the same database call as the first read."""
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            async with self.new_events:
                if save is None:
                    evs, eds = await self.db.run(_read, after, limit, room_id, edus)
                else:
                    evs, eds = await self.db.run(_save_and_read, save, after, limit, room_id, edus)
                save = None
                remaining = deadline - time.monotonic()
                if evs or eds or remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(self.new_events.wait(), remaining)
                except asyncio.TimeoutError:
                    pass
        last = max(evs[-1]["position"] if evs else 0, eds[-1]["position"] if eds else 0)
        nxt = last or after
        if not evs and not eds and after == 0:
            nxt = 0
        page = {"events": evs, "next": nxt}
        if edus:
            page["edus"] = eds
        return page


@read_only
def _read(conn, after: int, limit: int, room_id, edus: bool = False):
    return _save_and_read(conn, None, after, limit, room_id, edus)


def _save_and_read(conn, save, after: int, limit: int, room_id, edus: bool = False):
    if save is not None:
        sf.set_subscription_position(conn, save[0], after, save[1])
    events = store_trace.annotate(conn, se.stream(conn, after, limit, room_id))
    if not edus:
        return events, []
    return store_edus.merge(events, store_edus.stream(conn, after, limit, room_id), limit)


def create_app(settings: Settings, **clients):
    svc_holder: dict = {}

    metrics = Metrics("transaction")

    @asynccontextmanager
    async def lifespan(app):
        svc = TransactionService(settings, metrics=metrics, **clients)
        await svc.start()
        app.state.svc = svc
        try:
            yield
        finally:
            await svc.stop()

    app = new_app("fedstack-transaction", settings.secret(), lifespan=lifespan, metrics=metrics)

    @app.exception_handler(DataOutOfRange)
    async def _unstorable(_req: Request, exc: DataOutOfRange):
        """A value the database refuses as data (PostgreSQL: a NUL in text, an integer
        beyond 64 bits): the caller's bad input, and that call's writes were undone."""
        return error_response(400, "M_INVALID_PARAM", f"value cannot be stored: {exc}"[:300])

    def svc(request: Request) -> TransactionService:
        return request.app.state.svc

    @app.put(c.INBOUND_ROUTE, tags=["inbound"],
             openapi_extra=body_doc(_TransactionBody))
    async def inbound(origin: str, txn_id: str, request: Request):
        s = svc(request)
        body = await read_json(request)
        response = await s.inbound.receive(origin, txn_id, body)
        asyncio.create_task(s.sender.mark_up(origin))
        return Response(response, media_type="application/json")

    @app.post(c.PERSIST, tags=["events"], openapi_extra=body_doc(c.PersistRequest),
              response_model=c.PersistResponse)
    async def persist(request: Request):
        try:
            return json_response(await svc(request).persist(await read_json(request)))
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            # a request not of the PersistRequest shape (the commit was rolled back)
            raise MatrixError(400, "M_BAD_JSON", f"malformed persist request: {exc!r}"[:300])

    @app.post(c.GET_EVENTS, tags=["events"], openapi_extra=body_doc(_EventIds))
    async def get_events(request: Request):
        body = await read_json(request)
        return json_response({"events": await svc(request).db.run(se.get_events, body.get("event_ids", []))})

    @app.get(c.ROOM, tags=["rooms"], response_model=c.RoomInfo)
    async def get_room(room_id: str, request: Request):
        room = await svc(request).db.run(se.get_room, room_id)
        if room is None:
            from shared.errors import MatrixError
            raise MatrixError(404, "M_NOT_FOUND", "unknown room")
        return json_response(room)

    @app.post(c.STATE_GROUPS, tags=["rooms"])
    async def state_groups(body: _Groups, request: Request):
        return json_response({"groups": await svc(request).db.run(se.get_state_groups, body.groups)})

    @app.get(c.STREAM, tags=["events"], response_model=c.StreamResponse)
    async def stream(request: Request, after: int = 0, limit: int = Query(100, ge=1, le=1000),
                     room_id: str | None = None, timeout_ms: int = Query(0, ge=0, le=60000),
                     subscription_id: str | None = None, owner: str | None = None,
                     edus: bool = False):
        """Live events after `after` (long poll up to timeout_ms). With subscription_id, its
        position is first saved as `after` (see TransactionClient.stream). With `edus`,
        the received EDUs too, in the same sequence of positions."""
        after = max(min(after, 2**63 - 1), -2**63)     # positions are SQLite integers
        save = (subscription_id, owner) if subscription_id is not None else None
        waiter = asyncio.ensure_future(svc(request).wait_stream(after, limit, room_id, timeout_ms,
                                                                save, edus))
        try:
            while True:  # a long poll ends early when its caller has gone away
                done, _ = await asyncio.wait({waiter}, timeout=0.5)
                if done:
                    return json_response(waiter.result())
                if await request.is_disconnected():
                    return json_response({"events": [], "next": after})
        finally:
            waiter.cancel()     # no-op once done; else (gone, or shut down) it stops too

    @app.post(c.CLIENT_TXN, tags=["events"])
    async def client_txn(body: _ClientTxn, request: Request):
        return {"event_id": await svc(request).db.run(se.get_client_txn, body.sender, body.txn_id)}

    @app.post(c.FEDERATION_REQUEST, tags=["outbound"], response_model=FederationResponse)
    async def federation_request(body: FederationRequest, request: Request):
        return await svc(request).transport.federation_request(
            body.destination, body.method, body.path, query=body.query, body=body.body,
            timeout_s=body.timeout_s)

    @app.get(c.SERVER_KEYS, tags=["outbound"], response_model=ServerKeys)
    async def server_keys(server_name: str, request: Request, key_id: list[str] = Query([]),
                          minimum_valid_until_ts: int = 0):
        """The transport's verified keys of `server_name`; the hints pass through (a key
        the transport lacks, or too short a validity, makes it fetch again, rate-limited)."""
        return await svc(request).transport.server_keys(server_name, key_id, minimum_valid_until_ts)

    @app.post(c.DESTINATION_UP, tags=["outbound"])
    async def destination_up(destination: str, request: Request):
        await svc(request).sender.mark_up(destination)
        return {}

    @app.post(c.EDUS, tags=["outbound"], openapi_extra=body_doc(_Edus))
    async def queue_edus(request: Request):
        """Queue EDUs for their destinations. Each must be an object with a string edu_type
        and an object content, at most MAX_EDU_BYTES of canonical JSON (else 413, nothing
        queued): an EDU a remote refuses for size could otherwise never be delivered."""
        s = svc(request)
        body = await read_json(request)
        rows = []
        for e in body.get("edus") if isinstance(body.get("edus"), list) else []:
            if not (isinstance(e, dict) and isinstance(e.get("destination"), str)
                    and isinstance(e.get("edu_type"), str) and isinstance(e.get("content"), dict)):
                raise MatrixError(400, "M_BAD_JSON", "each EDU needs destination, edu_type, content")
            edu = {"edu_type": e["edu_type"], "content": e["content"]}
            try:
                size = len(canonical_json(edu))
            except CanonicalJSONError as exc:
                raise MatrixError(400, "M_BAD_JSON", f"EDU is not canonical JSON: {exc}")
            if size > c.MAX_EDU_BYTES:
                raise MatrixError(413, "M_TOO_LARGE", f"EDU of {size} bytes, over {c.MAX_EDU_BYTES}")
            if e["destination"] != settings.server_name:
                rows.append((e["destination"], edu))
        await s.db.run(sf.enqueue_edus, rows)
        s.sender.notify({d for d, _ in rows})
        return {}

    @app.post(c.POKE_DESTINATIONS, tags=["outbound"])
    async def poke_destinations(request: Request):
        """The transport (re)started: tell every known destination we are up."""
        await svc(request).sender.poke_all()
        return {}

    @app.get(c.DESTINATIONS, tags=["outbound"])
    async def destinations(request: Request):
        s = svc(request)
        names = await s.db.run(sf.known_destinations)
        out = {}
        for d in names:
            out[d] = {**await s.db.run(sf.get_backoff, d),
                      "queued": await s.db.run(sf.outbox_count, d)}
        return {"destinations": out, "max_in_flight_seen": s.sender.max_in_flight_seen}

    @app.post(c.SUBSCRIPTIONS, tags=["subscriptions"], response_model=c.Subscription)
    async def add_subscription(body: c.SubscriptionIn, request: Request):
        s = svc(request)
        pos = await s.db.run(store_edus.max_position)
        return await s.db.run(sf.add_subscription, body.url, body.room_id, body.types, pos)

    @app.get(c.SUBSCRIPTIONS, tags=["subscriptions"])
    async def list_subscriptions(request: Request):
        return {"subscriptions": await svc(request).db.run(sf.list_subscriptions)}

    @app.delete(c.SUBSCRIPTION, tags=["subscriptions"])
    async def delete_subscription(subscription_id: str, request: Request):
        await svc(request).db.run(sf.delete_subscription, subscription_id)
        return {}

    @app.put(c.SUBSCRIPTION_POSITION, tags=["subscriptions"])
    async def set_position(subscription_id: str, body: _Position, request: Request):
        if not -2**63 <= body.position < 2**63:
            raise MatrixError(400, "M_INVALID_PARAM", "position out of range")
        await svc(request).db.run(sf.set_subscription_position, subscription_id, body.position,
                                  body.owner)
        return {}

    @app.post(c.SUBSCRIPTION_LEASE, tags=["subscriptions"], response_model=c.LeaseResponse)
    async def lease(subscription_id: str, body: c.Lease, request: Request):
        return await svc(request).db.run(sf.lease_subscription, subscription_id, body.owner,
                                         body.ttl_s, time.time())

    app.include_router(edus_routes.router)
    app.include_router(admin_routes.router)
    app.include_router(rooms_routes.router)
    app.include_router(devices_routes.router)
    app.include_router(directory_routes.router)
    serve_lean(app, inbound, persist, get_events, stream)   # the per-event routes
    return app


from pydantic import BaseModel  # noqa: E402  (small request shapes used only here)


class _TransactionBody(BaseModel):
    origin: str | None = None
    origin_server_ts: int | None = None
    pdus: list[dict]
    edus: list[dict] = []


class _Edus(BaseModel):
    edus: list[dict]        # {destination, edu_type, content}


class _EventIds(BaseModel):
    event_ids: list[str]


class _Groups(BaseModel):
    groups: list[int]


class _ClientTxn(BaseModel):
    sender: str
    txn_id: str


class _Position(BaseModel):
    position: int
    owner: str | None = None
