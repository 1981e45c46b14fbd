"""The pdu service alone. Its one neighbour, the transaction service, is played by the
REAL transaction app on a temporary database (simpler and more faithful than an in-memory
copy of its storage semantics, and it follows that contract as it grows). The pdu talks
to it through `RecordingTransactionClient`, which checks every persist request against the
contract models and records it. The transaction app's own neighbour is a fake transport:

- `fake_transport.sends`: the `/send` transactions our events went out in;
- `fake_transport.keys`: the server keys it "fetched" (remote.test's by default);
- `fake_transport.remote`: an async handler answering every other federation request.
"""
from __future__ import annotations

import copy
from urllib.parse import unquote

import httpx
import orjson
import pytest
from fastapi import Request

from services.pdu.app import create_app
from services.transaction.app import create_app as transaction_app
from shared.contracts import transaction as tx_c
from shared.contracts import transport as transport_c
from shared.contracts.pdu import PduClient
from shared.contracts.transaction import TransactionClient
from shared.contracts.transport import TransportClient
from shared.crypto import SigningKey
from shared.errors import MatrixError
from tests.contract.helpers import SECRET, fake_internal_app, make_settings

REMOTE = "remote.test"
SEND = "/_matrix/federation/v1/send/"


def shape_errors(req: dict) -> list[str]:
    """Ways `req` departs from PersistRequest: invalid, or keys the contract lacks."""
    try:
        tx_c.PersistRequest.model_validate(req)
    except Exception as exc:  # noqa: BLE001
        return [str(exc)]
    errors = [f"unknown key {k}" for k in set(req) - set(tx_c.PersistRequest.model_fields)]
    for ev in req.get("events", []):
        errors += [f"unknown event key {k}" for k in set(ev) - set(tx_c.PersistEvent.model_fields)]
    for room in req.get("rooms", []):
        errors += [f"unknown room key {k}" for k in set(room) - set(tx_c.PersistRoom.model_fields)]
    return errors


class RecordingTransactionClient(TransactionClient):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.persists: list[dict] = []
        self.errors: list[str] = []

    async def persist(self, request: dict) -> dict:
        self.errors += shape_errors(request)
        self.persists.append(copy.deepcopy(request))
        return await super().persist(request)

    def persisted_events(self) -> dict[str, dict]:
        return {e["event_id"]: e for p in self.persists for e in p.get("events", [])}


class FakeTransport:
    def __init__(self):
        self.remote_key = SigningKey.generate("remote")
        self.keys = {REMOTE: {"server_name": REMOTE,
                              "verify_keys": {self.remote_key.key_id: self.remote_key.public_key_base64},
                              "old_verify_keys": {}, "valid_until_ts": 2**52}}
        self.sends: list[dict] = []
        self.requests: list[dict] = []
        self.remote = None                     # async (method, path, query, body) -> (status, body)
        self.app = fake_internal_app("fake-transport")

        @self.app.post(transport_c.REQUEST)
        async def request(request: Request):
            req = transport_c.FederationRequest.model_validate(orjson.loads(await request.body()))
            if req.method == "PUT" and req.path.startswith(SEND):
                self.sends.append({"destination": req.destination,
                                   "txn_id": unquote(req.path[len(SEND):]), "body": req.body})
                return {"status": 200, "body": {"pdus": {}}, "error": None}
            self.requests.append(req.model_dump())
            if self.remote is None:
                return {"status": 0, "body": None, "error": "no fake remote scripted"}
            status, body = await self.remote(req.method, req.path, req.query, req.body)
            return {"status": status, "body": body, "error": None}

        @self.app.get(transport_c.KEYS)
        async def keys(server_name: str):
            if server_name not in self.keys:
                raise MatrixError(404, "M_NOT_FOUND", "no keys")
            return self.keys[server_name]

    def sent_event_ids(self, destination: str, rv) -> list[str]:
        from shared.events import compute_event_id
        return [compute_event_id(p, rv) for s in self.sends if s["destination"] == destination
                for p in s["body"]["pdus"]]


@pytest.fixture
def fake_transport(inprocess):
    return FakeTransport()


@pytest.fixture
async def tx_backend(data_dir, fake_transport, inprocess):
    """The real transaction app (lifespan running) and a recording client for the pdu."""
    settings = make_settings(data_dir, backoff_min_s=0.02, backoff_max_s=0.1)
    holder = {}
    app = transaction_app(
        settings,
        transport_client=TransportClient("http://transport", SECRET,
                                         transport=httpx.ASGITransport(app=fake_transport.app)),
        pdu_client=_LazyPdu(holder))
    async with app.router.lifespan_context(app):
        client = RecordingTransactionClient("http://tx", SECRET, transport=httpx.ASGITransport(app=app))
        holder["tx"] = app
        yield settings, client, holder
        assert not client.errors, f"persist requests off the contract: {client.errors}"


class _LazyPdu(PduClient):
    """The transaction app's relay reaches the pdu app under test (built after it)."""

    def __init__(self, holder):
        self.holder = holder
        self._client = None

    def _get(self):
        if self._client is None:
            self._client = PduClient("http://pdu", SECRET, transport=httpx.ASGITransport(app=self.holder["pdu"]))
        return self._client

    async def inbound(self, items):
        return await self._get().inbound(items)

    async def aclose(self):
        if self._client is not None:
            await self._client.aclose()


@pytest.fixture
def recorder(tx_backend) -> RecordingTransactionClient:
    return tx_backend[1]


@pytest.fixture
async def other_writer(tx_backend):
    """Another client of the same transaction service (say, a second pdu replica); unrecorded."""
    client = TransactionClient("http://tx", SECRET, transport=httpx.ASGITransport(app=tx_backend[2]["tx"]))
    yield client
    await client.aclose()


@pytest.fixture
def service_app(tx_backend):
    settings, client, holder = tx_backend
    app = create_app(settings, transaction_client=client)
    holder["pdu"] = app
    return app, settings
