"""Crash consistency: `kill -9` of any service of either homeserver at random moments while
two homeservers exchange a stream of messages both ways. Afterwards every message was
delivered to the subscriptions on both sides exactly once (per callback position) and in
order per sender, and both sides agree on the room's state.

Sends carry a txn_id and are retried until they succeed, as a client of the messaging API
would do; that is what makes a send that was cut off by a kill safe to repeat.
Scale with FEDSTACK_CRASH_KILLS (default 20) and FEDSTACK_CRASH_MESSAGES (default 2000).
"""
from __future__ import annotations

import os
import random
import signal
import threading
import time

import httpx

from fedstack.cli import SERVICES
from tests.processes import CallbackServer, api_headers, api_url, start_homeserver

KILLS = int(os.environ.get("FEDSTACK_CRASH_KILLS", "20"))
MESSAGES = int(os.environ.get("FEDSTACK_CRASH_MESSAGES", "2000"))


def call(hs, method, path, deadline, **kw):
    """Retry through crashes until the call succeeds (or the deadline passes)."""
    while True:
        try:
            resp = httpx.request(method, api_url(hs) + path, timeout=30, headers=api_headers(hs), **kw)
            if resp.status_code == 200:
                return resp.json()
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{method} {path} kept failing")
        time.sleep(0.1)


def sender_thread(hs, room, user, prefix, count, deadline, errors):
    def run():
        try:
            for i in range(count):
                call(hs, "POST", f"/v1/rooms/{room}/events", deadline,
                     json={"sender": user, "type": "m.room.message", "txn_id": f"{prefix}{i}",
                           "content": {"msgtype": "m.text", "body": f"{prefix}{i}"}})
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def unique_by_position(cb, sid):
    """Callback batches de-duplicated by position, as the callback contract documents;
    returns (events, repeats) where a repeat must be byte-identical to the first."""
    seen, events, repeats = {}, [], 0
    with cb._lock:
        bodies = list(cb.bodies)
    for body in bodies:
        if body["subscription_id"] != sid:
            continue
        for ev in body["events"]:
            if ev["position"] in seen:
                assert seen[ev["position"]] == ev, "a position was reused for another event"
                repeats += 1
                continue
            seen[ev["position"]] = ev
            events.append(ev)
    return events, repeats


class TwoWayStream:
    """alice@a makes a public room, bob@b joins it, both subscribe (one callback server),
    then each sends `per_side` messages from a thread, retrying through crashes."""

    def __init__(self, a, b, cb, per_side: int, deadline: float):
        self.a, self.b, self.cb, self.per_side, self.deadline = a, b, cb, per_side, deadline
        alice, bob = f"@alice:{a.settings.server_name}", f"@bob:{b.settings.server_name}"
        self.room = call(a, "POST", "/v1/rooms", deadline,
                         json={"creator": alice, "preset": "public_chat"})["room_id"]
        call(b, "POST", f"/v1/rooms/{self.room}/join", deadline,
             json={"user_id": bob, "servers": [a.settings.server_name]})
        self.subs = [call(hs, "POST", "/v1/subscriptions", deadline,
                          json={"url": cb.url, "room_id": self.room, "types": ["m.room.message"]}
                          )["subscription_id"] for hs in (a, b)]
        self.errors: list = []
        self.threads = [sender_thread(a, self.room, alice, "a", per_side, deadline, self.errors),
                        sender_thread(b, self.room, bob, "b", per_side, deadline, self.errors)]

    def check_delivered(self) -> None:
        """Every message reached both subscriptions once (repeats only of a position
        already delivered), in order per sender."""
        for t in self.threads:
            t.join(max(1, self.deadline - time.monotonic()))
        assert not self.errors, self.errors
        for sid in self.subs:
            while True:
                evs, repeats = unique_by_position(self.cb, sid)
                if len(evs) >= 2 * self.per_side or time.monotonic() > self.deadline:
                    break
                time.sleep(0.2)
            got = [e["content"]["body"] for e in evs]
            assert len(got) == len(set(got)), "a message was stored twice"
            assert [x for x in got if x[0] == "a"] == [f"a{i}" for i in range(self.per_side)]
            assert [x for x in got if x[0] == "b"] == [f"b{i}" for i in range(self.per_side)]
            print(f"subscription {sid[:8]}: {len(got)} events, {repeats} repeated deliveries")


def test_kill9_any_service_nothing_lost_nothing_twice(tmp_path):
    rng = random.Random(int(os.environ.get("FEDSTACK_CRASH_SEED", "7")))
    cb = CallbackServer().start()
    a = start_homeserver(tmp_path / "a")
    b = start_homeserver(tmp_path / "b")
    try:
        deadline = time.monotonic() + 900
        stream = TwoWayStream(a, b, cb, MESSAGES // 2, deadline)
        kills = []
        for k in range(KILLS):
            hs = (a, b)[k % 2]
            service = SERVICES[(k // 2) % len(SERVICES)]
            time.sleep(rng.uniform(0.2, 1.5))
            hs.stop_service(service, sig=signal.SIGKILL)
            kills.append((hs.settings.server_name, service))
            time.sleep(rng.uniform(0.1, 0.8))
            hs.start_service(service)
            hs.wait_healthy([service])
        stream.check_delivered()
        room = stream.room
        sa_state = {(e["type"], e["state_key"]): e["event_id"] for e in call(a, "GET", f"/v1/rooms/{room}/state", deadline)["state"]}
        sb_state = {(e["type"], e["state_key"]): e["event_id"] for e in call(b, "GET", f"/v1/rooms/{room}/state", deadline)["state"]}
        assert sa_state == sb_state
        print(f"{len(kills)} kills: {kills}")
        assert len(kills) == KILLS
    finally:
        a.stop()
        b.stop()
        cb.stop()
