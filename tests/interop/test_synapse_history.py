"""History with a real Synapse: backfill both ways, and gaps filled with get_missing_events
both ways."""
from __future__ import annotations

import secrets
import signal
import sqlite3
from urllib.parse import quote

from tests.interop.fedstack_peer import (FedstackPeer, bodies, synapse_user, wait_backed_off,
                                         wait_synapse_bodies)
from tests.interop.synapse_peer import SynapsePeer


def tag() -> str:
    return secrets.token_hex(3)



def test_synapse_late_joiner_sees_our_history(synapse: SynapsePeer, fedstack: FedstackPeer):
    """Messages sent in our room before a Synapse user joins: Synapse backfills them from us."""
    t = tag()
    carol = fedstack.user(f"carol{t}")
    room = fedstack.create_room(carol, version="12")
    history = [f"old-{t}-{i}" for i in range(15)]
    for b in history:
        fedstack.send(room, carol, b)
    dave, dave_tok = synapse_user(synapse, "ix-dave")
    synapse.join_room(dave_tok, room, server_name=fedstack.server_name)
    got = wait_synapse_bodies(synapse, dave_tok, room, lambda b: all(h in b for h in history))
    assert [b for b in got if b in history] == history
    assert synapse.grep_log(f"matrix-federation://{fedstack.server_name}/_matrix/federation/v1/"
                            f"backfill/{quote(room, safe='')}")


def test_we_page_back_through_synapse_history(synapse: SynapsePeer, fedstack: FedstackPeer):
    """Our user joins a Synapse room with history, then pages back through it (our
    /backfill from a resident server); history is not delivered to subscriptions."""
    t = tag()
    alice, alice_tok = synapse_user(synapse, "ix-alice")
    room = synapse.create_room(alice_tok)
    history = [f"hist-{t}-{i}" for i in range(30)]
    for b in history:
        synapse.send_message(alice_tok, room, b)
    bob = fedstack.user(f"bob{t}")
    fedstack.join(room, bob, [synapse.server_name])
    sid = fedstack.subscribe(room, types=None)

    seen: list[dict] = []
    frm = None
    for _ in range(20):
        page = fedstack.api("POST", f"/v1/rooms/{room}/backfill",
                            json={"limit": 10, **({"from": frm} if frm else {})})
        seen += page["events"]
        frm = page.get("next")
        if not frm:
            break
    assert len({e["event_id"] for e in seen}) == len(seen), "a page repeated an event"
    got = bodies(sorted(seen, key=lambda e: e["depth"]))
    assert got == history
    types = {e["type"] for e in seen}
    assert {"m.room.create", "m.room.member", "m.room.power_levels"} <= types
    synapse.send_message(alice_tok, room, f"live-{t}")
    live = fedstack.wait_delivered(sid, lambda evs: f"live-{t}" in bodies(evs))
    assert not any(b in history for b in bodies(live))


def test_we_fetch_missing_events_from_synapse(synapse: SynapsePeer, fedstack: FedstackPeer):
    """Our transport down while Synapse sends 30 messages; Synapse backs off and restarts
    (so it catches up with only the newest event of the room): we fetch the rest with
    get_missing_events (more than one answer's worth) and all arrive in order."""
    t = tag()
    alice, alice_tok = synapse_user(synapse, "ix-alice")
    room = synapse.create_room(alice_tok)
    bob = fedstack.user(f"bob{t}")
    fedstack.join(room, bob, [synapse.server_name])
    sid = fedstack.subscribe(room)
    synapse.send_message(alice_tok, room, f"before-{t}")
    fedstack.wait_delivered(sid, lambda evs: f"before-{t}" in bodies(evs))

    fedstack.hs.stop_service("transport", sig=signal.SIGKILL)
    try:
        sent = [f"gap-{t}-{i}" for i in range(30)]
        for b in sent:
            synapse.send_message(alice_tok, room, b)
        wait_backed_off(synapse, fedstack.server_name)
        synapse.restart()   # its queue is gone: it will send only the newest event
    finally:
        fedstack.hs.start_service("transport")
        fedstack.hs.wait_healthy(["transport"])
    got = fedstack.wait_delivered(sid, lambda evs: all(b in bodies(evs) for b in sent), timeout=60)
    assert bodies(got) == [f"before-{t}"] + sent
    assert synapse.grep_log("Catching up rooms to", fedstack.server_name)
    assert len(synapse.grep_log("POST /_matrix/federation/v1/get_missing_events/")) >= 2


def test_synapse_fetches_missing_events_from_us(synapse: SynapsePeer, fedstack: FedstackPeer):
    """Synapse gets only our newest event (the others' outbox rows are lost while our
    transport is down) and fetches the rest from us with get_missing_events."""
    t = tag()
    carol = fedstack.user(f"carol{t}")
    room = fedstack.create_room(carol)
    dave, dave_tok = synapse_user(synapse, "ix-dave")
    synapse.join_room(dave_tok, room, server_name=fedstack.server_name)
    fedstack.send(room, carol, f"before-{t}")
    wait_synapse_bodies(synapse, dave_tok, room, lambda b: f"before-{t}" in b)

    fedstack.hs.stop_service("transport", sig=signal.SIGKILL)
    try:
        sent = [f"gap-{t}-{i}" for i in range(8)]
        ids = [fedstack.send(room, carol, b) for b in sent]
        # lose all but the newest on their way to Synapse
        db = sqlite3.connect(fedstack.hs.settings.path("db"), timeout=30)
        with db:
            db.execute(
                "DELETE FROM outbox WHERE destination = ? AND event_id IN (%s)"
                % ",".join("?" * (len(ids) - 1)), [synapse.server_name, *ids[:-1]])
            left = db.execute("SELECT event_id FROM outbox WHERE destination = ?",
                              [synapse.server_name]).fetchall()
        db.close()
        assert [r[0] for r in left] == ids[-1:]
    finally:
        fedstack.hs.start_service("transport")
        fedstack.hs.wait_healthy(["transport"])
    got = wait_synapse_bodies(synapse, dave_tok, room, lambda b: all(s in b for s in sent),
                              timeout=60)
    assert [b for b in got if b.startswith(f"gap-{t}")] == sent
    assert synapse.grep_log("Requesting missing events", ids[-1])
