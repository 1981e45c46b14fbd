"""Finding and entering rooms with a real Synapse (issue #14): aliases, profiles, the
public room list, spaces, knocking and restricted joins, in both directions. One Synapse
and one fedstack homeserver for the session (tests/interop/conftest.py)."""
from __future__ import annotations

import secrets
import time
from urllib.parse import quote

from tests.interop.fedstack_peer import (FedstackPeer, membership, synapse_state, synapse_user,
                                         wait_synapse_invite, wait_synapse_state)
from tests.interop.synapse_peer import SynapseAPIError, SynapsePeer


def tag() -> str:
    return secrets.token_hex(3)


def q(s: str) -> str:
    return quote(s, safe="")


def eventually(fn, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = fn()
            if value:
                return value
        except (SynapseAPIError, AssertionError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} never held ({last})")
        time.sleep(0.3)


def our_room(fedstack: FedstackPeer, creator: str, **kw) -> str:
    body = {"creator": creator, "room_version": "12", "preset": "public_chat", **kw}
    return fedstack.api("POST", "/v1/rooms", json=body)["room_id"]


def test_synapse_resolves_our_alias_joins_by_it_and_sees_our_profile(synapse: SynapsePeer,
                                                                     fedstack: FedstackPeer):
    t = tag()
    carol = fedstack.user(f"carol{t}")
    fedstack.api("PUT", f"/v1/profile/{q(carol)}", json={"displayname": f"Carol {t}",
                                                         "avatar_url": "mxc://fedstack/carol"})
    room = our_room(fedstack, carol, room_alias_name=f"square{t}", name=f"Square {t}")
    alias = f"#square{t}:{fedstack.server_name}"
    dave, dave_tok = synapse_user(synapse, "ix-dir-dave")
    resolved = synapse.request("GET", f"/_matrix/client/v3/directory/room/{q(alias)}", token=dave_tok)
    assert resolved["room_id"] == room and fedstack.server_name in resolved["servers"]
    assert synapse.join_room(dave_tok, alias) == room
    fedstack.wait_state(room, lambda s: membership(s, dave) == "join")
    profile = synapse.request("GET", f"/_matrix/client/v3/profile/{q(carol)}", token=dave_tok)
    assert profile == {"displayname": f"Carol {t}", "avatar_url": "mxc://fedstack/carol"}
    st = synapse_state(synapse, dave_tok, room)
    assert st[("m.room.member", carol)]["content"]["displayname"] == f"Carol {t}"
    assert st[("m.room.canonical_alias", "")]["content"]["alias"] == alias


def test_synapse_lists_our_public_rooms(synapse: SynapsePeer, fedstack: FedstackPeer):
    t = tag()
    carol = fedstack.user(f"carol{t}")
    room = our_room(fedstack, carol, name=f"Listed {t}", visibility="public")
    _dave, dave_tok = synapse_user(synapse, "ix-dir-dave")
    listed = synapse.request("POST", "/_matrix/client/v3/publicRooms", token=dave_tok,
                             params={"server": fedstack.server_name},
                             json={"filter": {"generic_search_term": f"Listed {t}"}})
    [entry] = listed["chunk"]
    assert entry["room_id"] == room and entry["name"] == f"Listed {t}"
    assert entry["num_joined_members"] == 1 and entry["join_rule"] == "public"


def test_synapse_views_our_space_and_joins_a_child(synapse: SynapsePeer, fedstack: FedstackPeer):
    t = tag()
    carol = fedstack.user(f"carol{t}")
    space = our_room(fedstack, carol, name=f"Space {t}", room_type="m.space")
    child = our_room(fedstack, carol, name=f"Child {t}")
    fedstack.set_state(space, carol, "m.space.child", {"via": [fedstack.server_name], "suggested": True},
                       state_key=child)
    dave, dave_tok = synapse_user(synapse, "ix-dir-dave")
    synapse.join_room(dave_tok, space, server_name=fedstack.server_name)

    def hierarchy():
        h = synapse.request("GET", f"/_matrix/client/v1/rooms/{q(space)}/hierarchy", token=dave_tok)
        return h if child in [r["room_id"] for r in h["rooms"]] else None
    h = eventually(hierarchy, what="the child in Synapse's view of our space")
    entry = next(r for r in h["rooms"] if r["room_id"] == child)
    assert entry["name"] == f"Child {t}"
    assert synapse.join_room(dave_tok, child, server_name=fedstack.server_name) == child
    fedstack.wait_state(child, lambda s: membership(s, dave) == "join")


def test_synapse_knocks_on_our_room_and_our_admin_lets_it_in(synapse: SynapsePeer, fedstack: FedstackPeer):
    t = tag()
    carol = fedstack.user(f"carol{t}")
    room = our_room(fedstack, carol, preset="private_chat", name=f"Knock {t}")
    fedstack.set_state(room, carol, "m.room.join_rules", {"join_rule": "knock"})
    dave, dave_tok = synapse_user(synapse, "ix-dir-dave")
    synapse.request("POST", f"/_matrix/client/v3/knock/{q(room)}", token=dave_tok,
                    params={"via": fedstack.server_name}, json={"reason": "let me in"})
    st = fedstack.wait_state(room, lambda s: membership(s, dave) == "knock")
    assert st[("m.room.member", dave)]["content"].get("reason") == "let me in"
    fedstack.invite(room, carol, dave)
    wait_synapse_invite(synapse, dave_tok, room)
    synapse.join_room(dave_tok, room, server_name=fedstack.server_name)
    fedstack.wait_state(room, lambda s: membership(s, dave) == "join")


def test_we_knock_on_a_synapse_room_and_its_admin_invites_us(synapse: SynapsePeer, fedstack: FedstackPeer):
    t = tag()
    alice, alice_tok = synapse_user(synapse, "ix-dir-alice")
    room = synapse.create_room(alice_tok, preset="private_chat", name=f"syn-knock-{t}")
    synapse.send_state(alice_tok, room, "m.room.join_rules", "", {"join_rule": "knock"})
    bob = fedstack.user(f"bob{t}")
    fedstack.api("POST", f"/v1/rooms/{room}/knock",
                 json={"user_id": bob, "servers": [synapse.server_name], "reason": "hello"})
    wait_synapse_state(synapse, alice_tok, room, lambda s: membership(s, bob) == "knock")
    synapse.invite(alice_tok, room, bob)
    eventually(lambda: [e for e in fedstack.api("GET", f"/v1/rooms/{room}/events")["events"]
                        if e.get("type") == "m.room.member" and e.get("state_key") == bob
                        and e["content"].get("membership") == "invite"], what="our invite")
    fedstack.join(room, bob, [synapse.server_name])
    wait_synapse_state(synapse, alice_tok, room, lambda s: membership(s, bob) == "join")


def test_we_join_a_synapse_restricted_room_through_its_space(synapse: SynapsePeer, fedstack: FedstackPeer):
    t = tag()
    alice, alice_tok = synapse_user(synapse, "ix-dir-alice")
    space = synapse.create_room(alice_tok, name=f"syn-space-{t}",
                                extra={"creation_content": {"type": "m.space"}})
    room = synapse.create_room(alice_tok, preset="private_chat", name=f"syn-restricted-{t}", extra={
        "initial_state": [{"type": "m.room.join_rules", "state_key": "",
                           "content": {"join_rule": "restricted",
                                       "allow": [{"type": "m.room_membership", "room_id": space}]}}]})
    bob = fedstack.user(f"bob{t}")
    fedstack.join(space, bob, [synapse.server_name])
    wait_synapse_state(synapse, alice_tok, space, lambda s: membership(s, bob) == "join")
    eid = fedstack.join(room, bob, [synapse.server_name])
    st = wait_synapse_state(synapse, alice_tok, room, lambda s: membership(s, bob) == "join")
    assert st[("m.room.member", bob)]["event_id"] == eid
    assert st[("m.room.member", bob)]["content"]["join_authorised_via_users_server"] == alice


def test_synapse_joins_our_restricted_room_through_our_space(synapse: SynapsePeer, fedstack: FedstackPeer):
    t = tag()
    carol = fedstack.user(f"carol{t}")
    space = our_room(fedstack, carol, name=f"Space {t}", room_type="m.space")
    room = our_room(fedstack, carol, preset="private_chat", name=f"Restricted {t}")
    fedstack.set_state(room, carol, "m.room.join_rules", {
        "join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]})
    dave, dave_tok = synapse_user(synapse, "ix-dir-dave")
    try:
        synapse.join_room(dave_tok, room, server_name=fedstack.server_name)
        raise AssertionError("joined a restricted room without being in its space")
    except SynapseAPIError as exc:
        assert exc.status == 403, exc
    synapse.join_room(dave_tok, space, server_name=fedstack.server_name)
    fedstack.wait_state(space, lambda s: membership(s, dave) == "join")
    assert synapse.join_room(dave_tok, room, server_name=fedstack.server_name) == room
    st = fedstack.wait_state(room, lambda s: membership(s, dave) == "join")
    assert st[("m.room.member", dave)]["content"]["join_authorised_via_users_server"] == carol
