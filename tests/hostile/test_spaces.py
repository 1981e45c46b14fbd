"""Catalogue: spaces (/hierarchy) and jump-to-date (/timestamp_to_event).

A fake remote asks for the hierarchy of our spaces: what it may see follows the spec's
rules (world-readable, joinable, or it has a member; restricted children through an
allowed room it is in), a private space with no member of it is 404, suggested_only is
honoured; our domain API lists our spaces in full and asks remote servers in `via` for
theirs. timestamp_to_event finds the closest event each way, refuses a server with no
member, and bad parameters are 400.
"""
from __future__ import annotations

import pytest

from shared.errors import MatrixError
from tests.fakes.remote import FED, Reply, q
from tests.hostile.conftest import errcode


async def room(hs, preset="public_chat", **kw) -> str:
    return await hs.api.call("POST", "/v1/rooms", {"creator": hs.user("alice"), "room_version": "12",
                                                   "preset": preset, **kw})


async def add_child(hs, space: str, child: str, *, suggested=False, via=None):
    content = {"via": via if via is not None else [hs.server_name]}
    if suggested:
        content["suggested"] = True
    await hs.api.send(space, hs.user("alice"), "m.space.child", content, state_key=child)


async def fed_hierarchy(remote, hs, room_id, suggested_only=None):
    return await remote.request(hs, "GET", f"{FED}/v1/hierarchy/{q(room_id)}",
                                query=[("suggested_only", suggested_only)] if suggested_only else None)


async def test_space_hierarchy_as_a_remote_server_may_see_it(hs, remote):
    space = (await room(hs, name="Space", room_type="m.space"))["room_id"]
    open_child = (await room(hs, name="Open"))["room_id"]
    private_child = (await room(hs, preset="private_chat", name="Private"))["room_id"]
    await add_child(hs, space, open_child, suggested=True)
    await add_child(hs, space, private_child)
    await add_child(hs, space, "!elsewhere:other.test", via=["other.test"])
    await add_child(hs, space, "!removed:ours.test", via=[])      # no via: not a child
    r = await fed_hierarchy(remote, hs, space)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["room"]["room_id"] == space and body["room"]["room_type"] == "m.space"
    assert body["room"]["name"] == "Space"
    assert sorted(e["state_key"] for e in body["room"]["children_state"]) == \
        sorted([open_child, private_child, "!elsewhere:other.test"])
    for e in body["room"]["children_state"]:
        assert set(e) == {"type", "state_key", "content", "sender", "origin_server_ts"}
    assert [c["room_id"] for c in body["children"]] == [open_child]
    assert body["inaccessible_children"] == [private_child]
    r = await fed_hierarchy(remote, hs, space, "true")
    assert [e["state_key"] for e in r.json()["room"]["children_state"]] == [open_child]
    assert errcode(await fed_hierarchy(remote, hs, space, "maybe")) == (400, "M_INVALID_PARAM")


async def test_private_room_hierarchy_for_a_server_with_no_member_is_404(hs, remote):
    private = (await room(hs, preset="private_chat", room_type="m.space"))["room_id"]
    await hs.api.invite(private, hs.user("alice"), hs.user("bob"))
    assert errcode(await fed_hierarchy(remote, hs, private)) == (404, "M_NOT_FOUND")
    assert errcode(await fed_hierarchy(remote, hs, "!unknown:ours.test:8448")) == (404, "M_NOT_FOUND")


async def test_restricted_child_seen_through_an_allowed_room_it_is_in(hs, remote):
    space = (await room(hs, room_type="m.space"))["room_id"]
    child = (await room(hs, preset="private_chat"))["room_id"]
    await hs.api.send(child, hs.user("alice"), "m.room.join_rules",
                      {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]},
                      state_key="")
    await add_child(hs, space, child)
    r = await fed_hierarchy(remote, hs, space)
    assert r.json()["inaccessible_children"] == [child]
    await remote.join(hs, space, "fred")
    r = await fed_hierarchy(remote, hs, space)
    [entry] = r.json()["children"]
    assert entry["room_id"] == child and entry["join_rule"] == "restricted"
    assert entry["allowed_room_ids"] == [space]


async def test_domain_api_hierarchy_ours_in_full_and_remote_through_via(hs, remote):
    space = (await room(hs, room_type="m.space"))["room_id"]
    private_child = (await room(hs, preset="private_chat"))["room_id"]
    await add_child(hs, space, private_child)
    ours = await hs.api.hierarchy(space)
    assert [c["room_id"] for c in ours["children"]] == [private_child]
    remote_space = "!space:remote.test:8448"
    answer = {"room": {"room_id": remote_space, "num_joined_members": 2, "world_readable": False,
                       "guest_can_join": False, "children_state": []},
              "children": [{"room_id": "!c:remote.test:8448"}, 7], "inaccessible_children": ["!x:y", 3]}
    remote.route("GET", FED + "/v1/hierarchy/{room_id}",
                 lambda req: answer if req.params["room_id"] == remote_space
                 else Reply(404, {"errcode": "M_NOT_FOUND", "error": "no"}))
    got = await hs.api.hierarchy(remote_space, via=[remote.server_name])
    assert got == {"room": answer["room"], "children": [{"room_id": "!c:remote.test:8448"}],
                   "inaccessible_children": ["!x:y"]}
    with pytest.raises(MatrixError) as exc:
        await hs.api.hierarchy("!nope:remote.test:8448", via=[remote.server_name])
    assert (exc.value.status, exc.value.errcode) == (404, "M_NOT_FOUND")


async def test_timestamp_to_event(hs, remote):
    room_id = (await room(hs))["room_id"]
    await remote.join(hs, room_id, "fred")
    ids = [await hs.api.send(room_id, hs.user("alice"), "m.room.message", {"msgtype": "m.text", "body": str(i)})
           for i in range(3)]
    recs = await hs.records(*ids)
    path = f"{FED}/v1/timestamp_to_event/{q(room_id)}"

    async def ask(ts, d):
        return await remote.request(hs, "GET", path, query=[("ts", str(ts)), ("dir", d)])
    last_ts = recs[ids[-1]]["event"]["origin_server_ts"]
    r = await ask(last_ts + 10_000, "b")
    assert r.status_code == 200 and r.json() == {"event_id": ids[-1], "origin_server_ts": last_ts}
    first = (await ask(0, "f")).json()
    assert first["event_id"] not in ids      # the room's first event (its creation)
    assert errcode(await ask(last_ts + 10_000, "f")) == (404, "M_NOT_FOUND")
    assert errcode(await ask(0, "x")) == (400, "M_INVALID_PARAM")
    assert errcode(await remote.request(hs, "GET", path, query=[("ts", "soon"), ("dir", "f")])) == \
        (400, "M_INVALID_PARAM")
    other = (await room(hs))["room_id"]
    r = await remote.request(hs, "GET", f"{FED}/v1/timestamp_to_event/{q(other)}",
                             query=[("ts", "0"), ("dir", "f")])
    assert errcode(r) == (403, "M_FORBIDDEN")
