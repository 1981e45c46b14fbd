"""`fedstack up` survives its own processes crashing: 8 random SIGKILLs of B's service
processes during a two-way stream of 300 messages each. The supervisor restarts each
killed process (nobody else does), every message arrives in order on both sides, and a
repeat is only ever a callback batch delivered again with its same position (the crash
window the callback contract documents)."""
from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import httpx

from fedstack.cli import SERVICES, free_port
from tests.crash.test_kill9 import TwoWayStream
from shared.settings import Settings
from tests.processes import CallbackServer

MESSAGES_PER_SIDE = 300
KILLS = 8


def fedstack_up(data_dir):
    port, api_port = free_port(), free_port()
    env = dict(os.environ, FEDSTACK_BACKOFF_MIN_S="0.2", FEDSTACK_BACKOFF_MAX_S="2")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedstack.cli", "up", "--server-name", f"127.0.0.1:{port}",
         "--data-dir", str(data_dir), "--port", str(port), "--api-port", str(api_port),
         "--allow-private-destinations", "--no-verify-tls"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env=env)
    deadline = time.monotonic() + 60
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "messaging" in line:
            hs = SimpleNamespace(proc=proc, ports={"messaging": api_port}, data_dir=data_dir,
                                 settings=Settings(server_name=f"127.0.0.1:{port}", data_dir=str(data_dir)))
            return hs
        if not line and proc.poll() is not None:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError("fedstack up did not start:\n" + "".join(lines))


def service_pids(up) -> dict[str, int]:
    """The supervisor's children by service (from their command lines)."""
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(up.proc.pid)],
                         capture_output=True, text=True).stdout
    pids = {}
    for line in out.splitlines():
        pid, _, args = line.strip().partition(" ")
        words = args.split()
        if "serve" in words and words[-1] in SERVICES:
            pids[words[-1]] = int(pid)
    return pids


def wait_restarted(up, service: str, old_pid: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = service_pids(up).get(service)
        if pid is not None and pid != old_pid:
            return pid
        time.sleep(0.05)
    raise AssertionError(f"{service} was not restarted by the supervisor")


def stop(up) -> str:
    up.proc.send_signal(signal.SIGTERM)
    try:
        up.proc.wait(30)
    finally:
        if up.proc.poll() is None:
            os.killpg(up.proc.pid, signal.SIGKILL)
    return up.proc.stdout.read()


def test_fedstack_up_restarts_killed_processes_and_loses_nothing(tmp_path):
    rng = random.Random(int(os.environ.get("FEDSTACK_CRASH_SEED", "11")))
    cb = CallbackServer().start()
    a = fedstack_up(tmp_path / "a")
    b = fedstack_up(tmp_path / "b")
    try:
        deadline = time.monotonic() + 600
        stream = TwoWayStream(a, b, cb, MESSAGES_PER_SIDE, deadline)
        kills = []
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.3, 1.5))
            service = rng.choice(SERVICES)
            pid = service_pids(b)[service]
            os.kill(pid, signal.SIGKILL)
            kills.append(service)
            wait_restarted(b, service, pid)
        stream.check_delivered()
        assert b.proc.poll() is None, "fedstack up of B stopped"
        scraped = httpx.get(f"http://127.0.0.1:{b.ports['messaging']}/metrics",
                            headers={"authorization": f"Bearer {b.settings.token()}"}, timeout=30).text
        restarts = {m.group(1): float(m.group(2)) for m in re.finditer(
            r'^fedstack_process_restarts\{instance="([^"]+)"\} (\S+)$', scraped, re.M)}
        assert restarts == {s: float(kills.count(s)) for s in SERVICES}, restarts
        state = (b.data_dir / "supervisor.json").read_text()
        print(f"kills: {kills}\nsupervisor: {state}")
    finally:
        out_b = stop(b)
        stop(a)
        cb.stop()
    for service in set(kills):
        assert f"{service} exited (killed by SIGKILL); restarting" in out_b, out_b
