"""The transport service alone: its neighbours are fakes.

- `fake_transaction`: a fake transaction service app (inbound `/send`, destination up);
- `fake_pdu`: a fake pdu service app answering every forwarded federation request;
- `remote`: a fake remote homeserver ("remote.test") reached through
  `federation_transports`; "down.test" never answers.
"""
from __future__ import annotations

import httpx
import orjson
import pytest
from fastapi import Request
from starlette.responses import Response

from services.transport.app import create_app
from shared.contracts import pdu as pdu_c
from shared.contracts import transaction as tx_c
from shared.contracts.transaction import TransactionClient
from shared.internal import InternalClient
from tests.contract.helpers import (SECRET, DownTransport, FakeRemote, fake_internal_app,
                                    make_settings)

REMOTE = "remote.test"
MAX_BODY = 64 * 1024


class FakeTransaction:
    """Records inbound transactions; answers `answer` (status, body)."""

    def __init__(self):
        self.inbound: list[dict] = []
        self.up: list[str] = []
        self.answer: tuple[int, object] = (200, {"pdus": {}})
        self.app = fake_internal_app("fake-transaction")

        @self.app.put(tx_c.INBOUND_ROUTE)
        async def inbound(origin: str, txn_id: str, request: Request):
            self.inbound.append({"origin": origin, "txn_id": txn_id,
                                 "body": orjson.loads(await request.body())})
            status, body = self.answer
            return Response(orjson.dumps(body), status, media_type="application/json")

        @self.app.post(tx_c.DESTINATION_UP)
        async def up(destination: str):
            self.up.append(destination)
            return {}


class FakePdu:
    """Records every forwarded federation request (path after the pdu prefix, query,
    origin header, body); answers `answer`."""

    def __init__(self):
        self.requests: list[dict] = []
        self.answer: tuple[int, object] = (200, {"from": "fake-pdu"})
        self.app = fake_internal_app("fake-pdu")

        @self.app.api_route(pdu_c.FEDERATION + "/{path:path}", methods=["GET", "PUT", "POST"])
        async def forwarded(path: str, request: Request):
            raw = await request.body()
            self.requests.append({
                "method": request.method,
                "raw_path": request.scope["raw_path"].decode().split("?")[0],
                "query": request.scope["query_string"].decode(),
                "origin": request.headers.get(pdu_c.ORIGIN_HEADER),
                "origin_headers": request.headers.getlist(pdu_c.ORIGIN_HEADER),
                "body": orjson.loads(raw) if raw else None})
            status, body = self.answer
            return Response(orjson.dumps(body), status, media_type="application/json")


@pytest.fixture
def remote(inprocess):
    fake = FakeRemote(REMOTE)
    yield fake
    assert not fake.unexpected, f"the fake remote got unexpected requests: {fake.unexpected}"


@pytest.fixture
def fake_transaction(inprocess):
    return FakeTransaction()


@pytest.fixture
def fake_pdu(inprocess):
    return FakePdu()


def build_transport(settings, fake_transaction, fake_pdu, remote):
    asgi = httpx.ASGITransport
    return create_app(
        settings,
        transaction_client=TransactionClient("http://tx", SECRET, transport=asgi(app=fake_transaction.app)),
        pdu_client=InternalClient("http://pdu", SECRET, transport=asgi(app=fake_pdu.app)),
        federation_transports={REMOTE: asgi(app=remote.app), "down.test": DownTransport()})


@pytest.fixture
def service_app(tmp_path, fake_transaction, fake_pdu, remote):
    settings = make_settings(tmp_path, max_body_bytes=MAX_BODY)
    return build_transport(settings, fake_transaction, fake_pdu, remote), settings
