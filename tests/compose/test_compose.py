"""docker-compose.yml for real: two homeservers, each a compose project of the same file
(plus tests/compose/host-network.override.yml: host network, 127.0.0.1 ports from the
environment), federate over HTTPS on loopback. Through the messaging API only: a room
created on A is joined from B, and messages sent on each side reach subscriptions
(callbacks to a receiver this test runs on 127.0.0.1) on both sides.

Run alone:  python3 -m pytest -s -m compose tests/compose
"""
from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.compose.conftest import (REPO, compose_cmd, compose_env, free_ports, record, run)

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
            FEDSTACK_API_TOKEN=secrets.token_urlsafe(24),
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

    def container_settings(self) -> dict[str, dict[str, str]]:
        """Per service: the FEDSTACK_* variables its running container was started with."""
        ids = self.compose("ps", "-q").stdout.split()
        infos = json.loads(run(["docker", "inspect", *ids], env=self.env, timeout=30,
                               what="docker inspect").stdout)
        out = {}
        for info in infos:
            env = dict(e.split("=", 1) for e in info["Config"]["Env"])
            out[info["Config"]["Labels"]["com.docker.compose.service"]] = {
                k: v for k, v in env.items() if k.startswith("FEDSTACK_")}
        return out

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        resp = httpx.request(method, self.api + path, json=body, timeout=60,
                             headers={"authorization": f"Bearer {self.env['FEDSTACK_API_TOKEN']}"})
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


# --------------------------------------------------------------------------- contract suites

CONTRACT_TIMEOUT = 120.0   # seconds, for the four suites together (23-28 s on 2 CPUs)


def pytest_summary(output: str) -> dict[str, int] | None:
    """The counts of a pytest run's final summary line ("3 passed, 2 skipped in 1.2s"),
    e.g. {"passed": 3, "skipped": 2}; None if the output has no summary line."""
    for line in reversed(output.strip().splitlines()):
        line = line.strip(" =")
        if re.search(r"\bin [0-9.]+s\b", line) and (
                "no tests ran" in line or re.match(r"\d+ \w+", line)):
            counts = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", line.split(" in ")[0])}
            return {{"error": "errors", "warning": "warnings"}.get(w, w): n for w, n in counts.items()}
    return None


@pytest.fixture(scope="module")
def contract_runs(homeservers, tmp_path_factory):
    """Each service's contract suite run against homeserver A's container, the four at once:
    `python -m pytest tests/contract/<service> --base-url http://127.0.0.1:<internal port> -q`
    (transport too: its internal listener serves the federation routes as well). The
    subprocess gets the container's own FEDSTACK_* settings (server name, internal secret,
    TLS verification, body limit, ...) and none of the caller's.
    Returns {service: (exit code or None on time-out, output, summary counts or None)}."""
    a, _ = homeservers
    settings = a.container_settings()
    outdir = tmp_path_factory.mktemp("contract")
    caller = {k: v for k, v in os.environ.items() if not k.startswith("FEDSTACK_")}
    t0 = time.monotonic()
    procs = {}
    try:
        for service in SERVICES:
            cmd = [sys.executable, "-m", "pytest", f"tests/contract/{service}",
                   "--base-url", f"http://127.0.0.1:{a.ports[service]}", "-q",
                   "-p", "no:cacheprovider"]   # several at once: no shared .pytest_cache writes
            log = (outdir / f"{service}.log").open("w")
            procs[service] = (subprocess.Popen(cmd, cwd=REPO, env={**caller, **settings[service]},
                                               stdout=log, stderr=subprocess.STDOUT, text=True), log)
        results = {}
        for service, (proc, log) in procs.items():
            try:
                code = proc.wait(timeout=max(1.0, t0 + CONTRACT_TIMEOUT - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                code = None
            log.close()
            out = (outdir / f"{service}.log").read_text()
            results[service] = (code, out, pytest_summary(out))
    finally:
        for proc, log in procs.values():   # only on an error above: ours, by their Popen
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    record("contract suites vs A's containers (4 at once)", f"{time.monotonic() - t0:.1f} s")
    for service, (code, _, counts) in results.items():
        record(f"  contract {service}", ", ".join(f"{n} {w}" for w, n in (counts or {}).items())
               or f"no summary (exit {code})")
    return results


@pytest.mark.parametrize("service", SERVICES)
def test_contract_suite_passes_against_the_container(contract_runs, service):
    """The HTTP-only part of the service's contract suite holds for the service as compose
    runs it: exit 0 and some tests passed (a run where everything skipped proves nothing)."""
    code, out, counts = contract_runs[service]
    tail = "\n".join(out.strip().splitlines()[-60:])
    assert code is not None, f"contract {service}: no result after {CONTRACT_TIMEOUT:.0f} s\n{tail}"
    assert counts is not None, f"contract {service}: no pytest summary line (exit {code})\n{tail}"
    assert code == 0, f"contract {service}: exit {code}, {counts}\n{tail}"
    assert counts.get("passed", 0) > 0, f"contract {service}: nothing passed, {counts}\n{tail}"
