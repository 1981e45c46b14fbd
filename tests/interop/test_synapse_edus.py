"""Ephemeral and device traffic with a real Synapse, both ways: typing, read receipts,
presence, to-device, device lists and keys (one-time keys claimed once), and to-device
surviving `kill -9` of our transaction service (after the 200 Synapse took as delivery)
and of our messaging service (after our send was acknowledged).

One Synapse and one fedstack homeserver for the session (conftest.py); one shared room.
"""
from __future__ import annotations

import base64
import os
import secrets
import signal
import time
from urllib.parse import quote

import httpx
import pytest

from shared.crypto import SigningKey, sign_json
from tests.interop.fedstack_peer import FedstackPeer, membership, synapse_user, wait_synapse_state
from tests.interop.synapse_peer import SynapsePeer

CLIENT = "/_matrix/client/v3"


def tag() -> str:
    return secrets.token_hex(3)


def q(s: str) -> str:
    return quote(s, safe="")


def callback_edus(fedstack: FedstackPeer, sid: str) -> list[dict]:
    cb = fedstack.callbacks
    with cb._lock:
        return [e for b in cb.bodies if b["subscription_id"] == sid for e in b.get("edus", [])]


def wait_edus(fedstack: FedstackPeer, sid: str, predicate, timeout: float = 60.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        got = callback_edus(fedstack, sid)
        if predicate(got):
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"EDUs delivered never matched: {[e['edu_type'] for e in got]}")
        time.sleep(0.1)


def wait_sync(synapse: SynapsePeer, token: str, predicate, timeout: float = 60.0):
    """Long-poll the Synapse user's /sync until `predicate(sync)` returns something."""
    deadline = time.monotonic() + timeout
    since = None
    while True:
        sync = synapse.sync(token, since=since, timeout_ms=1000)
        found = predicate(sync)
        if found:
            return found
        since = sync.get("next_batch")
        if time.monotonic() > deadline:
            raise AssertionError("the Synapse user's /sync never showed it")


def ephemeral(sync: dict, room: str, type_: str) -> list[dict]:
    return [e for e in sync.get("rooms", {}).get("join", {}).get(room, {}).get("ephemeral", {})
            .get("events", []) if e.get("type") == type_]


@pytest.fixture(scope="module")
def shared_room(synapse: SynapsePeer, fedstack: FedstackPeer):
    """A Synapse user's room our user joined: (room, alice, alice token, bob)."""
    t = tag()
    alice, token = synapse_user(synapse, "edu-alice")
    room = synapse.create_room(token, name=f"edus-{t}")
    bob = fedstack.user(f"edubob{t}")
    fedstack.join(room, bob, [synapse.server_name])
    wait_synapse_state(synapse, token, room, lambda s: membership(s, bob) == "join")
    return room, alice, token, bob


def test_synapse_typing_and_receipt_reach_our_subscriber(synapse, fedstack, shared_room):
    room, alice, token, bob = shared_room
    sid = fedstack.subscribe(room, types=["m.typing", "m.receipt"])
    eid = synapse.send_message(token, room, f"read me {tag()}")
    synapse.request("PUT", f"{CLIENT}/rooms/{q(room)}/typing/{q(alice)}", token=token,
                    json={"typing": True, "timeout": 30000})
    synapse.request("POST", f"{CLIENT}/rooms/{q(room)}/receipt/m.read/{q(eid)}", token=token,
                    json={"thread_id": "main"})
    got = wait_edus(fedstack, sid, lambda es: {e["edu_type"] for e in es} >= {"m.typing", "m.receipt"})
    typing = next(e for e in got if e["edu_type"] == "m.typing")
    assert typing["origin"] == synapse.server_name
    assert typing["content"] == {"room_id": room, "user_id": alice, "typing": True}
    receipt = next(e for e in got if e["edu_type"] == "m.receipt")
    entry = receipt["content"][room]["m.read"][alice]
    assert entry["event_ids"] == [eid] and entry["data"].get("thread_id") == "main"


def test_our_typing_and_receipt_appear_in_synapse_sync(synapse, fedstack, shared_room):
    room, alice, token, bob = shared_room
    eid = synapse.send_message(token, room, f"ours to read {tag()}")
    assert fedstack.api("POST", f"/v1/rooms/{room}/typing",
                        json={"user_id": bob, "typing": True})["destinations"] == [synapse.server_name]
    wait_sync(synapse, token, lambda s: any(bob in e["content"].get("user_ids", [])
                                            for e in ephemeral(s, room, "m.typing")))
    fedstack.api("POST", f"/v1/rooms/{room}/receipts", json={"user_id": bob, "event_id": eid})
    got = wait_sync(synapse, token, lambda s: [e for e in ephemeral(s, room, "m.receipt")
                                               if bob in e["content"].get(eid, {}).get("m.read", {})])
    assert got


def test_presence_both_ways(synapse, fedstack, shared_room):
    room, alice, token, bob = shared_room
    status = f"busy {tag()}"
    fedstack.api("PUT", f"/v1/presence/{bob}", json={"presence": "online", "status_msg": status})
    deadline = time.monotonic() + 60
    while True:
        seen = synapse.request("GET", f"{CLIENT}/presence/{q(bob)}/status", token=token)
        if seen.get("presence") == "online" and seen.get("status_msg") == status:
            break
        assert time.monotonic() < deadline, f"Synapse never saw our presence: {seen}"
        time.sleep(0.3)
    sid = fedstack.api("POST", "/v1/subscriptions", json={
        "url": fedstack.callbacks.url, "types": ["m.presence"]})["subscription_id"]
    mine = f"synapse {tag()}"
    synapse.request("PUT", f"{CLIENT}/presence/{q(alice)}/status", token=token,
                    json={"presence": "online", "status_msg": mine})
    got = wait_edus(fedstack, sid, lambda es: any(p.get("user_id") == alice and p.get("status_msg") == mine
                                                  for e in es for p in e["content"].get("push", [])))
    assert all(e["origin"] == synapse.server_name for e in got)


def to_device_subscription(fedstack: FedstackPeer) -> str:
    return fedstack.api("POST", "/v1/subscriptions", json={
        "url": fedstack.callbacks.url, "types": ["m.direct_to_device"]})["subscription_id"]


def synapse_send_to_device(synapse, token, user_id, marker) -> None:
    synapse.request("PUT", f"{CLIENT}/sendToDevice/m.room_key_request/{tag()}", token=token,
                    json={"messages": {user_id: {"*": {"marker": marker}}}})


def markers(edus: list[dict]) -> list[str]:
    return [c.get("marker") for e in edus for by_dev in e["content"]["messages"].values()
            for c in by_dev.values()]


def test_to_device_both_ways(synapse, fedstack, shared_room):
    room, alice, token, bob = shared_room
    sid = to_device_subscription(fedstack)
    marker = f"to-us {tag()}"
    synapse_send_to_device(synapse, token, bob, marker)
    [got] = wait_edus(fedstack, sid, lambda es: marker in markers(es))
    assert got["origin"] == synapse.server_name and got["content"]["sender"] == alice
    assert got["content"]["type"] == "m.room_key_request"

    back = f"to-synapse {tag()}"
    sent = fedstack.api("POST", "/v1/to_device", json={
        "sender": bob, "type": "m.room_key_request", "messages": {alice: {"*": {"marker": back}}}})
    assert sent["destinations"] == [synapse.server_name]
    found = wait_sync(synapse, token, lambda s: [e for e in s.get("to_device", {}).get("events", [])
                                                 if e.get("content", {}).get("marker") == back])
    assert found[0]["sender"] == bob and found[0]["type"] == "m.room_key_request"


def device_keys(user_id: str, device_id: str) -> tuple[dict, SigningKey]:
    key = SigningKey.generate(device_id)
    keys = {"user_id": user_id, "device_id": device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {f"curve25519:{device_id}": base64.b64encode(os.urandom(32)).decode().rstrip("="),
                     f"ed25519:{device_id}": key.public_key_base64}}
    return sign_json(keys, user_id, key), key


def test_our_device_and_one_time_keys_through_synapse(synapse, fedstack, shared_room):
    room, alice, token, bob = shared_room
    device = f"DEV{tag().upper()}"
    keys, key = device_keys(bob, device)
    fedstack.api("PUT", f"/v1/users/{bob}/devices/{device}", json={"display_name": "edu phone", "keys": keys})
    otks = {}
    for i in range(2):
        otk = {"key": base64.b64encode(os.urandom(32)).decode().rstrip("=")}
        otks[f"signed_curve25519:K{i}{tag()}"] = sign_json(otk, bob, key)
    fedstack.api("POST", f"/v1/users/{bob}/devices/{device}/one_time_keys", json={"one_time_keys": otks})

    deadline = time.monotonic() + 60
    while True:     # Synapse learns of it from our m.device_list_update (or /user/devices)
        answer = synapse.request("POST", f"{CLIENT}/keys/query", token=token,
                                 json={"device_keys": {bob: []}})
        if (device in answer.get("device_keys", {}).get(bob, {})
                and fedstack.server_name not in answer.get("failures", {})):
            break
        assert time.monotonic() < deadline, f"Synapse never listed our device: {answer}"
        time.sleep(0.5)
    assert answer["device_keys"][bob][device]["keys"] == keys["keys"]

    claimed = []
    for _ in range(3):
        got = synapse.request("POST", f"{CLIENT}/keys/claim", token=token,
                              json={"one_time_keys": {bob: {device: "signed_curve25519"}}})
        assert fedstack.server_name not in got.get("failures", {})
        claimed += list(got.get("one_time_keys", {}).get(bob, {}).get(device, {}))
    assert sorted(claimed) == sorted(otks), "each one-time key handed out once, all of them"


def internal(fedstack: FedstackPeer, service: str, path: str, **params):
    hs = fedstack.hs
    resp = httpx.get(f"http://127.0.0.1:{hs.ports[service]}{path}", params=params, timeout=30,
                     headers={"x-fedstack-secret": hs.settings.secret()})
    resp.raise_for_status()
    return resp.json()


def restart(fedstack: FedstackPeer, service: str) -> None:
    fedstack.hs.stop_service(service, sig=signal.SIGKILL)
    fedstack.hs.start_service(service)
    fedstack.hs.wait_healthy([service])


def test_kill_9_of_transaction_after_synapse_had_our_200_loses_no_to_device(synapse, fedstack,
                                                                           shared_room):
    """Synapse deletes a to-device message once we answered its transaction; our
    subscriber is down then; the transaction service is killed; nothing is lost."""
    room, alice, token, bob = shared_room
    sid = to_device_subscription(fedstack)
    fedstack.callbacks.fail_next = 10**6
    marker = f"kill-tx {tag()}"
    try:
        synapse_send_to_device(synapse, token, bob, marker)
        deadline = time.monotonic() + 60
        while True:     # stored by the transaction service (Synapse got its 200)
            page = internal(fedstack, "transaction", "/_internal/transaction/v1/stream",
                            after=0, limit=1000, edus="true")
            if marker in markers([e["edu"] for e in page.get("edus", [])
                                  if e["edu"]["edu_type"] == "m.direct_to_device"]):
                break
            assert time.monotonic() < deadline, "Synapse's to-device never reached us"
            time.sleep(0.2)
        restart(fedstack, "transaction")
    finally:
        fedstack.callbacks.fail_next = 0
    got = wait_edus(fedstack, sid, lambda es: marker in markers(es), timeout=90)
    assert markers(got).count(marker) == 1


def test_kill_9_of_messaging_after_our_send_loses_no_to_device(synapse, fedstack, shared_room):
    room, alice, token, bob = shared_room
    marker = f"kill-msg {tag()}"
    fedstack.api("POST", "/v1/to_device", json={
        "sender": bob, "type": "m.room_key_request", "messages": {alice: {"*": {"marker": marker}}}})
    restart(fedstack, "messaging")          # at once: the send was durable before its answer
    found = wait_sync(synapse, token, lambda s: [e for e in s.get("to_device", {}).get("events", [])
                                                 if e.get("content", {}).get("marker") == marker])
    assert len(found) == 1
