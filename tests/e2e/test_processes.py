"""Two homeservers as real processes (as `fedstack up` starts them) federating over HTTPS
on loopback: 200 messages each way, a killed transport, a whole restart."""
from __future__ import annotations

import signal
import time

import httpx
import pytest

from tests.processes import CallbackServer, api_headers, api_url, start_homeserver


@pytest.fixture(scope="module")
def callbacks():
    cb = CallbackServer().start()
    yield cb
    cb.stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory, database_for):
    a, b = tmp_path_factory.mktemp("hs-a"), tmp_path_factory.mktemp("hs-b")
    a = start_homeserver(a, database_url=database_for(a))
    b = start_homeserver(b, database_url=database_for(b))
    yield a, b
    a.stop()
    b.stop()


def api(hs, method, path, **kw):
    resp = httpx.request(method, api_url(hs) + path, timeout=60, headers=api_headers(hs), **kw)
    assert resp.status_code == 200, resp.text
    return resp.json()


def user(hs, name):
    return f"@{name}:{hs.settings.server_name}"


def bodies(events):
    return [e["content"]["body"] for e in events]


def setup_room(a, b, callbacks, version):
    alice, bob = user(a, "alice"), user(b, "bob")
    room = api(a, "POST", "/v1/rooms", json={"creator": alice, "room_version": version,
                                             "preset": "public_chat"})["room_id"]
    sa = api(a, "POST", "/v1/subscriptions", json={"url": callbacks.url, "room_id": room,
                                                   "types": ["m.room.message"]})["subscription_id"]
    api(b, "POST", f"/v1/rooms/{room}/join", json={"user_id": bob, "servers": [a.settings.server_name]})
    sb = api(b, "POST", "/v1/subscriptions", json={"url": callbacks.url, "room_id": room,
                                                   "types": ["m.room.message"]})["subscription_id"]
    return room, alice, bob, sa, sb


def send(hs, room, sender, body, txn_id=None):
    payload = {"sender": sender, "type": "m.room.message",
               "content": {"msgtype": "m.text", "body": body}}
    if txn_id:
        payload["txn_id"] = txn_id
    return api(hs, "POST", f"/v1/rooms/{room}/events", json=payload)["event_id"]


def assert_exactly_once_in_order(events, expected_a, expected_b):
    got = bodies(events)
    assert len(got) == len(set(got)), "an event was delivered twice"
    assert [x for x in got if x.startswith("a")] == expected_a
    assert [x for x in got if x.startswith("b")] == expected_b


@pytest.mark.parametrize("version", ["12", "10"])
def test_200_messages_each_way(servers, callbacks, version):
    a, b = servers
    room, alice, bob, sa, sb = setup_room(a, b, callbacks, version)
    n = 200
    for i in range(n):
        send(a, room, alice, f"a{version}-{i}")
        send(b, room, bob, f"b{version}-{i}")
    want_a = [f"a{version}-{i}" for i in range(n)]
    want_b = [f"b{version}-{i}" for i in range(n)]
    for sid in (sa, sb):
        evs = callbacks.wait_for(sid, lambda e: len(e) >= 2 * n)
        assert_exactly_once_in_order(evs, want_a, want_b)
    state_a = {(e["type"], e["state_key"]): e["event_id"]
               for e in api(a, "GET", f"/v1/rooms/{room}/state")["state"]}
    state_b = {(e["type"], e["state_key"]): e["event_id"]
               for e in api(b, "GET", f"/v1/rooms/{room}/state")["state"]}
    assert state_a == state_b


def test_client_txn_id_is_idempotent(servers, callbacks):
    a, b = servers
    room, alice, _bob, sa, _sb = setup_room(a, b, callbacks, "12")
    first = send(a, room, alice, "a-once", txn_id="t-1")
    again = send(a, room, alice, "a-once", txn_id="t-1")
    assert first == again
    send(a, room, alice, "a-after", txn_id="t-2")
    evs = callbacks.wait_for(sa, lambda e: "a-after" in bodies(e))
    assert bodies(evs).count("a-once") == 1


def test_killed_transport_loses_nothing(servers, callbacks):
    a, b = servers
    room, alice, bob, sa, sb = setup_room(a, b, callbacks, "12")
    b.stop_service("transport", sig=signal.SIGKILL)
    n = 60
    for i in range(n):
        send(a, room, alice, f"a-k{i}")
    time.sleep(1.0)
    b.start_service("transport")
    b.wait_healthy(["transport"])
    evs = callbacks.wait_for(sb, lambda e: len(e) >= n)
    assert_exactly_once_in_order(evs, [f"a-k{i}" for i in range(n)], [])


def test_whole_homeserver_restart_resumes_without_duplicates(servers, callbacks):
    a, b = servers
    room, alice, bob, sa, sb = setup_room(a, b, callbacks, "12")
    for i in range(20):
        send(a, room, alice, f"a-r{i}")
    callbacks.wait_for(sb, lambda e: len(e) >= 20)
    b.stop()
    for i in range(20, 40):
        send(a, room, alice, f"a-r{i}")
    b.start()
    for i in range(40, 50):
        send(b, room, bob, f"b-r{i}")
    callbacks.wait_for(sb, lambda e: len(e) >= 50)
    time.sleep(0.5)
    assert_exactly_once_in_order(callbacks.events(sb), [f"a-r{i}" for i in range(40)],
                                 [f"b-r{i}" for i in range(40, 50)])
    evs = callbacks.wait_for(sa, lambda e: len(e) >= 50)
    assert_exactly_once_in_order(evs, [f"a-r{i}" for i in range(40)], [f"b-r{i}" for i in range(40, 50)])


def test_public_port_serves_no_internal_route(servers):
    a, _b = servers
    base = f"https://127.0.0.1:{a.ports['federation']}"
    r = httpx.post(base + "/_internal/transport/v1/request", verify=False, json={})
    assert r.status_code == 404 and r.json()["errcode"] == "M_UNRECOGNIZED"
    r = httpx.get(base + "/_matrix/key/v2/server", verify=False)
    assert r.status_code == 200 and r.json()["server_name"] == a.settings.server_name
    # the internal listener itself refuses requests without the internal secret
    r = httpx.post(f"http://127.0.0.1:{a.ports['transport']}/_internal/transport/v1/request", json={})
    assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"


def test_key_rotation_serves_old_key(tmp_path):
    from fedstack.cli import rotate_key
    from shared.crypto import SigningKey
    from shared.settings import Settings
    hs = start_homeserver(tmp_path / "rot")
    try:
        base = f"https://127.0.0.1:{hs.ports['federation']}/_matrix/key/v2/server"
        before = httpx.get(base, verify=False).json()
        old_id = next(iter(before["verify_keys"]))
        hs.stop()
        new_id = rotate_key(Settings(data_dir=hs.settings.data_dir))
        hs.start()
        after = httpx.get(base, verify=False).json()
        assert list(after["verify_keys"]) == [new_id] != [old_id]
        assert after["old_verify_keys"][old_id]["key"] == before["verify_keys"][old_id]["key"]
        assert SigningKey.load(hs.settings.path("signing_key")).key_id == new_id
    finally:
        hs.stop()
