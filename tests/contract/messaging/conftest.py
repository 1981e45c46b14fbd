"""The messaging service alone; its neighbours are fake apps behind the real typed clients.

- `fake_pdu`: answers the pdu contract routes, validating each body against the contract
  model (unknown keys included) and recording (route, room_id, body);
- `fake_tx`: the transaction service's stream (with long polling), subscriptions,
  positions and leases, in memory; `append(room_id, events)` adds live events;
- `receiver`: the subscriber's callback URL; `fail_next` answers that many POSTs 500.
A shared `log` records, in order, callback attempts and position saves.
"""
from __future__ import annotations

import asyncio
import uuid

import httpx
import orjson
import pytest
from fastapi import FastAPI, Request
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from services.messaging.app import create_app
from shared.contracts import devices as dev_c
from shared.contracts import pdu as pdu_c
from shared.contracts import transaction as tx_c
from shared.contracts.pdu import PduClient
from shared.contracts.transaction import TransactionClient
from shared.errors import MatrixError
from tests.contract.helpers import SECRET, fake_internal_app, make_settings

PDU_ROUTES = {   # name: (method, path, request model or None)
    "create_room": ("POST", pdu_c.ROOMS, pdu_c.CreateRoom),
    "send": ("POST", pdu_c.SEND, pdu_c.SendEvent),
    "send_batch": ("POST", pdu_c.SEND_BATCH, pdu_c.SendBatch),
    "join": ("POST", pdu_c.JOIN, pdu_c.Join),
    "invite": ("POST", pdu_c.INVITE, pdu_c.Invite),
    "leave": ("POST", pdu_c.LEAVE, pdu_c.Leave),
    "knock": ("POST", pdu_c.KNOCK, pdu_c.Knock),
    "state": ("GET", pdu_c.STATE, None),
    "backfill": ("POST", pdu_c.BACKFILL, pdu_c.Backfill),
}


def contract_errors(model: type[BaseModel], body) -> list[str]:
    try:
        model.model_validate(body)
    except ValidationError as exc:
        return [str(exc)]
    names = {f.alias or n for n, f in model.model_fields.items()}
    return [f"unknown key {k!r} for {model.__name__}" for k in set(body) - names]


class FakePdu:
    def __init__(self):
        self.calls: list[tuple[str, str | None, object]] = []
        self.answers: list[dict] = []
        self.errors: list[str] = []
        self.fail: tuple[int, dict] | None = None
        self.app = fake_internal_app("fake-pdu")
        for name, (method, path, model) in PDU_ROUTES.items():
            self._route(name, method, path, model)
        self.servers: dict[str, list[str]] = {}        # room_id -> servers with joined members
        self.joined: set[tuple[str, str]] = set()      # (room_id, user_id)
        self.user_servers_of: dict[str, list[str]] = {}

        @self.app.get(pdu_c.ROOM_SERVERS)
        async def room_servers(room_id: str, user_id: str | None = None):
            self.calls.append(("room_servers", room_id, user_id))
            if room_id not in self.servers:
                raise MatrixError(404, "M_NOT_FOUND", "unknown room")
            out = {"servers": self.servers[room_id]}
            if user_id is not None:
                out["user_joined"] = (room_id, user_id) in self.joined
            return out

        @self.app.get(pdu_c.USER_SERVERS)
        async def user_servers(user_id: str):
            self.calls.append(("user_servers", None, user_id))
            return {"servers": self.user_servers_of.get(user_id, [])}

    def answer(self, name: str, room_id: str | None) -> dict:
        if name == "create_room":
            return {"room_id": "!created:hs.test"}
        if name == "state":
            return {"room_id": room_id, "room_version": "12", "state": [{"type": "m.room.create"}]}
        if name == "send_batch":
            return {"results": [{"event_id": "$b1", "errcode": None, "error": None},
                                {"event_id": None, "errcode": "M_FORBIDDEN", "error": "no"}]}
        if name == "backfill":
            return {"events": [{"event_id": "$old", "type": "m.room.message"}], "next": None}
        return {"event_id": f"${name}-{len(self.calls)}"}

    def _route(self, name, method, path, model):
        async def handler(request: Request):
            room_id = request.path_params.get("room_id")
            body = orjson.loads(await request.body()) if method == "POST" else None
            if model is not None:
                self.errors += contract_errors(model, body)
            self.calls.append((name, room_id, body))
            if self.fail:
                raise MatrixError(self.fail[0], self.fail[1]["errcode"], self.fail[1]["error"])
            self.answers.append(self.answer(name, room_id))
            return self.answers[-1]
        self.app.add_api_route(path, handler, methods=[method], name=name)


class FakeTransaction:
    def __init__(self, log: list):
        self.log = log
        self.stream_events: list[dict] = []          # {"position", "room_id", "event"}
        self.stream_edus: list[dict] = []            # {"position", "room_id", "edu"}
        self.subs: dict[str, dict] = {}
        self.stream_calls: list[dict] = []
        self.lease_holder: str | None = None           # another replica holds every lease
        self.queued_edus: list[dict] = []              # {destination, edu_type, content}
        self._new = asyncio.Event()
        self.app = fake_internal_app("fake-transaction")
        app = self.app

        self.device_calls: list[tuple[str, dict, object]] = []   # (route name, path params, body)
        self.device_answers: dict[str, tuple[int, object]] = {}
        self.federation: dict[str, dict] = {}         # destination -> FederationResponse
        self.federation_calls: list[dict] = []

        def device_route(name, method, path):
            async def handler(request: Request):
                raw = await request.body()
                body = orjson.loads(raw) if raw else None
                self.device_calls.append((name, dict(request.path_params), body))
                status, answer = self.device_answers.get(name, (200, {}))
                return Response(orjson.dumps(answer), status, media_type="application/json")
            app.add_api_route(path, handler, methods=[method], name=f"fake_{name}")
        for name, method, path in (("put_device", "PUT", dev_c.DEVICE),
                                   ("delete_device", "DELETE", dev_c.DEVICE),
                                   ("cross_signing", "PUT", dev_c.CROSS_SIGNING),
                                   ("one_time_keys", "POST", dev_c.ONE_TIME_KEYS),
                                   ("keys_query", "POST", dev_c.KEYS_QUERY),
                                   ("keys_claim", "POST", dev_c.KEYS_CLAIM)):
            device_route(name, method, path)

        @app.post(tx_c.FEDERATION_REQUEST)
        async def federation_request(request: Request):
            body = orjson.loads(await request.body())
            self.federation_calls.append(body)
            return self.federation.get(body["destination"],
                                       {"status": 0, "body": None, "error": "unreachable (fake)"})

        @app.post(tx_c.EDUS)
        async def queue_edus(request: Request):
            body = orjson.loads(await request.body())
            for e in body["edus"]:
                assert set(e) == {"destination", "edu_type", "content"}, e
            self.queued_edus += body["edus"]
            return {}

        @app.get(tx_c.STREAM)
        async def stream(after: int = 0, limit: int = 100, room_id: str | None = None, timeout_ms: int = 0,
                         subscription_id: str | None = None, owner: str | None = None,
                         edus: bool = False):
            self.stream_calls.append({"after": after, "limit": limit, "room_id": room_id,
                                      **({"edus": True} if edus else {})})
            if subscription_id is not None:     # save the position first (the contract)
                self.save_position(subscription_id, after, owner)
            deadline = asyncio.get_running_loop().time() + timeout_ms / 1000
            while True:
                evs = [e for e in self.stream_events if e["position"] > after
                       and room_id in (None, e["room_id"])][:limit]
                eds = [e for e in self.stream_edus if edus and e["position"] > after
                       and room_id in (None, e["room_id"])][:limit]
                remaining = deadline - asyncio.get_running_loop().time()
                if evs or eds or remaining <= 0:
                    break
                self._new.clear()
                try:
                    await asyncio.wait_for(self._new.wait(), remaining)
                except asyncio.TimeoutError:
                    pass
            out = [{"position": e["position"], "event": e["event"]} for e in evs]
            out_edus = [{"position": e["position"], "edu": e["edu"]} for e in eds]
            last = max([e["position"] for e in evs + eds], default=after)
            page = {"events": out, "next": last}
            if edus:
                page["edus"] = out_edus
            return page

        @app.post(tx_c.SUBSCRIPTIONS)
        async def add(body: tx_c.SubscriptionIn):
            sid = uuid.uuid4().hex
            self.subs[sid] = {**body.model_dump(), "subscription_id": sid, "position": self.max_position(),
                              "owner": None, "hs_token": "hs-" + sid}
            return self.public(sid)

        @app.get(tx_c.SUBSCRIPTIONS)
        async def list_():
            return {"subscriptions": [self.public(s) for s in self.subs]}

        @app.delete(tx_c.SUBSCRIPTION)
        async def delete(subscription_id: str):
            self._sub(subscription_id)
            del self.subs[subscription_id]
            return {}

        @app.put(tx_c.SUBSCRIPTION_POSITION)
        async def position(subscription_id: str, request: Request):
            body = orjson.loads(await request.body())
            self.save_position(subscription_id, body["position"], body.get("owner"))
            return {}

        @app.post(tx_c.SUBSCRIPTION_LEASE)
        async def lease(subscription_id: str, body: tx_c.Lease):
            sub = self._sub(subscription_id)
            granted = self.lease_holder in (None, body.owner)
            if granted:
                sub["owner"] = body.owner
            return {"granted": granted, "position": sub["position"]}

    def _sub(self, sid: str) -> dict:
        if sid not in self.subs:
            raise MatrixError(404, "M_NOT_FOUND", "unknown subscription")
        return self.subs[sid]

    def public(self, sid: str) -> dict:
        return {k: v for k, v in self.subs[sid].items() if k != "owner"}

    def save_position(self, subscription_id: str, position: int, owner: str | None) -> None:
        sub = self._sub(subscription_id)
        if owner is not None and owner != sub["owner"]:
            raise MatrixError(409, "M_UNKNOWN", "leased by another deliverer")
        sub["position"] = max(sub["position"], position)
        self.log.append(("position", subscription_id, position))

    def max_position(self) -> int:
        return max((e["position"] for e in self.stream_events + self.stream_edus), default=0)

    def append_edus(self, room_id: str | None, edus: list[dict]) -> list[int]:
        """Received EDUs ({edu_type, origin, content}) at the next positions."""
        positions = []
        for edu in edus:
            pos = self.max_position() + 1
            self.stream_edus.append({"position": pos, "room_id": room_id, "edu": edu})
            positions.append(pos)
        self._new.set()
        return positions

    def append(self, room_id: str, events: list[dict]) -> list[int]:
        positions = []
        for ev in events:
            pos = self.max_position() + 1
            self.stream_events.append({"position": pos, "room_id": room_id,
                                       "event": dict(ev, room_id=room_id)})
            positions.append(pos)
        self._new.set()
        return positions


class Receiver:
    def __init__(self, log: list):
        self.log = log
        self.attempts: list[tuple[bytes, int]] = []    # every POST, raw body and our status
        self.headers: list[dict] = []                   # and its headers
        self.fail_next = 0
        self.app = FastAPI()

        @self.app.post("/hook")
        async def hook(request: Request):
            raw = await request.body()
            status = 500 if self.fail_next else 200
            self.fail_next = max(0, self.fail_next - 1)
            self.attempts.append((raw, status))
            self.headers.append(dict(request.headers))
            self.log.append(("callback", status))
            return Response(b"{}" if status == 200 else b"nope", status)

    def accepted(self) -> list[dict]:
        return [orjson.loads(raw) for raw, status in self.attempts if status == 200]

    def events(self) -> list[dict]:
        return [e for body in self.accepted() for e in body["events"]]


@pytest.fixture
def log(inprocess) -> list:
    return []


@pytest.fixture
def fake_pdu(inprocess):
    fake = FakePdu()
    yield fake
    assert not fake.errors, f"messaging called pdu off the contract: {fake.errors}"


@pytest.fixture
def fake_tx(log):
    return FakeTransaction(log)


@pytest.fixture
def receiver(log):
    return Receiver(log)


def build_messaging(settings, fake_pdu, fake_tx, receiver):
    asgi = httpx.ASGITransport
    return create_app(
        settings,
        pdu_client=PduClient("http://pdu", SECRET, transport=asgi(app=fake_pdu.app)),
        transaction_client=TransactionClient("http://tx", SECRET, transport=asgi(app=fake_tx.app)),
        callback_http=httpx.AsyncClient(transport=asgi(app=receiver.app), base_url="http://cb.test"))


@pytest.fixture
def service_app(tmp_path, fake_pdu, fake_tx, receiver):
    settings = make_settings(tmp_path, max_body_bytes=64 * 1024)
    return build_messaging(settings, fake_pdu, fake_tx, receiver), settings
