"""`fedstack up` as a user runs it: four processes, printed addresses, a clean stop on
SIGTERM, and a second `up` on the same data directory resuming with the same key and data."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from fedstack.cli import free_port


def start_up(data_dir, port, api_port):
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedstack.cli", "up", "--server-name", f"127.0.0.1:{port}",
         "--data-dir", str(data_dir), "--port", str(port), "--api-port", str(api_port),
         "--allow-private-destinations", "--no-verify-tls"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "messaging" in line:
            return proc, "".join(lines)
    proc.kill()
    raise AssertionError("fedstack up did not print its listeners:\n" + "".join(lines))


def children(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_up_prints_stops_cleanly_and_resumes(tmp_path):
    port, api_port = free_port(), free_port()
    proc, printed = start_up(tmp_path, port, api_port)
    try:
        for word in ("transport", "transaction", "pdu", "messaging", f"https://127.0.0.1:{port}"):
            assert word in printed
        kids = children(proc.pid)
        assert len(kids) == 4
        key1 = httpx.get(f"https://127.0.0.1:{port}/_matrix/key/v2/server", verify=False).json()["verify_keys"]
        alice = f"@alice:127.0.0.1:{port}"
        auth = {"authorization": f"Bearer {(tmp_path / 'api_token').read_text().strip()}"}
        room = httpx.post(f"http://127.0.0.1:{api_port}/v1/rooms", json={"creator": alice},
                          headers=auth).json()["room_id"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert "stopped" in proc.stdout.read()
        for kid in kids:
            assert not os.path.exists(f"/proc/{kid}") or open(f"/proc/{kid}/stat").read().split()[2] == "Z"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    proc, _ = start_up(tmp_path, port, api_port)
    try:
        key2 = httpx.get(f"https://127.0.0.1:{port}/_matrix/key/v2/server", verify=False).json()["verify_keys"]
        assert key1 == key2
        state = httpx.get(f"http://127.0.0.1:{api_port}/v1/rooms/{room}/state", headers=auth).json()["state"]
        assert any(e["type"] == "m.room.create" for e in state)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
