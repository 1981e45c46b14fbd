"""Test harness: whole homeservers in one process (apps wired by httpx ASGI transports),
and a callback receiver that records what subscriptions deliver.

Each homeserver runs the four real apps with their lifespans; only the network between
them is replaced. Federation between homeservers goes through the real transport apps
(X-Matrix signing and verification included).
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from starlette.responses import Response

from fedstack.cli import prepare_data_dir
from services.messaging.app import create_app as messaging_app
from services.pdu.app import create_app as pdu_app
from services.transaction.app import create_app as transaction_app
from services.transport.app import create_app as transport_app
from shared.contracts.messaging import MessagingClient
from shared.contracts.pdu import PduClient
from shared.contracts.transaction import TransactionClient
from shared.contracts.transport import TransportClient
from shared.internal import InternalClient
from shared.settings import Settings


class Receiver:
    """Collects callback bodies; `events(sid)` lists delivered events in arrival order."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.fail_next = 0
        self.app = FastAPI()

        @self.app.post("/callback")
        async def callback(request: Request):
            body = await request.json()
            if self.fail_next > 0:
                self.fail_next -= 1
                return Response(status_code=500)
            self.bodies.append(body)
            return {}

    def events(self, subscription_id: str | None = None) -> list[dict]:
        return [e for b in self.bodies if subscription_id in (None, b["subscription_id"])
                for e in b["events"]]

    async def wait_for(self, predicate, timeout: float = 20.0, subscription_id=None) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            evs = self.events(subscription_id)
            if predicate(evs):
                return evs
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out; have {len(self.events(subscription_id))} events")


class Link(httpx.AsyncBaseTransport):
    """The network path to one homeserver: can be taken down, and records the /send
    transactions that cross it (size, and how many were in flight at once)."""

    def __init__(self, inner: httpx.AsyncBaseTransport):
        self.inner = inner
        self.down = False
        self.blocked_origins: set[str] = set()   # a partition: these servers can't reach us
        self.in_flight = 0
        self.max_in_flight = 0
        self.sends: list[tuple[str, int]] = []   # (txn path, number of PDUs)

    @staticmethod
    def _origin(request: httpx.Request) -> str | None:
        auth = request.headers.get("authorization", "")
        if 'origin="' in auth:
            return auth.split('origin="', 1)[1].split('"', 1)[0]
        return None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down or self._origin(request) in self.blocked_origins:
            raise httpx.ConnectError("link down", request=request)
        is_send = "/federation/v1/send/" in request.url.path
        if is_send:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            resp = await self.inner.handle_async_request(request)
            if is_send and resp.status_code == 200:
                import orjson
                self.sends.append((request.url.path, len(orjson.loads(request.content)["pdus"])))
            return resp
        finally:
            if is_send:
                self.in_flight -= 1


def partition(*groups: list["InProcessHomeserver"]) -> None:
    """Cut every link between servers of different groups (and heal links within one)."""
    for g in groups:
        for hs in g:
            hs.link.blocked_origins = {o.server_name for other in groups if other is not g for o in other}


def heal(*servers: "InProcessHomeserver") -> None:
    for hs in servers:
        hs.link.blocked_origins = set()


def database_for(data_dir: Path) -> str:
    """The database_url of a homeserver in `data_dir` ("": its own sqlite file). The e2e
    tests replace it for each database engine (tests/e2e/conftest.py)."""
    return ""


class InProcessHomeserver:
    def __init__(self, server_name: str, data_dir: Path, network: dict, receiver: Receiver, **extra):
        extra.setdefault("database_url", database_for(data_dir))
        self.server_name = server_name
        self.settings = Settings(server_name=server_name, data_dir=str(data_dir),
                                 allow_private_destinations=True, verify_tls=False,
                                 backoff_min_s=0.05, backoff_max_s=0.5, **extra)
        prepare_data_dir(self.settings)
        self.network = network          # server_name -> ASGI transport of its transport app
        self.receiver = receiver
        self._stack = contextlib.AsyncExitStack()

    async def start(self) -> None:
        s, secret = self.settings, self.settings.secret()
        asgi = httpx.ASGITransport
        self.tx_app = transaction_app(s, transport_client=_Lazy(lambda: TransportClient("http://transport", secret, transport=asgi(self.transport_app))),
                                      pdu_client=_Lazy(lambda: PduClient("http://pdu", secret, transport=asgi(self.pdu_app))))
        self.pdu_app = pdu_app(s, transaction_client=TransactionClient("http://tx", secret, transport=asgi(self.tx_app)))
        self.transport_app = transport_app(
            s, transaction_client=TransactionClient("http://tx", secret, transport=asgi(self.tx_app)),
            pdu_client=InternalClient("http://pdu", secret, transport=asgi(self.pdu_app)),
            federation_transports=self.network)
        self.messaging_app = messaging_app(
            s, pdu_client=PduClient("http://pdu", secret, transport=asgi(self.pdu_app)),
            transport_client=InternalClient("http://transport", secret, transport=asgi(self.transport_app)),
            transaction_client=TransactionClient("http://tx", secret, transport=asgi(self.tx_app)),
            callback_http=httpx.AsyncClient(transport=asgi(self.receiver.app), base_url="http://cb"))
        self.link = Link(asgi(self.transport_app))
        self.network[self.server_name] = self.link
        for app in (self.transport_app, self.tx_app, self.pdu_app, self.messaging_app):
            await self._stack.enter_async_context(app.router.lifespan_context(app))
        self.api = MessagingClient("http://messaging", token=s.token(), transport=asgi(self.messaging_app))
        self.tx = TransactionClient("http://tx", secret, transport=asgi(self.tx_app))

    async def stop(self) -> None:
        await self.api.aclose()
        await self.tx.aclose()
        await self._stack.aclose()

    def user(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"


class _Lazy:
    """A client created on first use (the apps it talks to are built after it)."""

    def __init__(self, factory):
        self._factory = factory
        self._obj = None

    def __getattr__(self, name):
        if self._obj is None:
            self._obj = self._factory()
        return getattr(self._obj, name)

    async def aclose(self):
        if self._obj is not None:
            await self._obj.aclose()
