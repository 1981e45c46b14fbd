"""The transport service: the public HTTPS federation API and every outbound request.

Inbound: X-Matrix verification, then `/send` goes to the transaction service and every
other federation request to the pdu service (the handlers the upper layers registered).
Outbound: the internal `/request` route signs and sends for the transaction service.
`create_app(settings)` builds a fresh app with no module-level state.

Invariants:
- Every federation request except keys and version is authenticated first, then, except
  /send, counted against its origin's rate limit (`ratelimit.py`: 429 M_LIMIT_EXCEEDED,
  nothing behind the transport sees a refused request). /send is bounded otherwise: one
  transaction in flight per origin (a second gets 429), each of at most 50 PDUs and 100
  EDUs, so its rate is our own processing rate; counting it too only throttled a busy
  peer sending small transactions (a peer at 350 transactions/s was refused every ~5 s).
- An authenticated request from a server tells the transaction service that server is up
  (its backoff ends and its queue is flushed at once): /send through the transaction
  service's inbound route, every other request through `destination_up`. Notifications
  are coalesced per origin (UP_NOTIFY_INTERVAL_S), except that a failed outbound request
  to a destination re-arms it at once, so a server we just started backing off from is
  never left waiting because it was seen a moment before.
"""
from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager

from fastapi import Query, Request
from starlette.responses import Response

from services.transport.inbound_auth import authenticate, raw_uri
from services.transport.keys import KeyStore, load_old_keys, our_key_response
from services.transport.outbound import FederationClient
from services.transport.ratelimit import RateLimiter
from services.transport.routes import queries as queries_routes
from services.transport.routes import user_keys as user_keys_routes
from services.transport.routes import wellknown
from shared.canonical import dumps
from shared.contracts import pdu as pdu_c
from shared.contracts import transport as c
from shared.contracts.transaction import TransactionClient
from shared.crypto import SigningKey
from shared.errors import MatrixError, json_response
from shared.internal import InternalClient
from shared.metrics import Metrics
from shared.routing import BodyLimitMiddleware, body_doc, new_app, read_json, serve_lean
from shared.settings import Settings

FED = "/_matrix/federation"
log = logging.getLogger("fedstack.transport.app")
UP_NOTIFY_INTERVAL_S = 10.0

# (method, public path, pdu sub-path) for the requests the pdu service answers.
FORWARDED = [
    ("GET", "/v1/event/{event_id}"),
    ("GET", "/v1/state/{room_id}"),
    ("GET", "/v1/state_ids/{room_id}"),
    ("GET", "/v1/backfill/{room_id}"),
    ("POST", "/v1/get_missing_events/{room_id}"),
    ("GET", "/v1/event_auth/{room_id}/{event_id}"),
    ("GET", "/v1/make_join/{room_id}/{user_id}"),
    ("PUT", "/v2/send_join/{room_id}/{event_id}"),
    ("PUT", "/v2/invite/{room_id}/{event_id}"),
    ("GET", "/v1/make_leave/{room_id}/{user_id}"),
    ("PUT", "/v2/send_leave/{room_id}/{event_id}"),
    ("GET", "/v1/make_knock/{room_id}/{user_id}"),
    ("PUT", "/v1/send_knock/{room_id}/{event_id}"),
    ("GET", "/v1/publicRooms"),
    ("POST", "/v1/publicRooms"),
    ("GET", "/v1/hierarchy/{room_id}"),
    ("GET", "/v1/timestamp_to_event/{room_id}"),
    ("PUT", "/v1/exchange_third_party_invite/{room_id}"),
]


class TransportService:
    def __init__(self, settings: Settings, *, transaction_client=None, pdu_client=None,
                 federation_transports=None, metrics: Metrics | None = None):
        self.settings = settings
        secret = settings.secret()
        self.key = SigningKey.load(settings.path("signing_key"))
        self.fed = FederationClient(settings, self.key, transports=federation_transports)
        metrics = metrics or Metrics("transport")
        self.m_requests = metrics.counter(
            "fedstack_federation_requests_total", "Inbound federation requests per origin and "
            "outcome (accepted, rate_limited; unauthorized ones under origin \"\")",
            ["origin", "outcome"])
        self.m_key_fetches = metrics.counter(
            "fedstack_key_fetches_total", "Fetches of remote servers' keys per outcome "
            "(found, none, failed)", ["outcome"])
        self.keys = KeyStore(self._fetch_keys)
        self.transaction = transaction_client or TransactionClient(settings.transaction_url, secret)
        self.pdu = pdu_client or InternalClient(settings.pdu_url, secret)
        self._last_up: dict[str, float] = {}
        self._announce: asyncio.Task | None = None
        self.limiter = RateLimiter(settings.federation_rate_per_s, settings.federation_rate_burst)

    def start(self) -> None:
        self._announce = asyncio.create_task(self._announce_started())

    async def _announce_started(self) -> None:
        """Once our public listener accepts connections, have the transaction service send
        each known peer a signed request: a peer that backed off from us while we were
        down (Synapse: 10 minutes and more) then resumes at once. Best effort."""
        host = self.settings.local_host
        for _ in range(100):
            try:
                _r, w = await asyncio.open_connection(host, self.settings.federation_port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        else:
            return   # no public listener here (in-process tests): nobody could reach us
        for _ in range(120):
            try:
                await self.transaction.poke_destinations()
                return
            except Exception:  # noqa: BLE001 - transaction service not up yet
                await asyncio.sleep(0.5)

    async def stop(self):
        if self._announce is not None:
            self._announce.cancel()
            await asyncio.gather(self._announce, return_exceptions=True)
        await self.fed.aclose()
        await self.transaction.aclose()
        await self.pdu.aclose()

    async def _fetch_keys(self, *args, **kwargs):
        try:
            found = await self.fed.fetch_server_keys(*args, **kwargs)
        except Exception:
            self.m_key_fetches.labels("failed").inc()
            raise
        self.m_key_fetches.labels("found" if found else "none").inc()
        return found

    async def authenticate(self, request: Request, content, *, rate_limited: bool = True) -> str:
        try:
            origin = await authenticate(request.scope, request.headers.items(), content,
                                        self.settings.server_name, self.keys)
        except MatrixError:
            self.m_requests.labels("", "unauthorized").inc()   # no origin label: unproven
            raise
        if rate_limited:
            try:
                self.limiter.check(origin)
            except MatrixError:
                self.m_requests.labels(origin, "rate_limited").inc()
                raise
        self.m_requests.labels(origin, "accepted").inc()
        return origin

    def outbound_failed(self, destination: str) -> None:
        """An outbound request failed: the next request from it must notify at once."""
        self._last_up.pop(destination, None)

    def origin_seen(self, origin: str) -> None:
        """Tell the transaction service (at most every few seconds) that origin is alive."""
        now = time.monotonic()
        if now - self._last_up.get(origin, 0) < UP_NOTIFY_INTERVAL_S:
            return
        self._last_up[origin] = now
        asyncio.create_task(self._notify_up(origin))

    async def _notify_up(self, origin: str) -> None:
        try:
            await self.transaction.destination_up(origin)
        except Exception:  # noqa: BLE001 - best effort
            pass


def _passthrough(status: int, body) -> Response:
    return Response(dumps(body if body is not None else {}), status_code=status,
                    media_type="application/json")


def create_app(settings: Settings, **clients):
    metrics = Metrics("transport")

    @asynccontextmanager
    async def lifespan(app):
        svc = TransportService(settings, metrics=metrics, **clients)
        app.state.svc = svc
        svc.start()
        try:
            yield
        finally:
            await svc.stop()

    app = new_app("fedstack-transport", settings.secret(), lifespan=lifespan, metrics=metrics)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)

    @app.get("/_matrix/key/v2/server", tags=["keys"])
    async def key_server(request: Request):
        s = request.app.state.svc
        return json_response(our_key_response(settings.server_name, s.key, settings.key_validity_s,
                                              load_old_keys(settings.data_dir)))

    @app.get(FED + "/v1/version", tags=["federation"])
    async def version():
        return {"server": {"name": "fedstack", "version": "0.1.0"}}

    @app.put(FED + "/v1/send/{txn_id:text}", tags=["federation"],
             openapi_extra=body_doc(_Transaction))
    async def send(txn_id: str, request: Request):
        s = request.app.state.svc
        if not txn_id:
            raise MatrixError(404, "M_UNRECOGNIZED", "Unrecognized request")
        body = await read_json(request)
        origin = await s.authenticate(request, body, rate_limited=False)
        log.info("transaction %s from %s", txn_id, origin)
        status, data = await s.transaction.inbound_transaction(origin, txn_id, body)
        return _passthrough(status, data)

    for method, sub in FORWARDED:
        _add_forward(app, method, sub)

    @app.post(c.REQUEST, tags=["internal"], response_model=c.FederationResponse)
    async def outbound(body: c.FederationRequest, request: Request):
        s = request.app.state.svc
        resp = await s.fed.request(body.destination, body.method, body.path, query=body.query,
                                   body=body.body, timeout_s=body.timeout_s)
        if not 200 <= resp["status"] < 300:
            s.outbound_failed(body.destination)
        return resp

    @app.get(c.KEYS, tags=["internal"], response_model=c.ServerKeys)
    async def keys(server_name: str, request: Request, key_id: list[str] = Query([]),
                   minimum_valid_until_ts: int = 0):
        """Verified keys of `server_name`, fetched again (rate-limited) if they lack one of
        `key_id` or are valid for less than `minimum_valid_until_ts`."""
        found = await request.app.state.svc.keys.get(server_name, key_id, minimum_valid_until_ts)
        if found is None:
            raise MatrixError(404, "M_NOT_FOUND", f"no keys for {server_name}")
        return found

    app.include_router(wellknown.router(settings))   # being found: our delegation
    app.include_router(user_keys_routes.router)
    app.include_router(queries_routes.router)
    serve_lean(app, send, outbound)   # the per-event routes
    return app


def _add_forward(app, method: str, sub: str) -> None:
    has_body = method in ("PUT", "POST")

    async def forward(request: Request):
        s = request.app.state.svc
        content = await read_json(request) if has_body else None
        origin = await s.authenticate(request, content)
        s.origin_seen(origin)
        path = raw_uri(request.scope)[len(FED):]
        status, data = await s.pdu.request(
            method, pdu_c.FEDERATION + path, content, headers={pdu_c.ORIGIN_HEADER: origin})
        return _passthrough(status, data)

    extra = body_doc(_AnyObject) if has_body else None
    app.add_api_route(FED + sub, forward, methods=[method], tags=["federation"],
                      openapi_extra=extra, name=f"{method.lower()}_{sub.strip('/').replace('/', '_')}")


from pydantic import BaseModel, ConfigDict  # noqa: E402


class _Transaction(BaseModel):
    origin: str
    origin_server_ts: int
    pdus: list[dict]
    edus: list[dict] = []


class _AnyObject(BaseModel):
    model_config = ConfigDict(extra="allow")
