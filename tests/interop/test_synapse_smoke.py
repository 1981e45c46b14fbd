"""Proves the Synapse harness: start, register, create a v12 room, message, federation API."""

from __future__ import annotations

import httpx

from tests.interop.synapse_peer import SynapsePeer


def test_synapse_smoke(synapse: SynapsePeer) -> None:
    print(f"\n{synapse!r} started in {synapse.startup_seconds:.2f}s")
    assert synapse.server_name == f"127.0.0.1:{synapse.fed_port}"
    assert synapse.pid and synapse.is_running()

    alice = synapse.register_user("alice")
    bob = synapse.register_user("bob")
    room = synapse.create_room(alice, room_version="12", name="smoke")
    assert synapse.join_room(bob, room) == room
    members = synapse.joined_members(alice, room)
    assert set(members) == {synapse.user_id("alice"), synapse.user_id("bob")}

    state = synapse.get_state(alice, room)
    create = next(e for e in state if e["type"] == "m.room.create")
    assert create["content"]["room_version"] == "12"
    # v12: the room ID is the create event's reference hash, so no room_id on it
    assert room == "!" + create["event_id"][1:]

    event_id = synapse.send_message(alice, room, "hello from the harness")
    seen = synapse.wait_for_event(
        bob, room, lambda e: e.get("event_id") == event_id, timeout=10
    )
    assert seen["content"]["body"] == "hello from the harness"
    assert seen["sender"] == synapse.user_id("alice")
    chunk = synapse.messages(bob, room, limit=10)["chunk"]
    assert any(e["event_id"] == event_id for e in chunk)

    sync = synapse.sync(bob)
    assert room in sync["rooms"]["join"]

    with httpx.Client(verify=False, trust_env=False, timeout=10) as c:
        r = c.get(f"https://127.0.0.1:{synapse.fed_port}/_matrix/federation/v1/version")
        assert r.status_code == 200, r.text
        assert r.json()["server"]["name"] == "Synapse"

        r = c.get(f"https://127.0.0.1:{synapse.fed_port}/_matrix/key/v2/server")
        assert r.status_code == 200, r.text
        keys = r.json()
        assert keys["server_name"] == synapse.server_name
        assert any(k.startswith("ed25519:") for k in keys["verify_keys"])
        assert synapse.server_name in keys["signatures"]

    # nothing backed off yet: reset_connection reports there is nothing to reset
    assert synapse.reset_connection("127.0.0.1:1") is False
    assert synapse.grep_log("Synapse now listening")
