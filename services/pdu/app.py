"""The pdu service: events, rooms and state. Stateless apart from caches of immutable data.

`create_app(settings)` builds a fresh app with no module-level state; storage goes through
the transaction service.
"""
from __future__ import annotations

import time
from contextlib import asynccontextmanager

from fastapi import Query, Request

from services.pdu.acl import RoomAcls
from services.pdu.backfill import Backfiller
from services.pdu.federation import FederationHandler
from services.pdu.inbound import InboundHandler
from services.pdu.keyring import Keyring
from services.pdu.membership import MembershipHandler
from services.pdu.rooms import RoomHandler
from services.pdu.routes import admin as admin_routes
from services.pdu.routes import directory as directory_routes
from services.pdu.routes import hierarchy as hierarchy_routes
from services.pdu.routes import knock as knock_routes
from services.pdu.routes import servers as servers_routes
from shared.metrics import Metrics
from services.pdu.storage import Storage
from shared.contracts import pdu as c
from shared.contracts.transaction import TransactionClient
from shared.crypto import SigningKey
from shared.errors import MatrixError, json_response
from shared.routing import body_doc, new_app, read_json, serve_lean
from shared.server_keys import load_old_verify_keys
from shared.settings import Settings

F = c.FEDERATION


def now_ms() -> int:
    return int(time.time() * 1000)


class PduService:
    def __init__(self, settings: Settings, *, transaction_client=None,
                 metrics: Metrics | None = None):
        self.settings = settings
        name = settings.server_name
        key = SigningKey.load(settings.path("signing_key"))
        self.tx = transaction_client or TransactionClient(settings.transaction_url, settings.secret())
        self.storage = Storage(self.tx)
        self.storage.metrics = metrics or Metrics("pdu")   # what the pdu modules count in
        self.acls = RoomAcls(self.storage)
        self.keyring = Keyring(self.tx, name, key, load_old_verify_keys(settings.data_dir))
        self.rooms = RoomHandler(self.storage, self.tx, name, key, acls=self.acls)
        self.inbound = InboundHandler(self.storage, self.tx, self.keyring, self.rooms, name,
                                      acls=self.acls)
        self.federation = FederationHandler(self.storage, self.tx, self.rooms, self.inbound, name,
                                            key, now_ms, acls=self.acls)
        self.membership = MembershipHandler(self.storage, self.tx, self.rooms, self.keyring, name, key)
        self.backfiller = Backfiller(self.storage, self.tx, self.keyring, name, acls=self.acls)


def create_app(settings: Settings, **clients):
    metrics = Metrics("pdu")

    @asynccontextmanager
    async def lifespan(app):
        svc = PduService(settings, metrics=metrics, **clients)
        app.state.svc = svc
        try:
            yield
        finally:
            await svc.tx.aclose()

    app = new_app("fedstack-pdu", settings.secret(), lifespan=lifespan, metrics=metrics)

    def svc(request: Request) -> PduService:
        return request.app.state.svc

    def origin(request: Request) -> str:
        o = request.headers.get(c.ORIGIN_HEADER)
        if not o:
            raise MatrixError(401, "M_UNAUTHORIZED", "no authenticated origin")
        return o

    @app.post(c.INBOUND, tags=["inbound"], openapi_extra=body_doc(c.InboundBatch))
    async def inbound(request: Request):
        body = await read_json(request)
        await svc(request).inbound.handle_batch(body.get("items", []))
        return json_response({})

    @app.post(c.ROOMS, tags=["rooms"], response_model=c.RoomIdResponse)
    async def create_room(body: c.CreateRoom, request: Request):
        rid = await svc(request).rooms.create_room(body.creator, body.room_version, body.preset, body.name,
                                                   body.room_type)
        return {"room_id": rid}

    @app.post(c.SEND, tags=["rooms"], response_model=c.EventIdResponse)
    async def send(room_id: str, body: c.SendEvent, request: Request):
        eid = await svc(request).rooms.send(room_id, body.sender, body.type, body.content,
                                            body.state_key, body.txn_id)
        return {"event_id": eid}

    @app.post(c.SEND_BATCH, tags=["rooms"], response_model=c.SendBatchResponse)
    async def send_batch(room_id: str, body: c.SendBatch, request: Request):
        results = await svc(request).rooms.send_batch(room_id, [e.model_dump() for e in body.events])
        return json_response({"results": [
            {"event_id": r} if isinstance(r, str) else {"errcode": r.errcode, "error": r.error}
            for r in results]})

    @app.post(c.JOIN, tags=["rooms"], response_model=c.EventIdResponse)
    async def join(room_id: str, body: c.Join, request: Request):
        return {"event_id": await svc(request).membership.join(room_id, body.user_id, body.servers)}

    @app.post(c.INVITE, tags=["rooms"], response_model=c.EventIdResponse)
    async def invite(room_id: str, body: c.Invite, request: Request):
        return {"event_id": await svc(request).membership.invite(room_id, body.sender, body.user_id)}

    @app.post(c.LEAVE, tags=["rooms"], response_model=c.EventIdResponse)
    async def leave(room_id: str, body: c.Leave, request: Request):
        return {"event_id": await svc(request).membership.leave(room_id, body.user_id)}

    @app.get(c.STATE, tags=["rooms"], response_model=c.StateResponse)
    async def state(room_id: str, request: Request):
        s = svc(request)
        room = await s.storage.room(room_id)
        if room is None or room["current_state_group"] is None:
            raise MatrixError(404, "M_NOT_FOUND", "unknown room")
        st = await s.storage.state_events(await s.storage.state_map(room["current_state_group"]))
        return json_response({"room_id": room_id, "room_version": room["room_version"],
                              "state": sorted(st.values(), key=lambda e: (e["type"], e["state_key"]))})

    @app.post(c.BACKFILL, tags=["rooms"], response_model=c.BackfillResponse)
    async def backfill(room_id: str, body: c.Backfill, request: Request):
        return json_response(await svc(request).backfiller.backfill(room_id, body.from_, body.limit))

    # -- federation requests forwarded by transport (origin already verified) ------------
    @app.get(F + "/v1/event/{event_id}", tags=["federation"])
    async def fed_event(event_id: str, request: Request):
        return json_response(await svc(request).federation.get_event(origin(request), event_id))

    @app.get(F + "/v1/state_ids/{room_id}", tags=["federation"])
    async def fed_state_ids(room_id: str, request: Request, event_id: str = ""):
        return json_response(await svc(request).federation.state_ids(origin(request), room_id, event_id, False))

    @app.get(F + "/v1/state/{room_id}", tags=["federation"])
    async def fed_state(room_id: str, request: Request, event_id: str = ""):
        return json_response(await svc(request).federation.state_ids(origin(request), room_id, event_id, True))

    @app.get(F + "/v1/event_auth/{room_id}/{event_id}", tags=["federation"])
    async def fed_event_auth(room_id: str, event_id: str, request: Request):
        return json_response(await svc(request).federation.event_auth(origin(request), room_id, event_id))

    @app.get(F + "/v1/backfill/{room_id}", tags=["federation"])
    async def fed_backfill(room_id: str, request: Request, v: list[str] = Query(...),
                           limit: int = Query(..., ge=0)):
        return json_response(await svc(request).federation.backfill(origin(request), room_id, v, limit))

    @app.post(F + "/v1/get_missing_events/{room_id}", tags=["federation"])
    async def fed_gme(room_id: str, request: Request):
        body = await read_json(request)
        return json_response(await svc(request).federation.get_missing_events(origin(request), room_id, body))

    @app.get(F + "/v1/make_join/{room_id}/{user_id}", tags=["federation"])
    async def fed_make_join(room_id: str, user_id: str, request: Request,
                            ver: list[str] = Query(["1"])):
        return json_response(await svc(request).federation.make_membership(
            origin(request), room_id, user_id, "join", ver))

    @app.get(F + "/v1/make_leave/{room_id}/{user_id}", tags=["federation"])
    async def fed_make_leave(room_id: str, user_id: str, request: Request):
        return json_response(await svc(request).federation.make_membership(
            origin(request), room_id, user_id, "leave", None))

    @app.put(F + "/v2/send_join/{room_id}/{event_id}", tags=["federation"])
    async def fed_send_join(room_id: str, event_id: str, request: Request):
        body = await read_json(request)
        return json_response(await svc(request).federation.send_membership(
            origin(request), room_id, event_id, body, "join"))

    @app.put(F + "/v2/send_leave/{room_id}/{event_id}", tags=["federation"])
    async def fed_send_leave(room_id: str, event_id: str, request: Request):
        body = await read_json(request)
        return json_response(await svc(request).federation.send_membership(
            origin(request), room_id, event_id, body, "leave"))

    @app.put(F + "/v2/invite/{room_id}/{event_id}", tags=["federation"])
    async def fed_invite(room_id: str, event_id: str, request: Request):
        body = await read_json(request)
        return json_response(await svc(request).federation.invite(origin(request), room_id, event_id, body))

    @app.put(F + "/v1/exchange_third_party_invite/{room_id}", tags=["federation"])
    async def fed_exchange_third_party_invite(room_id: str, request: Request):
        body = await read_json(request)
        return json_response(await svc(request).membership.exchange_third_party_invite(
            origin(request), room_id, body))

    app.include_router(servers_routes.router)
    app.include_router(knock_routes.router)
    app.include_router(directory_routes.router)
    app.include_router(hierarchy_routes.router)
    app.include_router(admin_routes.router)
    serve_lean(app, inbound, send, send_batch)   # the per-event routes
    return app
