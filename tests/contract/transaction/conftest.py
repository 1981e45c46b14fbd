"""The transaction service alone, on a fresh database of each engine (`database_url`: sqlite
in the data directory, and PostgreSQL; see tests/conftest.py); its neighbours are fakes.

- `fake_transport`: a fake transport app behind the real TransportClient. It answers the
  outbound `/request` route for `/send` transactions with the status `respond(...)` picks,
  records every attempt, and counts transactions in flight per destination.
- `fake_pdu`: a fake pdu app behind the real PduClient. It records the relayed inbox items
  and consumes them the way the pdu service must: by a persist naming their inbox ids.
"""
from __future__ import annotations

import asyncio
from collections import defaultdict
from urllib.parse import unquote

import httpx
import orjson
import pytest
from fastapi import Request
from pydantic import ValidationError

from services.transaction.app import create_app
from shared.contracts import pdu as pdu_c
from shared.contracts import transaction as c
from shared.contracts import transport as transport_c
from shared.contracts.pdu import PduClient
from shared.contracts.transport import TransportClient
from shared.errors import MatrixError
from tests.contract.helpers import SECRET, asgi_client, fake_internal_app, make_settings

SEND = "/_matrix/federation/v1/send/"


def marker(pdu: dict):
    """Outbound test events carry their event ID in content.eid (the wire has no event_id)."""
    return (pdu.get("content") or {}).get("eid")


class FakeTransport:
    def __init__(self):
        self.sends: list[dict] = []            # every /send attempt, in order
        self.edu_sends: list[dict] = []        # accepted /send with EDUs: {destination, edus}
        self.in_flight: dict[str, int] = defaultdict(int)
        self.max_in_flight: dict[str, int] = defaultdict(int)
        self.delay = 0.005                     # widens the window for overlapping sends
        self.bad_requests: list[str] = []
        # status for an attempt: 200 ok, 0 no answer, else an HTTP error status
        self.respond = lambda destination, txn_id, body: 200
        self.retry_after_ms = 30
        self.app = fake_internal_app("fake-transport")

        @self.app.post(transport_c.REQUEST)
        async def request(request: Request):
            try:
                req = transport_c.FederationRequest.model_validate(orjson.loads(await request.body()))
            except ValidationError as exc:
                self.bad_requests.append(str(exc))
                raise MatrixError(400, "M_BAD_JSON", str(exc))
            if req.method != "PUT" or not req.path.startswith(SEND):
                self.bad_requests.append(f"unexpected {req.method} {req.path}")
                return {"status": 0, "body": None, "error": "unexpected request"}
            dest, txn_id = req.destination, unquote(req.path[len(SEND):])
            self.in_flight[dest] += 1
            self.max_in_flight[dest] = max(self.max_in_flight[dest], self.in_flight[dest])
            try:
                await asyncio.sleep(self.delay)
                status = self.respond(dest, txn_id, req.body)
            finally:
                self.in_flight[dest] -= 1
            body = req.body or {}
            self.sends.append({"destination": dest, "txn_id": txn_id, "status": status,
                               "origin": body.get("origin"),
                               "event_ids": [marker(p) for p in body.get("pdus", [])],
                               "n_pdus": len(body.get("pdus", [])),
                               "n_edus": len(body.get("edus", []))})
            if status == 200 and body.get("edus"):
                self.edu_sends.append({"destination": dest, "edus": body["edus"]})
            if status == 0:
                return {"status": 0, "body": None, "error": "connection refused (fake)"}
            refusal = {"errcode": "M_UNKNOWN", "error": "fake refusal"}
            if status == 429:       # asks to wait: retry_after_ms in self.retry_after_ms
                refusal = {"errcode": "M_LIMIT_EXCEEDED", "error": "slow down",
                           "retry_after_ms": self.retry_after_ms}
            return {"status": status, "body": {"pdus": {}} if status == 200 else refusal,
                    "error": None}

        @self.app.get(transport_c.KEYS)
        async def keys(server_name: str):
            raise MatrixError(404, "M_NOT_FOUND", "no keys (fake)")

    def delivered(self, destination: str) -> list[str]:
        """Event IDs the destination acknowledged, in order."""
        return [e for s in self.sends if s["destination"] == destination and s["status"] == 200
                for e in s["event_ids"]]


class FakePdu:
    def __init__(self):
        self.items: list[dict] = []
        self.calls = 0
        self.fail_next = 0                     # answer 500 to this many relay calls
        self.service_app = None                # the transaction app, to consume the inbox
        self.bad_requests: list[str] = []
        self.room_servers: dict[str, list[str]] = {}   # room_id -> servers with joined members
        self.room_server_calls: list[str] = []
        self.app = fake_internal_app("fake-pdu")

        @self.app.get(pdu_c.ROOM_SERVERS)
        async def room_servers(room_id: str):
            self.room_server_calls.append(room_id)
            if self.fail_next:
                self.fail_next -= 1
                raise MatrixError(500, "M_UNKNOWN", "pdu is failing (fake)")
            if room_id not in self.room_servers:
                raise MatrixError(404, "M_NOT_FOUND", "unknown room")
            return {"servers": self.room_servers[room_id]}

        @self.app.post(pdu_c.INBOUND)
        async def inbound(request: Request):
            self.calls += 1
            try:
                batch = pdu_c.InboundBatch.model_validate(orjson.loads(await request.body()))
            except ValidationError as exc:
                self.bad_requests.append(str(exc))
                raise MatrixError(400, "M_BAD_JSON", str(exc))
            if self.fail_next:
                self.fail_next -= 1
                raise MatrixError(500, "M_UNKNOWN", "pdu is failing (fake)")
            self.items += [i.model_dump() for i in batch.items]
            async with asgi_client(self.service_app) as tx:
                resp = await tx.post(c.PERSIST, json={"inbox_ids": [i.inbox_id for i in batch.items]})
                assert resp.status_code == 200, resp.text
            return {}

    def pdus(self) -> list[dict]:
        return [i["pdu"] for i in self.items]


@pytest.fixture(autouse=True)
def _each_engine(db_engine):
    """Every test here runs on each database engine (`service_app` is looked up by name
    later, so its `database_url` would not make the test a parameter by itself)."""


@pytest.fixture
def fake_transport(inprocess):
    fake = FakeTransport()
    yield fake
    assert not fake.bad_requests, fake.bad_requests


@pytest.fixture
def fake_pdu(inprocess):
    fake = FakePdu()
    yield fake
    assert not fake.bad_requests, fake.bad_requests


def tx_settings(tmp_path, database_url: str = "", **overrides):
    return make_settings(tmp_path, **{"backoff_min_s": 0.02, "backoff_max_s": 0.1,
                                      "database_url": database_url, **overrides})


def build_transaction(settings, fake_transport, fake_pdu):
    app = create_app(
        settings,
        transport_client=TransportClient("http://transport", SECRET,
                                         transport=httpx.ASGITransport(app=fake_transport.app)),
        pdu_client=PduClient("http://pdu", SECRET, transport=httpx.ASGITransport(app=fake_pdu.app)))
    fake_pdu.service_app = app
    return app


@pytest.fixture
def service_app(data_dir, database_url, fake_transport, fake_pdu):
    settings = tx_settings(data_dir, database_url)
    return build_transaction(settings, fake_transport, fake_pdu), settings


# ---- helpers for the tests (HTTP only, so they also work against --base-url)

async def new_room(client, room_version: str = "10") -> str:
    from tests.contract.helpers import unique
    room_id = f"!{unique()}:remote.test"
    resp = await client.post(c.PERSIST, json={"rooms": [
        {"room_id": room_id, "room_version": room_version, "extremities": []}]})
    assert resp.status_code == 200, resp.text
    return room_id
