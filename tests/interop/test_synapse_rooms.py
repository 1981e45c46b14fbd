"""Federation with a real Synapse in both directions: joins, messages both ways, invites,
state agreement, leaves. One Synapse and one fedstack homeserver for the session."""
from __future__ import annotations

import secrets

import pytest

from tests.interop.fedstack_peer import (FedstackPeer, bodies, membership, synapse_state,
                                         synapse_user, wait_synapse_bodies, wait_synapse_invite,
                                         wait_synapse_state)
from tests.interop.synapse_peer import SynapsePeer

# the state both servers must agree on once the joins are done
COMPARED = ("m.room.create", "m.room.member", "m.room.power_levels", "m.room.join_rules",
            "m.room.name", "m.room.history_visibility")


def tag() -> str:
    return secrets.token_hex(3)


def assert_state_agrees(fedstack: FedstackPeer, synapse: SynapsePeer, token: str, room: str) -> None:
    ours = {k: e["event_id"] for k, e in fedstack.state(room).items() if k[0] in COMPARED}
    theirs = {k: e["event_id"] for k, e in synapse_state(synapse, token, room).items()
              if k[0] in COMPARED}
    assert ours == theirs


@pytest.mark.parametrize("version", ["12", "10", "11"])
def test_we_join_a_synapse_room(synapse: SynapsePeer, fedstack_on_engine: FedstackPeer, version: str):
    """Synapse creates a public room; our user joins it; messages flow both ways; the two
    servers agree on the state; our user leaves and Synapse sees it."""
    fedstack = fedstack_on_engine      # on each database engine (tests/interop/conftest.py)
    t = tag()
    alice, alice_tok = synapse_user(synapse, "ix-alice")
    room = synapse.create_room(alice_tok, room_version=version, name=f"syn-{version}-{t}")
    bob = fedstack.user(f"bob{t}")

    fedstack.join(room, bob, [synapse.server_name])
    sid = fedstack.subscribe(room)
    wait_synapse_state(synapse, alice_tok, room, lambda s: membership(s, bob) == "join")

    synapse.send_message(alice_tok, room, f"from-synapse-{t}")
    got = fedstack.wait_delivered(sid, lambda evs: f"from-synapse-{t}" in bodies(evs))
    assert [e["sender"] for e in got if e["content"].get("body") == f"from-synapse-{t}"] == [alice]

    fedstack.send(room, bob, f"from-fedstack-{t}")
    wait_synapse_bodies(synapse, alice_tok, room, lambda b: f"from-fedstack-{t}" in b)

    st = fedstack.state(room)
    assert st[("m.room.create", "")]["content"]["room_version"] == version
    assert st[("m.room.name", "")]["content"]["name"] == f"syn-{version}-{t}"
    assert membership(st, alice) == "join" and membership(st, bob) == "join"
    assert_state_agrees(fedstack, synapse, alice_tok, room)

    fedstack.leave(room, bob)
    wait_synapse_state(synapse, alice_tok, room, lambda s: membership(s, bob) == "leave")
    assert membership(fedstack.state(room), bob) == "leave"
    assert_state_agrees(fedstack, synapse, alice_tok, room)


def test_we_join_by_invite_from_synapse(synapse: SynapsePeer, fedstack: FedstackPeer):
    """A private Synapse room: its user invites ours, ours joins through the invite."""
    t = tag()
    alice, alice_tok = synapse_user(synapse, "ix-alice")
    bob = fedstack.user(f"bob{t}")
    room = synapse.create_room(alice_tok, preset="private_chat", invite=[bob])
    fedstack.join(room, bob, [synapse.server_name])
    wait_synapse_state(synapse, alice_tok, room, lambda s: membership(s, bob) == "join")
    sid = fedstack.subscribe(room)
    synapse.send_message(alice_tok, room, f"private-{t}")
    fedstack.wait_delivered(sid, lambda evs: f"private-{t}" in bodies(evs))
    fedstack.send(room, bob, f"private-reply-{t}")
    wait_synapse_bodies(synapse, alice_tok, room, lambda b: f"private-reply-{t}" in b)
    assert_state_agrees(fedstack, synapse, alice_tok, room)


@pytest.mark.parametrize("version", ["12", "10"])
def test_synapse_joins_our_room(synapse: SynapsePeer, fedstack_on_engine: FedstackPeer, version: str):
    """Our user creates a room; a Synapse user joins it by room ID through us; messages
    flow both ways; our invite reaches another Synapse user; state agrees; the Synapse
    user leaves and we see it."""
    fedstack = fedstack_on_engine      # on each database engine (tests/interop/conftest.py)
    t = tag()
    carol = fedstack.user(f"carol{t}")
    room = fedstack.create_room(carol, version=version, name=f"ours-{version}-{t}")
    sid = fedstack.subscribe(room)
    dave, dave_tok = synapse_user(synapse, "ix-dave")
    erin, erin_tok = synapse_user(synapse, "ix-erin")

    assert synapse.join_room(dave_tok, room, server_name=fedstack.server_name) == room
    fedstack.wait_state(room, lambda s: membership(s, dave) == "join")

    fedstack.send(room, carol, f"ours-{t}")
    wait_synapse_bodies(synapse, dave_tok, room, lambda b: f"ours-{t}" in b)
    synapse.send_message(dave_tok, room, f"theirs-{t}")
    got = fedstack.wait_delivered(sid, lambda evs: f"theirs-{t}" in bodies(evs))
    assert bodies(got) == [f"ours-{t}", f"theirs-{t}"]

    fedstack.invite(room, carol, erin)
    inv = wait_synapse_invite(synapse, erin_tok, room)
    inv_state = {(e["type"], e.get("state_key")): e for e in inv["invite_state"]["events"]}
    assert inv_state[("m.room.member", erin)]["content"]["membership"] == "invite"
    assert inv_state[("m.room.name", "")]["content"]["name"] == f"ours-{version}-{t}"
    # the invited Synapse user can accept (a local join on Synapse: it is in the room)
    synapse.join_room(erin_tok, room)
    fedstack.wait_state(room, lambda s: membership(s, erin) == "join")

    st = fedstack.state(room)
    assert st[("m.room.create", "")]["content"]["room_version"] == version
    assert_state_agrees(fedstack, synapse, dave_tok, room)

    synapse.leave(dave_tok, room)
    fedstack.wait_state(room, lambda s: membership(s, dave) == "leave")
    wait_synapse_state(synapse, erin_tok, room, lambda s: membership(s, dave) == "leave")
    assert_state_agrees(fedstack, synapse, erin_tok, room)
