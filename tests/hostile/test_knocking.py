"""Catalogue: knocking (room versions 7+, join rules `knock` / `knock_restricted`).

As the resident: a fake remote's user knocks on our knock room through make_knock /
send_knock, is answered the room's stripped state, and the knock reaches the room's
subscriptions; our admin answers with an invite (countersigned by the fake) or a kick. A
knock on a room that does not allow it, or by a server the room's ACL denies, is refused.
As the knocker: our user knocks on a fake's room; the knock is stored with the stripped
state it was answered, and a refusal is passed on.
"""
from __future__ import annotations

import pytest

from services.pdu.builder import sign_template
from shared.errors import MatrixError
from shared.events import compute_event_id, sign_event
from shared.room_versions import get_room_version
from tests.fakes.remote import FED, Reply, q
from tests.hostile.conftest import errcode, subscribe, wait_delivered


async def knock_room(hs, version="12", rule="knock") -> str:
    room_id = await hs.api.create_room(hs.user("alice"), room_version=version, preset="private_chat")
    await hs.api.send(room_id, hs.user("alice"), "m.room.join_rules", {"join_rule": rule}, state_key="")
    await hs.api.send(room_id, hs.user("alice"), "m.room.name", {"name": "knock here"}, state_key="")
    return room_id


async def make_knock(remote, hs, room_id, localpart="fred", versions=("10", "11", "12")):
    return await remote.request(hs, "GET", f"{FED}/v1/make_knock/{q(room_id)}/{q(remote.user(localpart))}",
                                query=[("ver", v) for v in versions])


async def knock(remote, hs, room_id, localpart="fred"):
    r = await make_knock(remote, hs, room_id, localpart)
    assert r.status_code == 200, r.text
    made = r.json()
    rv = get_room_version(made["room_version"])
    template = dict(made["event"], content=dict(made["event"]["content"], reason="please"))
    ev = sign_template(template, rv=rv, server_name=remote.server_name, key=remote.key)
    eid = ev.pop("event_id")
    r = await remote.request(hs, "PUT", f"{FED}/v1/send_knock/{q(room_id)}/{q(eid)}", ev)
    return eid, r


@pytest.mark.parametrize("version,rule", [("12", "knock"), ("10", "knock_restricted")])
async def test_remote_knock_is_answered_stripped_state_and_seen_by_admins(hs, remote, version, rule):
    room_id = await knock_room(hs, version, rule)
    sid = await subscribe(hs, room_id)
    remote.handle_transactions()
    eid, r = await knock(remote, hs, room_id)
    assert r.status_code == 200, r.text
    stripped = r.json()["knock_room_state"]
    types = {e["type"] for e in stripped}
    assert {"m.room.create", "m.room.join_rules", "m.room.name"} <= types
    assert "m.room.power_levels" not in types and "m.room.member" not in types
    got = await wait_delivered(hs, sid, eid)
    assert eid in got
    state = {(e["type"], e["state_key"]): e for e in await hs.api.state(room_id)}
    member = state[("m.room.member", remote.user("fred"))]
    assert member["content"] == {"membership": "knock", "reason": "please"}


async def test_admin_answers_a_knock_with_invite(hs, remote):
    room_id = await knock_room(hs)
    remote.handle_transactions()

    def countersign(req):
        body = req.json
        return {"event": sign_event(dict(body["event"]), remote.server_name, remote.key,
                                    get_room_version(body["room_version"]))}
    remote.route("PUT", FED + "/v2/invite/{room_id}/{event_id}", countersign)
    eid, r = await knock(remote, hs, room_id)
    assert r.status_code == 200, r.text
    await hs.wait_live(room_id, eid)
    invite_id = await hs.api.invite(room_id, hs.user("alice"), remote.user("fred"))
    state = {(e["type"], e["state_key"]): e for e in await hs.api.state(room_id)}
    assert state[("m.room.member", remote.user("fred"))]["event_id"] == invite_id
    assert state[("m.room.member", remote.user("fred"))]["content"]["membership"] == "invite"


async def test_admin_answers_a_knock_with_kick(hs, remote):
    room_id = await knock_room(hs)
    remote.handle_transactions()
    eid, r = await knock(remote, hs, room_id)
    assert r.status_code == 200, r.text
    await hs.wait_live(room_id, eid)
    await hs.api.moderate("kick", room_id, hs.user("alice"), remote.user("fred"), reason="no")
    state = {(e["type"], e["state_key"]): e for e in await hs.api.state(room_id)}
    assert state[("m.room.member", remote.user("fred"))]["content"]["membership"] == "leave"


async def test_knock_on_a_room_that_does_not_allow_it_is_forbidden(hs, remote):
    room_id = await hs.api.create_room(hs.user("alice"), room_version="12", preset="public_chat")
    r = await make_knock(remote, hs, room_id)
    assert errcode(r) == (403, "M_FORBIDDEN"), r.text


async def test_make_knock_for_unsupported_versions_is_refused(hs, remote):
    room_id = await knock_room(hs)
    r = await make_knock(remote, hs, room_id, versions=("9",))
    assert errcode(r) == (400, "M_INCOMPATIBLE_ROOM_VERSION"), r.text


async def test_send_knock_of_a_join_is_refused_nothing_stored(hs, remote):
    room_id = await knock_room(hs)
    r = await make_knock(remote, hs, room_id)
    made = r.json()
    rv = get_room_version(made["room_version"])
    template = dict(made["event"], content={"membership": "join"})
    ev = sign_template(template, rv=rv, server_name=remote.server_name, key=remote.key)
    eid = ev.pop("event_id")
    r = await remote.request(hs, "PUT", f"{FED}/v1/send_knock/{q(room_id)}/{q(eid)}", ev)
    assert errcode(r) == (400, "M_INVALID_PARAM"), r.text
    assert await hs.records(eid) == {}


async def test_knock_by_a_denied_server_is_forbidden(hs, remote):
    room_id = await knock_room(hs)
    await hs.api.send(room_id, hs.user("alice"), "m.room.server_acl",
                      {"allow": ["*"], "deny": ["remote.test"]}, state_key="")
    r = await make_knock(remote, hs, room_id)
    assert errcode(r) == (403, "M_FORBIDDEN"), r.text


# ------------------------------------------------------------------ as the knocker

def serve_knocks(remote, room):
    def make(req):
        if req.params["room_id"] != room.room_id:
            return Reply(404, {"errcode": "M_NOT_FOUND", "error": "unknown room"})
        return {"room_version": room.version, "event": remote._template(room, req.params["user_id"], "knock")}

    def send(req):
        room.add(req.json)
        return {"knock_room_state": [room.events[room.state[("m.room.create", "")]],
                                     room.events[room.state[("m.room.join_rules", "")]]]}
    remote.route("GET", FED + "/v1/make_knock/{room_id}/{user_id}", make)
    remote.route("PUT", FED + "/v1/send_knock/{room_id}/{event_id}", send)


async def test_we_knock_on_a_remote_room(hs, remote):
    room = remote.create_room(version="12", join_rule="knock")
    serve_knocks(remote, room)
    eid = await hs.api.knock(room.room_id, hs.user("alice"), servers=[remote.server_name], reason="hi")
    [req] = remote.calls("PUT", FED + "/v1/send_knock/{room_id}/{event_id}")
    assert compute_event_id(req.json, room.rv) == eid
    assert req.json["content"] == {"membership": "knock", "reason": "hi"}
    assert hs.server_name in req.json["signatures"]
    rec = (await hs.records(eid))[eid]
    assert [e["type"] for e in rec["event"]["unsigned"]["knock_room_state"]] == \
        ["m.room.create", "m.room.join_rules"]
    assert eid in await hs.live_ids(room.room_id)


async def test_our_knock_refused_by_the_resident(hs, remote):
    remote.route("GET", FED + "/v1/make_knock/{room_id}/{user_id}",
                 lambda req: Reply(403, {"errcode": "M_FORBIDDEN", "error": "no knocking here"}))
    with pytest.raises(MatrixError) as exc:
        await hs.api.knock("!r:remote.test:8448", hs.user("alice"), servers=[remote.server_name])
    assert (exc.value.status, exc.value.errcode) == (403, "M_FORBIDDEN")
    assert await hs.tx.get_room("!r:remote.test:8448") is None


async def test_our_knock_with_a_template_of_another_membership_is_refused(hs, remote):
    room = remote.create_room(version="12", join_rule="knock")
    remote.route("GET", FED + "/v1/make_knock/{room_id}/{user_id}",
                 lambda req: {"room_version": "12", "event": remote._template(room, req.params["user_id"], "join")})
    with pytest.raises(MatrixError) as exc:
        await hs.api.knock(room.room_id, hs.user("alice"), servers=[remote.server_name])
    assert exc.value.status == 502   # and no send_knock: the strict fake fails on any at teardown
    assert await hs.tx.get_room(room.room_id) is None


async def test_local_knock_on_our_room(hs):
    room_id = await knock_room(hs)
    eid = await hs.api.knock(room_id, hs.user("bob"))
    state = {(e["type"], e["state_key"]): e for e in await hs.api.state(room_id)}
    assert state[("m.room.member", hs.user("bob"))]["event_id"] == eid
