"""Catalogue: room aliases and the room directory.

A fake remote resolves our aliases (/query/directory) and lists our public rooms
(publicRooms GET with paging, POST with a search term); our domain API makes aliases
(also at room creation, with m.room.canonical_alias), refuses aliases of other servers
and taken ones, resolves and joins by a remote alias, and lists a remote server's rooms.
"""
from __future__ import annotations

import pytest

from shared.errors import MatrixError
from tests.fakes.remote import FED, Reply
from tests.hostile.conftest import errcode

DIRECTORY = FED + "/v1/query/directory"


def alias(hs, local: str) -> str:
    return f"#{local}:{hs.server_name}"


async def query_alias(remote, hs, room_alias: str | None):
    return await remote.request(hs, "GET", DIRECTORY, query=[("room_alias", room_alias)] if room_alias else None)


async def test_our_alias_resolves_over_federation(hs, remote):
    room_id = await hs.api.create_room(hs.user("alice"), room_version="12", preset="public_chat")
    await remote.join(hs, room_id, "fred")
    await hs.api.put_alias(alias(hs, "lobby"), room_id)
    r = await query_alias(remote, hs, alias(hs, "lobby"))
    assert r.status_code == 200, r.text
    assert r.json() == {"room_id": room_id, "servers": [hs.server_name, remote.server_name]}
    assert errcode(await query_alias(remote, hs, alias(hs, "nope"))) == (404, "M_NOT_FOUND")
    assert errcode(await query_alias(remote, hs, "#lobby:other.test")) == (404, "M_NOT_FOUND")
    assert errcode(await query_alias(remote, hs, None)) == (400, "M_MISSING_PARAM")


async def test_aliases_of_another_server_and_taken_ones_are_refused(hs):
    room_id = await hs.api.create_room(hs.user("alice"), room_version="12")
    other = await hs.api.create_room(hs.user("alice"), room_version="12")
    for bad in ("#x:remote.test:8448", "#x:ours.test", "nohash:ours.test:8448"):
        with pytest.raises(MatrixError) as exc:
            await hs.api.put_alias(bad, room_id)
        assert exc.value.status == 400, bad
    await hs.api.put_alias(alias(hs, "taken"), room_id)
    with pytest.raises(MatrixError) as exc:
        await hs.api.put_alias(alias(hs, "taken"), other)
    assert exc.value.status == 409
    assert (await hs.api.resolve_alias(alias(hs, "taken")))["room_id"] == room_id
    with pytest.raises(MatrixError) as exc:
        await hs.api.put_alias(alias(hs, "ghost"), "!unknown:ours.test:8448")
    assert exc.value.status == 404
    await hs.api.delete_alias(alias(hs, "taken"))
    with pytest.raises(MatrixError) as exc:
        await hs.api.resolve_alias(alias(hs, "taken"))
    assert (exc.value.status, exc.value.errcode) == (404, "M_NOT_FOUND")


async def test_create_room_with_alias_and_visibility(hs, remote):
    room_id = (await hs.api.call("POST", "/v1/rooms", {
        "creator": hs.user("alice"), "room_alias_name": "town", "visibility": "public",
        "preset": "public_chat", "name": "Town square"}))["room_id"]
    state = {(e["type"], e["state_key"]): e for e in await hs.api.state(room_id)}
    assert state[("m.room.canonical_alias", "")]["content"] == {"alias": alias(hs, "town")}
    assert (await hs.api.resolve_alias(alias(hs, "town")))["room_id"] == room_id
    with pytest.raises(MatrixError) as exc:
        await hs.api.call("POST", "/v1/rooms", {"creator": hs.user("alice"), "room_alias_name": "town"})
    assert (exc.value.status, exc.value.errcode) == (400, "M_ROOM_IN_USE")
    r = await remote.request(hs, "GET", FED + "/v1/publicRooms")
    assert r.status_code == 200, r.text
    [entry] = r.json()["chunk"]
    assert entry == {"room_id": room_id, "num_joined_members": 1, "world_readable": False,
                     "guest_can_join": False, "join_rule": "public", "name": "Town square",
                     "canonical_alias": alias(hs, "town")}


async def test_join_by_alias_local_and_remote(hs, remote):
    room_id = await hs.api.create_room(hs.user("alice"), room_version="12", preset="public_chat")
    await hs.api.put_alias(alias(hs, "here"), room_id)
    eid = await hs.api.join(alias(hs, "here"), hs.user("bob"))
    assert eid in await hs.live_ids(room_id)
    froom = remote.create_room(version="12")
    remote.serve_joins(froom)
    remote_alias = f"#there:{remote.server_name}"
    remote.route("GET", DIRECTORY, lambda req: {"room_id": froom.room_id, "servers": [remote.server_name]}
                 if dict(req.query).get("room_alias") == remote_alias
                 else Reply(404, {"errcode": "M_NOT_FOUND", "error": "no"}))
    assert await hs.api.resolve_alias(remote_alias) == {"room_id": froom.room_id, "servers": [remote.server_name]}
    jid = await hs.api.join(remote_alias, hs.user("alice"))
    assert (await hs.records(jid))[jid]["room_id"] == froom.room_id
    with pytest.raises(MatrixError) as exc:
        await hs.api.join(f"#missing:{remote.server_name}", hs.user("alice"))
    assert (exc.value.status, exc.value.errcode) == (404, "M_NOT_FOUND")


async def _published(hs, names):
    rooms = []
    for n in names:
        rid = await hs.api.create_room(hs.user("alice"), room_version="12", preset="public_chat", name=n)
        await hs.api.set_visibility(rid, "public")
        rooms.append(rid)
    return rooms


async def test_public_rooms_paging_and_search(hs, remote):
    rooms = await _published(hs, ["Apples", "Bananas", "Cherries"])
    hidden = await hs.api.create_room(hs.user("alice"), room_version="12", name="Hidden")
    seen, since = [], None
    for _ in range(3):
        r = await remote.request(hs, "GET", FED + "/v1/publicRooms",
                                 query=[("limit", "1")] + ([("since", since)] if since else []))
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["chunk"]) == 1 and body["total_room_count_estimate"] == 3
        seen.append(body["chunk"][0]["room_id"])
        since = body.get("next_batch")
    assert sorted(seen) == sorted(rooms) and hidden not in seen and since is None
    r = await remote.request(hs, "POST", FED + "/v1/publicRooms", {"filter": {"generic_search_term": "nan"}})
    assert [e["name"] for e in r.json()["chunk"]] == ["Bananas"]
    assert errcode(await remote.request(hs, "GET", FED + "/v1/publicRooms", query=[("since", "bogus")])) == \
        (400, "M_INVALID_PARAM")
    assert errcode(await remote.request(hs, "POST", FED + "/v1/publicRooms",
                                        {"filter": {"generic_search_term": 5}})) == (400, "M_BAD_JSON")
    await hs.api.set_visibility(rooms[0], "private")
    r = await remote.request(hs, "GET", FED + "/v1/publicRooms")
    assert rooms[0] not in [e["room_id"] for e in r.json()["chunk"]]
    ours = await hs.api.public_rooms(search="cherr")
    assert [e["room_id"] for e in ours["chunk"]] == [rooms[2]]


async def test_public_rooms_hide_rooms_whose_acl_denies_the_asker(hs, remote):
    [room_id] = await _published(hs, ["Guarded"])
    await hs.api.send(room_id, hs.user("alice"), "m.room.server_acl",
                      {"allow": ["*"], "deny": ["remote.test"]}, state_key="")
    r = await remote.request(hs, "GET", FED + "/v1/publicRooms")
    assert r.json()["chunk"] == []


async def test_visibility_of_unknown_room_is_404(hs):
    with pytest.raises(MatrixError) as exc:
        await hs.api.set_visibility("!nope:ours.test:8448", "public")
    assert exc.value.status == 404


async def test_remote_public_rooms_listed_through_its_server(hs, remote):
    remote.route("GET", FED + "/v1/publicRooms", lambda req: {
        "chunk": [{"room_id": "!r:remote.test:8448", "num_joined_members": 3, "world_readable": True,
                   "guest_can_join": False}, "junk"], "next_batch": "n1", "total_room_count_estimate": 9})
    got = await hs.api.public_rooms(server=remote.server_name, limit=5)
    assert got["chunk"] == [{"room_id": "!r:remote.test:8448", "num_joined_members": 3,
                             "world_readable": True, "guest_can_join": False}]
    assert got["next_batch"] == "n1" and got["total_room_count_estimate"] == 9
    [req] = remote.calls("GET", FED + "/v1/publicRooms")
    assert dict(req.query) == {"limit": "5"}
