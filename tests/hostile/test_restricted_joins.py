"""Catalogue: restricted joins (join rules `restricted` / `knock_restricted`, v8+).

As the resident: a fake remote's user who is in an allowed room gets a make_join template
naming one of our users in join_authorised_via_users_server and a send_join answer with
our signature; one who is not, or a join we cannot authorise, or a hostile send_join
naming a user who cannot invite (or another server's user), is refused with the spec's
error codes and nothing is stored. As the joiner: a restricted join to a fake's room is
stored only with the resident's signature, and a server that cannot authorise is skipped.
"""
from __future__ import annotations

import pytest

from services.pdu.builder import sign_template
from shared.errors import MatrixError
from shared.events import compute_event_id, sign_event, verify_event_signature
from shared.room_versions import get_room_version
from tests.fakes.remote import FED, Reply, q
from tests.hostile.conftest import errcode


async def restricted_room(hs, allow_room: str | None, *, version="12", rule="restricted") -> str:
    room_id = await hs.api.create_room(hs.user("alice"), room_version=version, preset="private_chat")
    allow = [{"type": "m.room_membership", "room_id": allow_room}] if allow_room else []
    await hs.api.send(room_id, hs.user("alice"), "m.room.join_rules",
                      {"join_rule": rule, "allow": allow}, state_key="")
    return room_id


async def space_with(hs, remote, version="12"):
    """A public room of ours (the "space") that the fake's fred joins."""
    space = await hs.api.create_room(hs.user("alice"), room_version=version, preset="public_chat")
    await remote.join(hs, space, "fred")
    return space


async def make_join(remote, hs, room_id, localpart="fred"):
    return await remote.request(hs, "GET", f"{FED}/v1/make_join/{q(room_id)}/{q(remote.user(localpart))}",
                                query=[("ver", v) for v in ("10", "11", "12")])


async def signed_join(remote, template: dict, version: str) -> tuple[str, dict]:
    ev = sign_template(template, rv=get_room_version(version), server_name=remote.server_name, key=remote.key)
    return ev.pop("event_id"), ev


async def send_join(remote, hs, room_id, event_id, ev):
    return await remote.request(hs, "PUT", f"{FED}/v2/send_join/{q(room_id)}/{q(event_id)}", ev)


async def our_key(hs):
    from shared.crypto import SigningKey
    key = SigningKey.load(hs.settings.path("signing_key"))
    return {key.key_id: key.verify_key}


# ------------------------------------------------------------------ as the resident

@pytest.mark.parametrize("version,rule", [("12", "restricted"), ("10", "knock_restricted"),
                                          ("11", "restricted")])
async def test_member_of_allowed_room_joins_with_our_signature(hs, remote, version, rule):
    space = await space_with(hs, remote, version)
    room_id = await restricted_room(hs, space, version=version, rule=rule)
    r = await make_join(remote, hs, room_id)
    assert r.status_code == 200, r.text
    template = r.json()["event"]
    assert template["content"] == {"membership": "join",
                                   "join_authorised_via_users_server": hs.user("alice")}
    event_id, ev = await signed_join(remote, template, version)
    r = await send_join(remote, hs, room_id, event_id, ev)
    assert r.status_code == 200, r.text
    returned = r.json()["event"]
    rv = get_room_version(version)
    assert compute_event_id(returned, rv) == event_id
    assert verify_event_signature(returned, rv, hs.server_name, await our_key(hs))
    assert verify_event_signature(returned, rv, remote.server_name, {remote.key.key_id: remote.key.verify_key})
    await hs.wait_live(room_id, event_id)
    state = {(e["type"], e["state_key"]): e for e in await hs.api.state(room_id)}
    assert state[("m.room.member", remote.user("fred"))]["content"]["membership"] == "join"


async def test_user_in_no_allowed_room_is_forbidden(hs, remote):
    space = await space_with(hs, remote)
    room_id = await restricted_room(hs, space)
    r = await make_join(remote, hs, room_id, "stranger")   # joined to nothing of ours
    assert errcode(r) == (403, "M_FORBIDDEN"), r.text


async def test_allowed_room_we_do_not_hold_cannot_be_authorised(hs, remote):
    room_id = await restricted_room(hs, "!elsewhere:other.test")
    r = await make_join(remote, hs, room_id)
    assert errcode(r) == (400, "M_UNABLE_TO_AUTHORISE_JOIN"), r.text


async def test_no_local_user_can_invite_cannot_grant(hs, remote):
    space = await space_with(hs, remote, "11")
    room_id = await restricted_room(hs, space, version="11")
    pl = next(e for e in await hs.api.state(room_id) if e["type"] == "m.room.power_levels")
    await hs.api.send(room_id, hs.user("alice"), "m.room.power_levels",
                      dict(pl["content"], users={hs.user("alice"): 0}, invite=50), state_key="")
    r = await make_join(remote, hs, room_id)
    assert errcode(r) == (400, "M_UNABLE_TO_GRANT_JOIN"), r.text


async def _hostile_join(hs, remote, via: str, version="11"):
    space = await space_with(hs, remote, version)
    room_id = await restricted_room(hs, space, version=version)
    await hs.api.join(space, hs.user("bob"))
    await hs.api.join(room_id, hs.user("bob"))   # a local member (power 0) of the room
    r = await make_join(remote, hs, room_id)
    assert r.status_code == 200, r.text
    template = r.json()["event"]
    template["content"]["join_authorised_via_users_server"] = via
    event_id, ev = await signed_join(remote, template, version)
    return room_id, event_id, await send_join(remote, hs, room_id, event_id, ev)


async def test_send_join_naming_a_user_who_cannot_invite_is_refused(hs, remote):
    room_id, event_id, r = await _hostile_join(hs, remote, hs.user("bob"))
    pl = next(e for e in await hs.api.state(room_id) if e["type"] == "m.room.power_levels")
    assert pl["content"].get("invite", 0) == 50     # private_chat: invite needs 50, bob has 0
    assert errcode(r) == (403, "M_FORBIDDEN"), r.text
    assert await hs.records(event_id) == {}


async def test_send_join_naming_another_servers_user_is_refused(hs, remote):
    room_id, event_id, r = await _hostile_join(hs, remote, "@admin:other.test")
    assert errcode(r) == (400, "M_INVALID_PARAM"), r.text
    assert await hs.records(event_id) == {}


async def test_send_join_without_authoriser_is_refused(hs, remote):
    space = await space_with(hs, remote)
    room_id = await restricted_room(hs, space)
    template = (await make_join(remote, hs, room_id)).json()["event"]
    del template["content"]["join_authorised_via_users_server"]
    event_id, ev = await signed_join(remote, template, "12")
    r = await send_join(remote, hs, room_id, event_id, ev)
    assert errcode(r) == (403, "M_FORBIDDEN"), r.text
    assert await hs.records(event_id) == {}


async def test_local_user_joins_our_restricted_room(hs, remote):
    space = await hs.api.create_room(hs.user("alice"), room_version="12", preset="public_chat")
    room_id = await restricted_room(hs, space)
    with pytest.raises(MatrixError) as exc:
        await hs.api.join(room_id, hs.user("bob"))
    assert (exc.value.status, exc.value.errcode) == (403, "M_FORBIDDEN")
    await hs.api.join(space, hs.user("bob"))
    eid = await hs.api.join(room_id, hs.user("bob"))
    ev = (await hs.records(eid))[eid]["event"]
    assert ev["content"]["join_authorised_via_users_server"] == hs.user("alice")


# ------------------------------------------------------------------ as the joiner

def _restricted_fake_room(remote, version="12"):
    room = remote.create_room(version=version, join_rule="restricted")
    via = remote.user("creator")

    def template(t):
        t["content"]["join_authorised_via_users_server"] = via
        t["auth_events"] = sorted(set(t["auth_events"]) | {room.state[("m.room.member", via)]})

    return room, template


async def test_we_join_a_restricted_room_with_the_residents_signature(hs, remote):
    room, template = _restricted_fake_room(remote)

    def countersign(resp):
        resp["event"] = sign_event(dict(resp["event"]), remote.server_name, remote.key, room.rv)
    remote.serve_joins(room, template=template, response=countersign)
    eid = await hs.api.join(room.room_id, hs.user("alice"), servers=[remote.server_name])
    ev = (await hs.records(eid))[eid]["event"]
    assert ev["content"]["join_authorised_via_users_server"] == remote.user("creator")
    assert remote.server_name in ev["signatures"] and hs.server_name in ev["signatures"]


async def test_restricted_join_answer_without_residents_signature_is_refused(hs, remote):
    room, template = _restricted_fake_room(remote)
    remote.serve_joins(room, template=template)   # answers with our event, not countersigned
    with pytest.raises(MatrixError) as exc:
        await hs.api.join(room.room_id, hs.user("alice"), servers=[remote.server_name])
    assert exc.value.status == 502
    assert await hs.tx.get_room(room.room_id) is None


async def test_server_unable_to_authorise_is_skipped(world, hs, remote):
    room, template = _restricted_fake_room(remote)

    def countersign(resp):
        resp["event"] = sign_event(dict(resp["event"]), remote.server_name, remote.key, room.rv)
    remote.serve_joins(room, template=template, response=countersign)
    other = await world.remote("other.test:8448")
    other.route("GET", FED + "/v1/make_join/{room_id}/{user_id}",
                lambda req: Reply(400, {"errcode": "M_UNABLE_TO_AUTHORISE_JOIN", "error": "not in the space"}))
    eid = await hs.api.join(room.room_id, hs.user("alice"), servers=[other.server_name, remote.server_name])
    assert len(other.calls("GET", FED + "/v1/make_join/{room_id}/{user_id}")) == 1
    assert eid in (await hs.records(eid))


async def test_all_servers_unable_to_authorise_passes_the_code_on(world, hs, remote):
    remote.route("GET", FED + "/v1/make_join/{room_id}/{user_id}",
                 lambda req: Reply(400, {"errcode": "M_UNABLE_TO_GRANT_JOIN", "error": "no inviter"}))
    with pytest.raises(MatrixError) as exc:
        await hs.api.join("!room:remote.test:8448", hs.user("alice"), servers=[remote.server_name])
    assert (exc.value.status, exc.value.errcode) == (400, "M_UNABLE_TO_GRANT_JOIN")
