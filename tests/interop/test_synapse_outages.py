"""Outages with a real Synapse: either side stopped while the other sends 100 messages.
Everything arrives, in order, once; a restarted fedstack pokes its peers so a backed-off
Synapse resumes at once."""
from __future__ import annotations

import secrets
import time

from tests.interop.fedstack_peer import (FedstackPeer, bodies, synapse_user, wait_backed_off,
                                         wait_synapse_bodies)
from tests.interop.synapse_peer import SynapsePeer

N = 100


def tag() -> str:
    return secrets.token_hex(3)


def test_synapse_stopped_while_we_send(synapse: SynapsePeer, fedstack: FedstackPeer):
    t = tag()
    carol = fedstack.user(f"carol{t}")
    room = fedstack.create_room(carol)
    dave, dave_tok = synapse_user(synapse, "ix-dave")
    synapse.join_room(dave_tok, room, server_name=fedstack.server_name)
    fedstack.send(room, carol, f"before-{t}")
    wait_synapse_bodies(synapse, dave_tok, room, lambda b: f"before-{t}" in b)

    synapse.stop()
    try:
        sent = [f"out-{t}-{i}" for i in range(N)]
        for b in sent:
            fedstack.send(room, carol, b)
    finally:
        synapse.restart()
    got = wait_synapse_bodies(synapse, dave_tok, room,
                              lambda b: sum(x.startswith(f"out-{t}") for x in b) >= N, timeout=90)
    mine = [b for b in got if b.startswith(f"out-{t}")]
    assert mine == sent, "out of order or duplicated"


def test_our_stack_stopped_while_synapse_sends(synapse: SynapsePeer, fedstack: FedstackPeer):
    t = tag()
    alice, alice_tok = synapse_user(synapse, "ix-alice")
    room = synapse.create_room(alice_tok)
    bob = fedstack.user(f"bob{t}")
    fedstack.join(room, bob, [synapse.server_name])
    sid = fedstack.subscribe(room)
    synapse.send_message(alice_tok, room, f"before-{t}")
    fedstack.wait_delivered(sid, lambda evs: f"before-{t}" in bodies(evs))

    marked_up = f"Marking origin '{fedstack.server_name}' as up"
    before = len(synapse.grep_log(marked_up))
    fedstack.stop()
    try:
        sent = [f"in-{t}-{i}" for i in range(N)]
        for b in sent:
            synapse.send_message(alice_tok, room, b)
        down = wait_backed_off(synapse, fedstack.server_name)
    finally:
        fedstack.restart_all()
    started = time.monotonic()
    # our start-up poke (a signed request) makes Synapse mark us up and resume at once,
    # well before its own retry timer would fire
    while synapse.destination(fedstack.server_name).get("retry_last_ts"):
        assert time.monotonic() - started < 5, f"Synapse still backing off: {down}"
        time.sleep(0.1)
    assert len(synapse.grep_log(marked_up)) > before
    got = fedstack.wait_delivered(sid, lambda evs: sum(b.startswith(f"in-{t}") for b in bodies(evs)) >= N,
                                  timeout=90)
    assert bodies(got) == [f"before-{t}"] + sent
    # and the room keeps working both ways
    fedstack.send(room, bob, f"after-{t}")
    wait_synapse_bodies(synapse, alice_tok, room, lambda b: f"after-{t}" in b)
