"""Scaling: two pdu, transport and messaging replicas behind one transaction service, under
concurrent traffic: no event lost, duplicated or out of order; a second transaction
service on the same database refuses to start."""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import httpx

from fedstack.cli import Homeserver, free_port
from tests.processes import CallbackServer, api_headers, api_url, start_homeserver


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def post(hs, path, body=None, base=None):
    r = httpx.post((base or api_url(hs)) + path, json=body, timeout=60, headers=api_headers(hs))
    assert r.status_code == 200, r.text
    return r.json()


def test_replicas_under_concurrent_traffic(tmp_path, database_for):
    cb = CallbackServer().start()
    port = free_port()
    a = Homeserver.configure(f"127.0.0.1:{port}", str(tmp_path / "a"), port, free_port(),
                             replicas={"pdu": 2, "transport": 2, "messaging": 2}, allow_private_destinations=True,
                             verify_tls=False, backoff_min_s=0.2, backoff_max_s=2.0,
                             database_url=database_for(tmp_path / "a"))
    a.start()
    b = start_homeserver(tmp_path / "b")
    try:
        assert len(a.settings.pdu_url.split(",")) == 2 and len(a.settings.transport_url.split(",")) == 2
        r = httpx.get(f"https://127.0.0.1:{a.ports['federation#2']}/_matrix/federation/v1/version", verify=False)
        assert r.status_code == 200
        alice = f"@alice:{a.settings.server_name}"
        bob = f"@bob:{b.settings.server_name}"
        room = post(a, "/v1/rooms", {"creator": alice, "preset": "public_chat"})["room_id"]
        post(b, f"/v1/rooms/{room}/join", {"user_id": bob, "servers": [a.settings.server_name]})
        sa = post(a, "/v1/subscriptions", {"url": cb.url, "room_id": room, "types": ["m.room.message"]})["subscription_id"]
        sb = post(b, "/v1/subscriptions", {"url": cb.url, "room_id": room, "types": ["m.room.message"]})["subscription_id"]
        senders = [(a, alice, f"a{t}-") for t in range(4)] + [(b, bob, "b0-")]
        n = 40

        def run(hs, user, prefix):
            for i in range(n):
                base = api2 if hs is a and i % 2 else api_url(hs)
                post(hs, f"/v1/rooms/{room}/events", base=base,
                     body={"sender": user, "type": "m.room.message",
                           "content": {"msgtype": "m.text", "body": f"{prefix}{i}"}})
        replicas = ("pdu", "pdu#2", "transport", "transport#2")
        # sends go through both messaging replicas; subscriptions are delivered by one
        api2 = f"http://127.0.0.1:{a.ports['messaging#2']}"
        cpu_before = {i: cpu_seconds(a.procs[i].pid) for i in replicas}
        threads = [threading.Thread(target=run, args=s) for s in senders]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        total = n * len(senders)
        for sid in (sa, sb):
            try:
                evs = cb.wait_for(sid, lambda e: len(e) >= total, timeout=30)
            except AssertionError:
                got = {e["content"]["body"] for e in cb.events(sid)}
                want = {f"{p}{i}" for _h, _u, p in senders for i in range(n)}
                raise AssertionError(f"sid {'A' if sid == sa else 'B'} missing {sorted(want - got)}")
            bodies = [e["content"]["body"] for e in evs]
            assert len(bodies) == len(set(bodies)) == total
            for _hs, _user, prefix in senders:
                assert [x for x in bodies if x.startswith(prefix)] == [f"{prefix}{i}" for i in range(n)]
        # Every replica took part: each one spent CPU on the traffic.
        used = {i: cpu_seconds(a.procs[i].pid) - cpu_before[i] for i in replicas}
        assert all(v > 0.02 for v in used.values()), used

        # A second transaction service on the same database refuses to start.
        env = {**os.environ, **a.settings.to_env(), "FEDSTACK_PORT": str(free_port())}
        second = subprocess.run([sys.executable, "-m", "fedstack.cli", "serve", "transaction"],
                                env=env, capture_output=True, timeout=60)
        assert second.returncode != 0
        assert b"already used by another transaction service" in second.stdout + second.stderr
    finally:
        a.stop()
        b.stop()
        cb.stop()
