"""docker-compose.yml for real: two homeservers, each a compose project of the same file
(plus tests/compose/host-network.override.yml: host network, 127.0.0.1 ports from the
environment), federate over HTTPS on loopback. Through the messaging API only: a room
created on A is joined from B, and messages sent on each side reach subscriptions
(callbacks to a receiver this test runs on 127.0.0.1) on both sides.

Run alone:  python3 -m pytest -s -m compose tests/compose
"""
from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.compose.conftest import (compose_cmd, compose_env, free_ports, record, run)

pytestmark = pytest.mark.compose

SERVICES = ("transaction", "pdu", "transport", "messaging")


class CallbackReceiver:
    """Records the callback bodies POSTed by the homeservers' subscriptions (loopback only)."""

    def __init__(self):
        self.bodies: list[dict] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with receiver._lock:
                    receiver.bodies.append(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/callback"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self):
        self._server.shutdown()
        self._server.server_close()

    def messages(self, subscription_id: str) -> list[str]:
        with self._lock:
            return [e["content"]["body"] for b in self.bodies if b.get("subscription_id") == subscription_id
                    for e in b.get("events", []) if e.get("type") == "m.room.message"]

    def wait_for(self, subscription_id: str, expected: set[str], timeout: float = 60.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.messages(subscription_id)
            if expected <= set(got):
                return got
            time.sleep(0.1)
        raise AssertionError(f"subscription {subscription_id}: after {timeout:.0f} s got {got}, "
                             f"expected {sorted(expected)}")


class ComposeHomeserver:
    """One homeserver = one compose project of docker-compose.yml + the host-network override."""

    def __init__(self, project: str, docker_host: str, env_file):
        self.project = project
        self.env_file = env_file
        keys = ("transaction", "pdu", "transport", "messaging", "federation")
        self.ports = dict(zip(keys, free_ports(len(keys))))
        self.server_name = f"127.0.0.1:{self.ports['federation']}"
        self.api = f"http://127.0.0.1:{self.ports['messaging']}"
        self.env = compose_env(
            docker_host,
            FEDSTACK_SERVER_NAME=self.server_name,
            FEDSTACK_INTERNAL_SECRET=secrets.token_hex(32),
            FEDSTACK_VERIFY_TLS="false",
            FEDSTACK_ALLOW_PRIVATE_DESTINATIONS="true",
            FEDSTACK_BACKOFF_MIN_S="0.5",
            FEDSTACK_BACKOFF_MAX_S="5",
            FEDSTACK_LOG_LEVEL="info",
            **{f"FEDSTACK_TEST_{k.upper()}_PORT": str(v) for k, v in self.ports.items()})
        self.is_up = False

    def compose(self, *args: str, timeout: float = 180, what: str | None = None):
        return run(compose_cmd(self.project, self.env_file, *args), env=self.env, timeout=timeout,
                   what=what or f"docker compose -p {self.project} {' '.join(args)}")

    def logs(self) -> str:
        import subprocess
        proc = subprocess.run(compose_cmd(self.project, self.env_file, "logs", "--no-color", "--tail", "30"),
                              env=self.env, capture_output=True, text=True, timeout=60)
        return proc.stdout + proc.stderr

    def up(self) -> float:
        t0 = time.monotonic()
        self.is_up = True
        try:
            self.compose("up", "-d", "--wait", "--wait-timeout", "120", "--no-build", "--pull", "never",
                         timeout=240)
        except BaseException:
            print(self.logs())
            raise
        return time.monotonic() - t0

    def down(self) -> float:
        t0 = time.monotonic()
        self.compose("down", "-v", "--timeout", "20", timeout=120)
        self.is_up = False
        return time.monotonic() - t0

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        resp = httpx.request(method, self.api + path, json=body, timeout=60)
        assert resp.status_code == 200, f"{self.project} {method} {path}: {resp.status_code} {resp.text}"
        return resp.json()

    def user(self, name: str) -> str:
        return f"@{name}:{self.server_name}"


@pytest.fixture(scope="module")
def callbacks():
    cb = CallbackReceiver()
    yield cb
    cb.stop()


@pytest.fixture(scope="module")
def homeservers(docker_engine, fedstack_image, empty_env_file):
    a = ComposeHomeserver("fedstack-test-a", docker_engine, empty_env_file)
    b = ComposeHomeserver("fedstack-test-b", docker_engine, empty_env_file)
    try:
        record("homeserver A: compose up to all healthy", f"{a.up():.1f} s")
        record("homeserver B: compose up to all healthy", f"{b.up():.1f} s")
        yield a, b
    finally:
        errors = []
        for hs in (b, a):
            if hs.is_up:
                try:
                    record(f"homeserver {hs.project[-1].upper()}: compose down -v", f"{hs.down():.1f} s")
                except BaseException as exc:  # keep tearing down the other one
                    errors.append(exc)
        left = run(["docker", "ps", "-aq", "--filter", "label=com.docker.compose.project"],
                   env=a.env, timeout=30, what="docker ps").stdout.split()
        assert not left, f"containers left after compose down: {left}"
        if errors:
            raise errors[0]


def test_compose_stack_shape(homeservers):
    """What the compose file promises: one image, init, host network in the test, the volume
    only on transaction, the keys read-only only on pdu and transport, no Docker network."""
    a, _ = homeservers
    for service in SERVICES:
        cid = a.compose("ps", "-q", service).stdout.strip()
        info = json.loads(run(["docker", "inspect", cid], env=a.env, timeout=30, what="docker inspect").stdout)[0]
        assert info["Config"]["Image"] == a.env["FEDSTACK_IMAGE"]
        assert info["HostConfig"]["Init"] is True
        assert info["HostConfig"]["NetworkMode"] == "host"
        assert info["State"]["Health"]["Status"] == "healthy"
        assert info["Config"]["User"] == "fedstack"
        mounts = {m["Destination"]: m["RW"] for m in info["Mounts"]}
        want = {"transaction": {"/data": True}, "pdu": {"/keys": False},
                "transport": {"/keys": False}, "messaging": {}}[service]
        assert mounts == want, f"{service} mounts {mounts}"
    networks = run(["docker", "network", "ls", "--format", "{{.Name}}"], env=a.env, timeout=30,
                   what="docker network ls").stdout.split()
    assert set(networks) <= {"host", "none"}, f"a Docker network was created: {networks}"


def test_room_on_a_joined_from_b_messages_both_ways(homeservers, callbacks):
    a, b = homeservers
    t0 = time.monotonic()
    alice, bob = a.user("alice"), b.user("bob")
    room = a.call("POST", "/v1/rooms", {"creator": alice, "preset": "public_chat",
                                        "room_version": "12"})["room_id"]
    sub_a = a.call("POST", "/v1/subscriptions", {"url": callbacks.url, "room_id": room,
                                                 "types": ["m.room.message"]})["subscription_id"]
    b.call("POST", f"/v1/rooms/{room}/join", {"user_id": bob, "servers": [a.server_name]})
    sub_b = b.call("POST", "/v1/subscriptions", {"url": callbacks.url, "room_id": room,
                                                 "types": ["m.room.message"]})["subscription_id"]
    record("federation: create + join over HTTPS", f"{time.monotonic() - t0:.1f} s")

    t1 = time.monotonic()
    sent = {"hello from A": (a, alice), "hello from B": (b, bob)}
    for i, (body, (hs, sender)) in enumerate(sent.items()):
        hs.call("POST", f"/v1/rooms/{room}/events",
                {"sender": sender, "type": "m.room.message", "txn_id": f"t{i}",
                 "content": {"msgtype": "m.text", "body": body}})
    for sub in (sub_a, sub_b):
        got = callbacks.wait_for(sub, set(sent))
        assert sorted(got) == sorted(sent), f"subscription {sub}: delivered {got}"
    record("federation: messages delivered both ways", f"{time.monotonic() - t1:.1f} s")

    members = {e["state_key"]: e["content"]["membership"]
               for e in a.call("GET", f"/v1/rooms/{room}/state")["state"] if e["type"] == "m.room.member"}
    assert members == {alice: "join", bob: "join"}
