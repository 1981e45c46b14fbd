"""The pdu service by HTTP alone (these also run against --base-url): rooms it creates hold
well-formed, hashed events with correct IDs for each room version; sends are auth-checked;
make_join templates and federation reads answer only to the right servers."""
from __future__ import annotations

from urllib.parse import quote

import pytest

from shared.contracts import pdu as c
from shared.events import check_content_hash, compute_event_id, validate_event_format
from shared.room_versions import get_room_version
from tests.contract.helpers import unique

VERSIONS = ["10", "11", "12"]


def q(s: str) -> str:
    return quote(s, safe="")


def user(service, local: str | None = None) -> str:
    return f"@{local or unique('u')}:{service.settings.server_name}"


async def create_room(client, creator: str, version="12", preset="public_chat", name=None) -> str:
    body = {"creator": creator, "room_version": version, "preset": preset}
    if name:
        body["name"] = name
    resp = await client.post(c.ROOMS, json=body)
    assert resp.status_code == 200, resp.text
    return c.RoomIdResponse.model_validate(resp.json()).room_id


async def room_state(client, room_id: str) -> dict:
    resp = await client.get(c.STATE.format(room_id=q(room_id)))
    assert resp.status_code == 200, resp.text
    return c.StateResponse.model_validate(resp.json()).model_dump()


def wire(ev: dict) -> dict:
    return {k: v for k, v in ev.items() if k != "event_id"}


async def fed(client, method, sub_path, origin, **kw):
    headers = {c.ORIGIN_HEADER: origin} if origin else {}
    return await client.request(method, c.FEDERATION + sub_path, headers=headers, **kw)


@pytest.mark.parametrize("version", VERSIONS)
async def test_created_room_events_are_well_formed(service_client, service, version):
    alice = user(service, "alice")
    room = await create_room(service_client, alice, version, name="Contract")
    st = await room_state(service_client, room)
    assert st["room_id"] == room and st["room_version"] == version
    rv = get_room_version(version)
    by_key = {(e["type"], e["state_key"]): e for e in st["state"]}
    assert {("m.room.create", ""), ("m.room.member", alice), ("m.room.power_levels", ""),
            ("m.room.join_rules", ""), ("m.room.name", "")} <= set(by_key)
    ids = {e["event_id"] for e in st["state"]}
    server = service.settings.server_name
    for ev in st["state"]:
        w = wire(ev)
        validate_event_format(w, rv)
        assert check_content_hash(w), ev["type"]
        assert compute_event_id(w, rv) == ev["event_id"], ev["type"]
        assert server in w["signatures"]
        assert w["sender"] == alice
        assert set(w["auth_events"]) <= ids and set(w["prev_events"]) <= ids
    create = by_key[("m.room.create", "")]
    assert create["prev_events"] == [] and create["auth_events"] == [] and create["depth"] == 1
    assert create["content"]["room_version"] == version
    if rv.room_id_is_create_id:
        assert "room_id" not in wire(create)
        assert room == "!" + create["event_id"][1:]
    else:
        assert create["room_id"] == room and room.endswith(":" + server)
    if rv.creator_in_content:
        assert create["content"]["creator"] == alice
    member = by_key[("m.room.member", alice)]
    assert member["content"]["membership"] == "join"
    assert member["prev_events"] == [create["event_id"]]
    assert (create["event_id"] in member["auth_events"]) == rv.create_in_auth_events
    assert by_key[("m.room.join_rules", "")]["content"]["join_rule"] == "public"
    assert by_key[("m.room.name", "")]["content"]["name"] == "Contract"


async def test_unsupported_room_version_is_400(service_client, service):
    resp = await service_client.post(c.ROOMS, json={"creator": user(service), "room_version": "9"})
    assert resp.status_code == 400


async def test_room_name_too_big_for_an_event_is_400(service_client, service):
    resp = await service_client.post(c.ROOMS, json={"creator": user(service), "name": "n" * 70_000})
    assert resp.status_code == 400 and resp.json()["errcode"] == "M_BAD_JSON", resp.text


async def test_non_local_creator_is_403(service_client):
    resp = await service_client.post(c.ROOMS, json={"creator": "@mallory:elsewhere.test"})
    assert resp.status_code == 403 and resp.json()["errcode"] == "M_FORBIDDEN"


@pytest.mark.parametrize("version", VERSIONS)
async def test_send_appends_to_the_room(service_client, service, version):
    alice = user(service, "alice")
    room = await create_room(service_client, alice, version)
    resp = await service_client.post(c.SEND.format(room_id=q(room)), json={
        "sender": alice, "type": "m.room.topic", "state_key": "", "content": {"topic": "t"}})
    assert resp.status_code == 200, resp.text
    eid = c.EventIdResponse.model_validate(resp.json()).event_id
    st = {(e["type"], e["state_key"]): e for e in (await room_state(service_client, room))["state"]}
    topic = st[("m.room.topic", "")]
    assert topic["event_id"] == eid
    assert compute_event_id(wire(topic), get_room_version(version)) == eid
    assert topic["depth"] > st[("m.room.join_rules", "")]["depth"]


async def test_send_by_non_member_is_403(service_client, service):
    alice, mallory = user(service, "alice"), user(service, "mallory")
    room = await create_room(service_client, alice, preset="private_chat")
    before = await room_state(service_client, room)
    for body in ({"sender": mallory, "type": "m.room.message", "content": {"body": "hi"}},
                 {"sender": mallory, "type": "m.room.name", "state_key": "", "content": {"name": "x"}},
                 {"sender": mallory, "type": "m.room.member", "state_key": mallory,
                  "content": {"membership": "join"}}):          # private room: no joining
        resp = await service_client.post(c.SEND.format(room_id=q(room)), json=body)
        assert resp.status_code == 403, resp.text
        assert resp.json()["errcode"] == "M_FORBIDDEN"
    assert await room_state(service_client, room) == before


async def test_send_as_a_remote_user_is_403(service_client, service):
    room = await create_room(service_client, user(service))
    resp = await service_client.post(c.SEND.format(room_id=q(room)), json={
        "sender": "@bob:elsewhere.test", "type": "m.room.message", "content": {"body": "hi"}})
    assert resp.status_code == 403 and resp.json()["errcode"] == "M_FORBIDDEN"


async def test_send_to_unknown_room_is_404(service_client, service):
    resp = await service_client.post(c.SEND.format(room_id=q(f"!{unique()}:nowhere.test")), json={
        "sender": user(service), "type": "m.room.message", "content": {}})
    assert resp.status_code == 404 and resp.json()["errcode"] == "M_NOT_FOUND"


async def test_send_with_same_txn_id_returns_the_first_event(service_client, service):
    alice = user(service, "alice")
    room = await create_room(service_client, alice)
    body = {"sender": alice, "type": "m.room.message", "content": {"body": "once"}, "txn_id": unique()}
    first = await service_client.post(c.SEND.format(room_id=q(room)), json=body)
    again = await service_client.post(c.SEND.format(room_id=q(room)), json=body)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()


async def send_batch(client, room, events):
    resp = await client.post(c.SEND_BATCH.format(room_id=q(room)), json={"events": events})
    assert resp.status_code == 200, resp.text
    return c.SendBatchResponse.model_validate(resp.json()).model_dump()["results"]


async def test_send_batch_applies_events_in_order_each_on_the_one_before(service_client, service):
    alice, mallory = user(service, "alice"), user(service, "mallory")
    room = await create_room(service_client, alice, preset="private_chat")
    msgs = [{"sender": alice, "type": "m.room.message", "content": {"body": str(i)}} for i in range(120)]
    # a refused event in the middle (not a member; a remote user) does not stop the others
    msgs[30] = {"sender": mallory, "type": "m.room.message", "content": {"body": "x"}}
    msgs[60] = {"sender": "@bob:elsewhere.test", "type": "m.room.message", "content": {"body": "y"}}
    msgs[90] = {"sender": alice, "type": "m.room.topic", "state_key": "", "content": {"topic": "batch"}}
    results = await send_batch(service_client, room, msgs)
    assert len(results) == 120
    assert results[30]["errcode"] == results[60]["errcode"] == "M_FORBIDDEN"
    assert results[30]["event_id"] is None and results[60]["event_id"] is None
    ids = [r["event_id"] for i, r in enumerate(results) if i not in (30, 60)]
    assert all(ids) and len(set(ids)) == 118
    st = {(e["type"], e["state_key"]): e for e in (await room_state(service_client, room))["state"]}
    assert st[("m.room.topic", "")]["event_id"] == results[90]["event_id"]
    # each event's prev_event is the one sent before it (a chain, in the batch's order)
    for before, after in zip(ids[-6:], ids[-5:]):
        got = await fed(service_client, "GET", "/v1/event/" + q(after), service.settings.server_name)
        assert got.status_code == 200, got.text
        assert got.json()["pdus"][0]["prev_events"] == [before]


async def test_send_batch_txn_ids_make_repeats_harmless(service_client, service):
    alice = user(service, "alice")
    room = await create_room(service_client, alice)
    t1, t2 = unique("t"), unique("t")
    batch = [{"sender": alice, "type": "m.room.message", "content": {"body": "a"}, "txn_id": t1},
             {"sender": alice, "type": "m.room.message", "content": {"body": "b"}, "txn_id": t2},
             {"sender": alice, "type": "m.room.message", "content": {"body": "a"}, "txn_id": t1}]
    first = await send_batch(service_client, room, batch)
    assert first[0]["event_id"] == first[2]["event_id"] != first[1]["event_id"]
    again = await send_batch(service_client, room, batch)
    assert [r["event_id"] for r in again] == [r["event_id"] for r in first]
    single = await service_client.post(c.SEND.format(room_id=q(room)), json=batch[1])
    assert single.json()["event_id"] == first[1]["event_id"]


async def test_send_batch_refusals(service_client, service):
    resp = await service_client.post(c.SEND_BATCH.format(room_id=q(f"!{unique()}:nowhere.test")),
                                     json={"events": [{"sender": user(service), "type": "m.room.message",
                                                       "content": {}}]})
    assert resp.status_code == 404 and resp.json()["errcode"] == "M_NOT_FOUND"
    room = await create_room(service_client, user(service))
    ev = {"sender": user(service), "type": "m.room.message", "content": {}}
    for body in ({"events": [ev] * (c.MAX_BATCH + 1)}, {"events": [{"type": "x"}]}, {"events": "no"}, {}):
        resp = await service_client.post(c.SEND_BATCH.format(room_id=q(room)), json=body)
        assert resp.status_code == 400 and resp.json()["errcode"] == "M_BAD_JSON", resp.text


async def test_make_join_template(service_client, service):
    room = await create_room(service_client, user(service), "12", preset="public_chat")
    st = await room_state(service_client, room)
    ids = {e["event_id"] for e in st["state"]}
    bob = f"@{unique('bob')}:remote.test"
    resp = await fed(service_client, "GET", f"/v1/make_join/{q(room)}/{q(bob)}", "remote.test",
                     params=[("ver", "10"), ("ver", "11"), ("ver", "12")])
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["room_version"] == "12"
    ev = body["event"]
    assert ev["type"] == "m.room.member" and ev["room_id"] == room
    assert ev["sender"] == ev["state_key"] == bob
    assert ev["content"]["membership"] == "join"
    assert isinstance(ev["origin_server_ts"], int) and isinstance(ev["depth"], int)
    assert ev["depth"] > max(e["depth"] for e in st["state"])
    assert ev["prev_events"] and set(ev["prev_events"]) <= ids
    assert set(ev["auth_events"]) <= ids
    types = {e["type"] for e in st["state"] if e["event_id"] in ev["auth_events"]}
    assert {"m.room.power_levels", "m.room.join_rules"} <= types


async def test_make_join_refusals(service_client, service):
    public = await create_room(service_client, user(service), "10", preset="public_chat")
    private = await create_room(service_client, user(service), "10", preset="private_chat")
    bob = "@bob:remote.test"
    # not allowed to join (invite-only)
    resp = await fed(service_client, "GET", f"/v1/make_join/{q(private)}/{q(bob)}", "remote.test",
                     params={"ver": "10"})
    assert resp.status_code == 403 and resp.json()["errcode"] == "M_FORBIDDEN"
    # the user is not on the requesting server
    resp = await fed(service_client, "GET", f"/v1/make_join/{q(public)}/{q(bob)}", "other.test",
                     params={"ver": "10"})
    assert resp.status_code == 403
    # the requesting server does not support the room version
    resp = await fed(service_client, "GET", f"/v1/make_join/{q(public)}/{q(bob)}", "remote.test",
                     params=[("ver", "11"), ("ver", "12")])
    assert resp.status_code == 400
    assert resp.json()["errcode"] == "M_INCOMPATIBLE_ROOM_VERSION"
    assert resp.json()["room_version"] == "10"
    # unknown room
    resp = await fed(service_client, "GET", f"/v1/make_join/{q('!' + unique() + ':x.test')}/{q(bob)}",
                     "remote.test", params={"ver": "10"})
    assert resp.status_code == 404


async def test_federation_reads_refused_to_servers_not_in_the_room(service_client, service):
    room = await create_room(service_client, user(service))
    st = await room_state(service_client, room)
    create = next(e for e in st["state"] if e["type"] == "m.room.create")["event_id"]
    for sub, params in ((f"/v1/event/{q(create)}", None),
                        (f"/v1/state_ids/{q(room)}", {"event_id": create}),
                        (f"/v1/state/{q(room)}", {"event_id": create}),
                        (f"/v1/event_auth/{q(room)}/{q(create)}", None),
                        (f"/v1/backfill/{q(room)}", {"v": create, "limit": 5})):
        resp = await fed(service_client, "GET", sub, "stranger.test", params=params)
        assert resp.status_code == 403, (sub, resp.text)
        assert resp.json()["errcode"] == "M_FORBIDDEN"
    resp = await fed(service_client, "POST", f"/v1/get_missing_events/{q(room)}", "stranger.test",
                     json={"earliest_events": [], "latest_events": [create], "limit": 5})
    assert resp.status_code == 403


async def test_federation_request_without_origin_is_401(service_client):
    resp = await fed(service_client, "GET", "/v1/event/$x", None)
    assert resp.status_code == 401 and resp.json()["errcode"] == "M_UNAUTHORIZED"


async def test_unknown_event_is_404(service_client):
    resp = await fed(service_client, "GET", f"/v1/event/{q('$' + unique())}", "remote.test")
    assert resp.status_code == 404


async def test_internal_routes_need_the_secret(public_client):
    resp = await public_client.post(c.ROOMS, json={"creator": "@a:b.test"})
    assert resp.status_code == 403 and resp.json()["errcode"] == "M_FORBIDDEN"
    resp = await public_client.get(c.FEDERATION + "/v1/event/$x", headers={c.ORIGIN_HEADER: "remote.test"})
    assert resp.status_code == 403
