"""Spaces and jump-to-date (issue #14): the internal `GET /rooms/{room_id}/hierarchy` of the
domain API and the federation `/hierarchy/{roomId}` and `/timestamp_to_event/{roomId}` that
transport forwards with the verified origin. The pdu service alone, the real transaction
service behind it; remote.test's users join the way a remote server does (make_join,
send_join) so that it has a member where a test needs one.

Contract (services/pdu/hierarchy.py): a room (and child) is accessible to a server if it is
world-readable, its join rule public / knock / knock_restricted, the server has a joined
member, or (restricted) a member in an allowed room we hold; our own domain API sees all.
A room that is unknown, not accessible or whose ACL denies the asker is 404 M_NOT_FOUND;
children without a `via` are removed ones; suggested_only keeps `suggested: true`.
timestamp_to_event: 403 to a server with no member or denied by the ACL, 404 for an
unknown room or no event in that direction, 400 for a bad `dir` or `ts`."""
from __future__ import annotations

import asyncio

import pytest

from shared.contracts import pdu as c
from tests.contract.pdu.conftest import REMOTE
from tests.contract.pdu.test_public_rooms import new_room, state_event
from tests.contract.pdu.test_with_fakes import ALICE, q, remote_join, send

# Rooms here are made as the in-process service's own server (hs.test): not against
# --base-url, whose service has another name.
pytestmark = pytest.mark.usefixtures("inprocess")

HEADERS = {c.ORIGIN_HEADER: REMOTE}


def fed_hierarchy(room: str) -> str:
    return c.FEDERATION + f"/v1/hierarchy/{q(room)}"


async def add_child(client, space: str, child: str, content: dict) -> None:
    await send(client, space, {"sender": ALICE, "type": "m.space.child", "state_key": child,
                               "content": content})


@pytest.fixture
async def space(service_client):
    """A public space with four children we hold (public and suggested; private; restricted
    to the space; removed, no via) and one we do not hold."""
    sp = await new_room(service_client, name="Space", room_type="m.space")
    public = await new_room(service_client, name="Public child")
    private = await new_room(service_client, preset="private_chat", name="Private child")
    restricted = await new_room(service_client, preset="private_chat", name="Restricted child")
    await state_event(service_client, restricted, "m.room.join_rules",
                      {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": sp}]})
    removed = await new_room(service_client, name="Removed child")
    elsewhere = "!elsewhere:remote.test"
    await add_child(service_client, sp, public, {"via": ["hs.test"], "suggested": True})
    await add_child(service_client, sp, private, {"via": ["hs.test"]})
    await add_child(service_client, sp, restricted, {"via": ["hs.test"], "order": "b"})
    await add_child(service_client, sp, removed, {})
    await add_child(service_client, sp, elsewhere, {"via": [REMOTE]})
    return {"space": sp, "public": public, "private": private, "restricted": restricted,
            "removed": removed, "elsewhere": elsewhere}


def ids(entries) -> set[str]:
    return {e["room_id"] for e in entries}


async def test_internal_hierarchy_lists_every_child_we_hold(service_client, space):
    resp = await service_client.get(c.HIERARCHY.format(room_id=q(space["space"])))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    room = body["room"]
    assert room["room_id"] == space["space"] and room["room_type"] == "m.space"
    assert room["name"] == "Space" and room["join_rule"] == "public" and room["num_joined_members"] == 1
    children_state = {e["state_key"]: e for e in room["children_state"]}
    assert set(children_state) == {space[k] for k in ("public", "private", "restricted", "elsewhere")}
    ev = children_state[space["restricted"]]
    assert ev["type"] == "m.space.child" and ev["sender"] == ALICE
    assert ev["content"] == {"via": ["hs.test"], "order": "b"} and isinstance(ev["origin_server_ts"], int)
    assert ids(body["children"]) == {space[k] for k in ("public", "private", "restricted")}
    restricted = next(e for e in body["children"] if e["room_id"] == space["restricted"])
    assert restricted["join_rule"] == "restricted" and restricted["allowed_room_ids"] == [space["space"]]
    assert body["inaccessible_children"] == []


async def test_suggested_only(service_client, space):
    for path, headers in ((c.HIERARCHY.format(room_id=q(space["space"])), None),
                          (fed_hierarchy(space["space"]), HEADERS)):
        resp = await service_client.get(path, params={"suggested_only": "true"}, headers=headers)
        assert resp.status_code == 200, resp.text
        assert [e["state_key"] for e in resp.json()["room"]["children_state"]] == [space["public"]]
        assert ids(resp.json()["children"]) == {space["public"]}


async def test_a_server_with_no_member_sees_only_the_open_children(service_client, space):
    resp = await service_client.get(fed_hierarchy(space["space"]), headers=HEADERS)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert ids(body["children"]) == {space["public"]}
    assert sorted(body["inaccessible_children"]) == sorted([space["private"], space["restricted"]])


async def test_a_member_of_the_space_may_see_the_restricted_child(service_client, fake_transport, space):
    await remote_join(service_client, fake_transport, space["space"], "12")
    body = (await service_client.get(fed_hierarchy(space["space"]), headers=HEADERS)).json()
    assert ids(body["children"]) == {space["public"], space["restricted"]}
    assert body["inaccessible_children"] == [space["private"]]


async def test_a_private_room_is_404_to_a_server_with_no_member(service_client, fake_transport):
    room = await new_room(service_client, preset="private_chat", name="secret")
    resp = await service_client.get(fed_hierarchy(room), headers=HEADERS)
    assert resp.status_code == 404 and resp.json()["errcode"] == "M_NOT_FOUND", resp.text
    assert "secret" not in resp.text
    await state_event(service_client, room, "m.room.history_visibility",
                      {"history_visibility": "world_readable"})
    resp = await service_client.get(fed_hierarchy(room), headers=HEADERS)
    assert resp.status_code == 200 and resp.json()["room"]["name"] == "secret"


async def test_a_server_the_acl_denies_gets_404_and_denied_children_are_inaccessible(service_client, space):
    await state_event(service_client, space["public"], "m.room.server_acl",
                      {"allow": ["*"], "deny": [REMOTE]})
    body = (await service_client.get(fed_hierarchy(space["space"]), headers=HEADERS)).json()
    assert ids(body["children"]) == set() and space["public"] in body["inaccessible_children"]
    await state_event(service_client, space["space"], "m.room.server_acl",
                      {"allow": ["*"], "deny": [REMOTE]})
    resp = await service_client.get(fed_hierarchy(space["space"]), headers=HEADERS)
    assert resp.status_code == 404 and resp.json()["errcode"] == "M_NOT_FOUND"
    resp = await service_client.get(fed_hierarchy(space["space"]), headers={c.ORIGIN_HEADER: "other.test"})
    assert resp.status_code == 200


async def test_hierarchy_refusals(service_client, space):
    unknown = q("!unknown:hs.test")
    resp = await service_client.get(c.HIERARCHY.format(room_id=unknown))
    assert resp.status_code == 404 and resp.json()["errcode"] == "M_NOT_FOUND"
    resp = await service_client.get(c.FEDERATION + f"/v1/hierarchy/{unknown}", headers=HEADERS)
    assert resp.status_code == 404 and resp.json()["errcode"] == "M_NOT_FOUND"
    for path, headers in ((c.HIERARCHY.format(room_id=q(space["space"])), None),
                          (fed_hierarchy(space["space"]), HEADERS)):
        resp = await service_client.get(path, params={"suggested_only": "yes"}, headers=headers)
        assert resp.status_code == 400 and resp.json()["errcode"] == "M_INVALID_PARAM", resp.text
    resp = await service_client.get(fed_hierarchy(space["space"]))
    assert resp.status_code == 401 and resp.json()["errcode"] == "M_UNAUTHORIZED"


# ------------------------------------------------------------------ timestamp_to_event

def tte(room: str) -> str:
    return c.FEDERATION + f"/v1/timestamp_to_event/{q(room)}"


@pytest.fixture
async def timeline(service_client, recorder, fake_transport):
    """A room remote.test is in, then two messages 30 ms apart; their IDs and timestamps."""
    room = await new_room(service_client)
    await remote_join(service_client, fake_transport, room, "12")
    out = {"room": room}
    for name in ("m1", "m2"):
        await asyncio.sleep(0.03)
        eid = await send(service_client, room, {"sender": ALICE, "type": "m.room.message",
                                                "content": {"body": name}})
        out[name] = (eid, recorder.persisted_events()[eid]["event"]["origin_server_ts"])
        await asyncio.sleep(0.03)
    return out


async def test_timestamp_to_event_finds_the_closest_event_each_way(service_client, timeline):
    (m1, t1), (m2, t2) = timeline["m1"], timeline["m2"]
    for ts, direction, expected in ((t1, "f", (m1, t1)), (t1 + 1, "f", (m2, t2)), (t2, "b", (m2, t2)),
                                    (t2 - 1, "b", (m1, t1)), (t2 + 10_000, "b", (m2, t2))):
        resp = await service_client.get(tte(timeline["room"]), params={"ts": ts, "dir": direction},
                                        headers=HEADERS)
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"event_id": expected[0], "origin_server_ts": expected[1]}, (ts, direction)


async def test_timestamp_to_event_with_nothing_that_way_is_404(service_client, timeline):
    t2 = timeline["m2"][1]
    resp = await service_client.get(tte(timeline["room"]), params={"ts": t2 + 10_000, "dir": "f"},
                                    headers=HEADERS)
    assert resp.status_code == 404 and resp.json()["errcode"] == "M_NOT_FOUND"


@pytest.mark.parametrize("params", [{"ts": "soon", "dir": "f"}, {"ts": "-5", "dir": "b"},
                                    {"ts": "1", "dir": "sideways"}, {"dir": "f"}, {"ts": "1"}])
async def test_timestamp_to_event_bad_parameters_are_400(service_client, timeline, params):
    resp = await service_client.get(tte(timeline["room"]), params=params, headers=HEADERS)
    assert resp.status_code == 400, resp.text
    assert resp.json()["errcode"] in ("M_INVALID_PARAM", "M_MISSING_PARAM", "M_BAD_JSON")


async def test_timestamp_to_event_refusals(service_client, timeline):
    params = {"ts": 0, "dir": "f"}
    resp = await service_client.get(tte(timeline["room"]), params=params,
                                    headers={c.ORIGIN_HEADER: "stranger.test"})
    assert resp.status_code == 403 and resp.json()["errcode"] == "M_FORBIDDEN"
    resp = await service_client.get(tte("!unknown:hs.test"), params=params, headers=HEADERS)
    assert resp.status_code == 404 and resp.json()["errcode"] == "M_NOT_FOUND"
    resp = await service_client.get(tte(timeline["room"]), params=params)
    assert resp.status_code == 401 and resp.json()["errcode"] == "M_UNAUTHORIZED"
    await state_event(service_client, timeline["room"], "m.room.server_acl",
                      {"allow": ["*"], "deny": [REMOTE]})
    resp = await service_client.get(tte(timeline["room"]), params=params, headers=HEADERS)
    assert resp.status_code == 403 and resp.json()["errcode"] == "M_FORBIDDEN"
