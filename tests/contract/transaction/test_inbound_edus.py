"""Received EDUs in the transaction service: stored in the commit that answers the
transaction, read back from the stream with `edus=true` in the positions they share with
events, checked against the pdu service's room membership (asked once per room, then
cached until a state event of the room is persisted), pruned once every subscription
passed them."""
from __future__ import annotations

import sqlite3

from shared.contracts import pdu as pdu_c
from shared.contracts import transaction as c
from tests.contract.helpers import asgi_client, unique
from tests.contract.transaction.conftest import (FakePdu, FakeTransport, build_transaction,
                                                 new_room, tx_settings)

ORIGIN = "remote.test"


def inbound(txn_id: str) -> str:
    return c.INBOUND.format(origin=ORIGIN, txn_id=txn_id)


def typing(room_id: str, user: str = "@u:remote.test") -> dict:
    return {"edu_type": "m.typing", "content": {"room_id": room_id, "user_id": user, "typing": True}}


async def send(client, edus, txn_id=None):
    return await client.put(inbound(txn_id or unique("t")),
                            json={"origin": ORIGIN, "origin_server_ts": 1, "pdus": [], "edus": edus})


async def stream(client, after=0, **params) -> dict:
    resp = await client.get(c.STREAM, params={"after": after, "limit": 100, **params})
    assert resp.status_code == 200, resp.text
    return resp.json()


def message(room_id: str, eid: str) -> dict:
    return {"events": [{"event_id": eid, "room_id": room_id, "state_after": {"base": None, "delta": []},
                        "event": {"type": "m.room.message", "room_id": room_id, "content": {}}}]}


async def test_edus_share_positions_with_events(service_client, fake_pdu):
    room = await new_room(service_client)
    fake_pdu.room_servers[room] = [ORIGIN, "hs.test"]
    resp = await service_client.post(c.PERSIST, json=message(room, "$" + unique("a")))
    assert resp.status_code == 200, resp.text
    assert (await send(service_client, [typing(room)])).status_code == 200
    resp = await service_client.post(c.PERSIST, json=message(room, "$" + unique("b")))
    assert resp.status_code == 200
    page = await stream(service_client, edus="true")
    [e1, e2] = [e["position"] for e in page["events"]]
    [edu] = page["edus"]
    assert e1 < edu["position"] < e2 and page["next"] == e2
    assert edu["edu"] == {"edu_type": "m.typing", "origin": ORIGIN, "content": typing(room)["content"]}
    assert "edus" not in await stream(service_client)            # not asked: events only
    # a limit cuts the merged sequence, and `next` continues it
    page = await stream(service_client, edus="true", limit=2)
    assert [e["position"] for e in page["events"]] == [e1] and len(page["edus"]) == 1
    assert page["next"] == edu["position"]
    page = await stream(service_client, after=page["next"], edus="true")
    assert [e["position"] for e in page["events"]] == [e2] and page["edus"] == []
    # a room filter keeps that room's EDUs only
    assert (await stream(service_client, edus="true", room_id="!other:x"))["edus"] == []


async def test_room_membership_asked_once_then_cached_until_a_state_event(service_client, fake_pdu):
    room = await new_room(service_client)
    fake_pdu.room_servers[room] = ["elsewhere.test"]
    assert (await send(service_client, [typing(room)])).status_code == 200
    assert (await stream(service_client, edus="true"))["edus"] == []     # origin not joined
    fake_pdu.room_servers[room] = [ORIGIN]
    assert (await send(service_client, [typing(room)])).status_code == 200
    assert (await stream(service_client, edus="true"))["edus"] == []     # still cached
    assert fake_pdu.room_server_calls == [room]
    state = {"events": [{"event_id": "$" + unique("m"), "room_id": room,
                         "state_after": {"base": None, "delta": []},
                         "event": {"type": "m.room.member", "state_key": "@u:remote.test",
                                   "room_id": room, "content": {"membership": "join"}}}]}
    assert (await service_client.post(c.PERSIST, json=state)).status_code == 200
    assert (await send(service_client, [typing(room)])).status_code == 200
    assert len((await stream(service_client, edus="true"))["edus"]) == 1
    assert fake_pdu.room_server_calls == [room, room]
    stats = (await service_client.get(c.EDU_STATS)).json()
    assert stats == {"accepted": 1, "dropped": {"origin has no joined member in the room": 2}}


async def test_pdu_unreachable_refuses_the_transaction_and_stores_nothing(service_client, fake_pdu):
    room = await new_room(service_client)
    fake_pdu.room_servers[room] = [ORIGIN]
    fake_pdu.fail_next = 1
    txn_id = unique("t")
    resp = await send(service_client, [typing(room)], txn_id)
    assert resp.status_code >= 500 and isinstance(resp.json()["errcode"], str)
    assert (await stream(service_client, edus="true"))["edus"] == []
    resp = await send(service_client, [typing(room)], txn_id)            # the remote's retry
    assert resp.status_code == 200
    assert len((await stream(service_client, edus="true"))["edus"]) == 1


async def test_delivered_edus_are_pruned(service_client, inprocess):
    """(In-process: a long-lived service's other subscriptions would hold the EDUs.)"""
    resp = await service_client.post(c.SUBSCRIPTIONS, json={"url": "http://cb.test/x"})
    sid = resp.json()["subscription_id"]
    unknown = [{"edu_type": "com.example.x", "content": {"n": 1}}]
    assert (await send(service_client, unknown)).status_code == 200
    [first] = (await stream(service_client, edus="true"))["edus"]
    await service_client.put(c.SUBSCRIPTION_POSITION.format(subscription_id=sid),
                             json={"position": first["position"]})
    assert (await send(service_client, unknown)).status_code == 200
    page = await stream(service_client, edus="true")
    assert [e["position"] for e in page["edus"]] == [first["position"] + 1]


async def test_a_database_from_before_the_edu_tables_keeps_working(data_dir, inprocess):
    """A sqlite file of a release from before the EDU tables (and before migrations)."""
    settings = tx_settings(data_dir)
    app = build_transaction(settings, FakeTransport(), FakePdu())
    async with app.router.lifespan_context(app):
        pass
    db = sqlite3.connect(settings.path("db"))
    db.executescript("DROP TABLE edu_stream; DROP TABLE edu_seen; DROP TABLE alembic_version;")
    db.close()
    app = build_transaction(settings, FakeTransport(), FakePdu())
    async with app.router.lifespan_context(app), asgi_client(app) as client:
        assert (await send(client, [{"edu_type": "com.example.x", "content": {}}])).status_code == 200
        assert len((await stream(client, edus="true"))["edus"]) == 1


def test_contract_paths():
    assert pdu_c.ROOM_SERVERS.startswith(pdu_c.PREFIX) and c.EDU_STATS.startswith(c.PREFIX)
