"""The storage API the pdu and messaging layers persist through: one atomic commit per
persist, event_id deduplication, compare-and-set extremities, client txn idempotency,
immutable state groups, and the live stream (with long polling)."""
from __future__ import annotations

import asyncio
import time

from shared.contracts import transaction as c
from tests.contract.helpers import unique
from tests.contract.transaction.conftest import new_room


def ev(room_id: str, eid: str, type_: str = "m.room.message", state_key: str | None = None) -> dict:
    event = {"type": type_, "room_id": room_id, "sender": "@u:remote.test",
             "content": {"eid": eid}}
    if state_key is not None:
        event["state_key"] = state_key
    return event


def pe(room_id: str, eid: str, **kw) -> dict:
    return {"event_id": eid, "room_id": room_id, "event": ev(room_id, eid), **kw}


async def persist(client, body: dict, status: int = 200) -> dict:
    resp = await client.post(c.PERSIST, json=body)
    assert resp.status_code == status, resp.text
    return resp.json()


async def get_events(client, ids) -> dict:
    resp = await client.post(c.GET_EVENTS, json={"event_ids": list(ids)})
    assert resp.status_code == 200, resp.text
    return resp.json()["events"]


async def stream(client, after=0, room_id=None, limit=1000, timeout_ms=0) -> dict:
    params = {"after": after, "limit": limit, "timeout_ms": timeout_ms}
    if room_id:
        params["room_id"] = room_id
    resp = await client.get(c.STREAM, params=params)
    assert resp.status_code == 200, resp.text
    return c.StreamResponse.model_validate(resp.json()).model_dump(exclude_unset=True)


async def test_persist_dedupes_event_ids(service_client):
    room = await new_room(service_client)
    eid = "$" + unique("dedupe")
    first = c.PersistResponse.model_validate(await persist(service_client, {"events": [pe(room, eid)]}))
    assert first.events[eid]["new"] is True and isinstance(first.events[eid]["stream"], int)
    second = c.PersistResponse.model_validate(await persist(service_client, {"events": [pe(room, eid)]}))
    assert second.events[eid]["new"] is False
    got = await get_events(service_client, [eid, eid, "$" + unique("missing")])
    assert list(got) == [eid]
    rec = c.EventRecord.model_validate(got[eid])
    assert rec.event == ev(room, eid) and rec.stream == first.events[eid]["stream"]
    page = await stream(service_client, room_id=room)
    assert [e["event"]["event_id"] for e in page["events"]] == [eid]


async def test_event_listed_twice_in_one_persist_is_stored_once_and_reported_new(service_client):
    room = await new_room(service_client)
    eid = "$" + unique("twice")
    res = await persist(service_client, {"events": [pe(room, eid), pe(room, eid)]})
    assert res["events"][eid]["new"] is True, res
    assert isinstance(res["events"][eid]["stream"], int), res
    page = await stream(service_client, room_id=room)
    assert [e["event"]["event_id"] for e in page["events"]] == [eid]


async def test_unknown_room_without_version_is_404_and_nothing_is_stored(service_client):
    eid = "$" + unique("orphan")
    room = f"!{unique()}:remote.test"
    await persist(service_client, {"events": [pe(room, eid)],
                                   "rooms": [{"room_id": room, "extremities": [eid]}]}, 404)
    assert await get_events(service_client, [eid]) == {}


async def test_extremities_are_compare_and_set(service_client):
    room = await new_room(service_client)
    e1, e2, e3 = ("$" + unique(f"cas{i}") for i in range(3))
    await persist(service_client, {"events": [pe(room, e1)],
                                   "rooms": [{"room_id": room, "extremities": [e1], "expect_extremities": []}]})
    # a writer that still believes the extremities are [] loses, and stores nothing
    resp = await service_client.post(c.PERSIST, json={
        "events": [pe(room, e2)],
        "rooms": [{"room_id": room, "extremities": [e2], "expect_extremities": []}]})
    assert resp.status_code == 409, resp.text
    assert await get_events(service_client, [e2]) == {}
    await persist(service_client, {"events": [pe(room, e3)],
                                   "rooms": [{"room_id": room, "extremities": [e3], "expect_extremities": [e1]}]})
    room_info = c.RoomInfo.model_validate((await service_client.get(c.ROOM.format(room_id=room))).json())
    assert room_info.extremities == [e3] and room_info.room_version == "10"


async def test_unknown_room_is_404(service_client):
    resp = await service_client.get(c.ROOM.format(room_id=f"!{unique()}:nowhere.test"))
    assert resp.status_code == 404 and resp.json()["errcode"] == "M_NOT_FOUND"


async def test_client_txn_returns_the_first_event(service_client):
    room = await new_room(service_client)
    sender, txn_id = f"@{unique()}:hs.test", unique("ct")
    e1, e2 = "$" + unique("ct1"), "$" + unique("ct2")
    res = await persist(service_client, {"events": [pe(room, e1)],
                                         "client_txn": {"sender": sender, "txn_id": txn_id, "event_id": e1}})
    assert res["client_txn_event_id"] is None
    res = await persist(service_client, {"events": [pe(room, e2)],
                                         "client_txn": {"sender": sender, "txn_id": txn_id, "event_id": e2}})
    assert res["client_txn_event_id"] == e1
    assert await get_events(service_client, [e2]) == {}, "a repeated client txn stored its event"
    resp = await service_client.post(c.CLIENT_TXN, json={"sender": sender, "txn_id": txn_id})
    assert resp.json() == {"event_id": e1}
    resp = await service_client.post(c.CLIENT_TXN, json={"sender": sender, "txn_id": unique()})
    assert resp.json() == {"event_id": None}


async def test_state_groups_from_specs(service_client):
    room = await new_room(service_client)
    create, member, name = ("$" + unique(x) for x in ("create", "member", "name"))
    await persist(service_client, {
        "events": [
            {"event_id": create, "room_id": room, "event": ev(room, create, "m.room.create", ""),
             "state_after": {"base": None, "delta": [["m.room.create", "", create]]}},
            {"event_id": member, "room_id": room, "event": ev(room, member, "m.room.member", "@u:x"),
             "state_after": {"base": {"same_as": create}, "delta": [["m.room.member", "@u:x", member]]}},
            {"event_id": name, "room_id": room, "event": ev(room, name, "m.room.name", ""),
             "state_after": {"base": {"same_as": member}, "delta": [["m.room.name", "", name]]}}],
        "rooms": [{"room_id": room, "extremities": [name], "current_state": {"same_as": name}}]})
    recs = await get_events(service_client, [create, member, name])
    groups = [recs[e]["state_group"] for e in (create, member, name)]
    room_info = (await service_client.get(c.ROOM.format(room_id=room))).json()
    assert room_info["current_state_group"] == groups[2]
    resp = await service_client.post(c.STATE_GROUPS, json={"groups": groups})
    got = {int(k): sorted(map(tuple, v)) for k, v in resp.json()["groups"].items()}
    assert got[groups[0]] == [("m.room.create", "", create)]
    assert got[groups[1]] == sorted([("m.room.create", "", create), ("m.room.member", "@u:x", member)])
    assert got[groups[2]] == sorted([("m.room.create", "", create), ("m.room.member", "@u:x", member),
                                     ("m.room.name", "", name)])
    # an existing group named by id, and a delta that replaces an entry
    other = "$" + unique("name2")
    await persist(service_client, {"events": [
        {"event_id": other, "room_id": room, "event": ev(room, other, "m.room.name", ""),
         "state_after": {"base": {"group": groups[2]}, "delta": [["m.room.name", "", other]]}}]})
    g = (await get_events(service_client, [other]))[other]["state_group"]
    resp = await service_client.post(c.STATE_GROUPS, json={"groups": [g, groups[2]]})
    assert ["m.room.name", "", other] in resp.json()["groups"][str(g)]
    assert ["m.room.name", "", name] in resp.json()["groups"][str(groups[2])]   # immutable


async def test_stream_holds_live_events_in_order(service_client):
    room = await new_room(service_client)
    ids = ["$" + unique(f"s{i}") for i in range(5)]
    await persist(service_client, {"events": [
        pe(room, ids[0]), pe(room, ids[1], outlier=True), pe(room, ids[2], rejected="auth"),
        pe(room, ids[3], soft_failed=True), pe(room, ids[4])]})
    page = await stream(service_client, room_id=room)
    assert [e["event"]["event_id"] for e in page["events"]] == [ids[0], ids[4]]
    positions = [e["position"] for e in page["events"]]
    assert positions == sorted(positions) and page["next"] == positions[-1]
    assert (await stream(service_client, after=positions[0], room_id=room))["events"][0]["position"] == positions[1]
    empty = await stream(service_client, after=positions[-1], room_id=room)
    assert empty == {"events": [], "next": positions[-1]}


async def test_stream_long_poll_wakes_on_new_event(service_client):
    room = await new_room(service_client)
    after = (await stream(service_client, room_id=room))["next"]
    eid = "$" + unique("wake")

    async def later():
        await asyncio.sleep(0.2)
        await persist(service_client, {"events": [pe(room, eid)]})
    t0 = time.monotonic()
    page, _ = await asyncio.gather(stream(service_client, after=after, room_id=room, timeout_ms=5000), later())
    assert [e["event"]["event_id"] for e in page["events"]] == [eid]
    assert time.monotonic() - t0 < 3, "the long poll was not woken by the new event"


async def test_internal_routes_need_the_secret(public_client):
    for method, path in (("POST", c.PERSIST), ("GET", c.STREAM), ("GET", c.SUBSCRIPTIONS),
                         ("PUT", c.INBOUND.format(origin="remote.test", txn_id="t"))):
        resp = await public_client.request(method, path, json={} if method != "GET" else None)
        assert resp.status_code == 403 and resp.json()["errcode"] == "M_FORBIDDEN", (method, path)
