"""Fixtures of the compose tests: a Docker engine of the run's own and the project image.

- `docker_engine` (session): `scripts/docker-engine.sh install|start|images` (apt
  docker.io/debootstrap if missing, the compose v2 plugin checked by sha256, a dockerd with
  --bridge=none --iptables=false on its own socket, local base images made with debootstrap),
  stopped at the end by the PID the script recorded. If the engine cannot be set up (not
  root, apt refuses, ...), the test fails with the script's message: it never skips.
- `fedstack_image` (session): the project image built by `docker compose build` from
  docker-compose.yml + host-network.override.yml (build network host) on the local
  python base image.
- Timings are printed as they are taken (`pytest -s`) and again in a "compose timings"
  section at the end of the run.
"""
from __future__ import annotations

import atexit
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENGINE = REPO / "scripts" / "docker-engine.sh"
COMPOSE_FILE = REPO / "docker-compose.yml"
OVERRIDE_FILE = Path(__file__).with_name("host-network.override.yml")
BASE_IMAGE = "local/python:3.11"
IMAGE = "fedstack:compose-test"
STATE_DIR = Path(os.environ.get("FEDSTACK_DOCKER_DIR", "/var/cache/fedstack-docker"))

TIMINGS: dict[str, str] = {}
_T0 = [0.0]


def record(name: str, value: str) -> None:
    TIMINGS[name] = value
    print(f"\n[compose timing] {name}: {value}", flush=True)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "compose: runs homeservers from docker-compose.yml in a Docker engine the test "
                   "sets up itself (root, apt; several minutes the first time); "
                   "deselect with -m 'not compose'")


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.section("compose timings")
        for name, value in TIMINGS.items():
            terminalreporter.write_line(f"{name:<44} {value}")


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run(cmd: list[str], *, env: dict | None = None, timeout: float, what: str) -> subprocess.CompletedProcess:
    """Run a command; on failure (or time-out) fail the test with its output's tail."""
    try:
        proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = (exc.stderr or b"").decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        pytest.fail(f"{what}: no result after {timeout:.0f} s\n{_tail(out + err)}", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"{what}: exit {proc.returncode}\n{_tail(proc.stdout + proc.stderr)}", pytrace=False)
    return proc


def timed(name: str, cmd: list[str], **kw) -> subprocess.CompletedProcess:
    t0 = time.monotonic()
    proc = run(cmd, **kw)
    for line in proc.stderr.splitlines():  # docker-engine.sh reports its sub-steps there
        if line.startswith("docker-engine:"):
            print(f"\n  {line}", end="")
    record(name, f"{time.monotonic() - t0:.1f} s")
    return proc


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together while choosing)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def base_env(docker_host: str) -> dict[str, str]:
    """The caller's environment without any FEDSTACK_* settings, pointed at our engine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDSTACK_") and k != "BASE_IMAGE"}
    env.update(DOCKER_HOST=docker_host, COMPOSE_BAKE="false")
    if "FEDSTACK_DOCKER_DIR" in os.environ:
        env["FEDSTACK_DOCKER_DIR"] = os.environ["FEDSTACK_DOCKER_DIR"]
    return env


def _engine_pid() -> int | None:
    try:
        return int((STATE_DIR / "dockerd.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _stop_engine() -> None:
    subprocess.run([str(ENGINE), "stop"], cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def docker_engine():
    """DOCKER_HOST of a running engine of our own, with the local base images present."""
    _T0[0] = time.monotonic()
    started_here = False
    try:
        timed("engine: apt packages + compose plugin", [str(ENGINE), "install"], timeout=900,
              what="Docker engine could not be set up: scripts/docker-engine.sh install")
        was_running = _engine_pid() is not None and subprocess.run(
            [str(ENGINE), "status"], capture_output=True).returncode == 0
        timed("engine: dockerd start", [str(ENGINE), "start"], timeout=120,
              what="Docker engine could not be set up: scripts/docker-engine.sh start")
        started_here = not was_running
        if started_here:
            atexit.register(_stop_engine)
        timed("engine: base images (debootstrap, python layer)", [str(ENGINE), "images"], timeout=900,
              what="Docker engine could not be set up: scripts/docker-engine.sh images")
        host = run([str(ENGINE), "env"], timeout=10, what="docker-engine.sh env").stdout.strip()
        yield host.split("=", 1)[1]
    finally:
        pid = _engine_pid()
        if started_here:
            t0 = time.monotonic()
            proc = subprocess.run([str(ENGINE), "stop"], cwd=REPO, capture_output=True, text=True, timeout=120)
            atexit.unregister(_stop_engine)
            record("engine: dockerd stop (by PID)", f"{time.monotonic() - t0:.1f} s (PID {pid})")
            assert proc.returncode == 0, proc.stderr
            assert pid is None or not Path(f"/proc/{pid}").exists(), f"dockerd PID {pid} still running"
        record("compose tests: total wall time", f"{time.monotonic() - _T0[0]:.1f} s")


def compose_env(docker_host: str, **settings: str) -> dict[str, str]:
    """Environment for `docker compose` with the two files; settings are FEDSTACK_* values."""
    env = base_env(docker_host)
    env.update({"FEDSTACK_IMAGE": IMAGE, "BASE_IMAGE": BASE_IMAGE}, **settings)
    return env


def compose_cmd(project: str, env_file: Path, *args: str) -> list[str]:
    # --env-file: an empty one, so that a developer's .env at the repo root does not leak in.
    return ["docker", "compose", "--env-file", str(env_file), "-p", project,
            "-f", str(COMPOSE_FILE), "-f", str(OVERRIDE_FILE), *args]


@pytest.fixture(scope="session")
def empty_env_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("compose") / "empty.env"
    p.write_text("")
    return p


@pytest.fixture(scope="session")
def fedstack_image(docker_engine, empty_env_file) -> str:
    """The project image, built with compose (BASE_IMAGE=local python image, network host)."""
    ports = dict(zip(["TRANSACTION", "PDU", "TRANSPORT", "MESSAGING", "FEDERATION"], free_ports(5)))
    env = compose_env(docker_engine, FEDSTACK_INTERNAL_SECRET="build-only", FEDSTACK_API_TOKEN="build-only",
                      **{f"FEDSTACK_TEST_{k}_PORT": str(v) for k, v in ports.items()})
    timed("project image build (docker compose build)",
          compose_cmd("fedstack-test-build", empty_env_file, "build", "transaction"),
          env=env, timeout=900, what="docker compose build of the fedstack image")
    size = run(["docker", "image", "inspect", "-f", "{{.Size}}", IMAGE], env=env, timeout=30,
               what="docker image inspect").stdout.strip()
    base = run(["docker", "image", "inspect", "-f", "{{.Size}}", BASE_IMAGE], env=env, timeout=30,
               what="docker image inspect").stdout.strip()
    record("project image size", f"{int(size) / 1e6:.0f} MB (base {BASE_IMAGE}: {int(base) / 1e6:.0f} MB)")
    return IMAGE
