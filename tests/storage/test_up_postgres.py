"""`fedstack up --database-url postgresql+psycopg://...` as an operator runs it: the
database is created at the code's revision before any process starts (the transaction
service never writes a sqlite file), a room made through the API is in PostgreSQL, and a
second `up` on the same data directory and database resumes with it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import psycopg

from fedstack.cli import free_port
from services.transaction import migrate


def _up(data_dir, port, api_port, url):
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedstack.cli", "up", "--server-name", f"127.0.0.1:{port}",
         "--data-dir", str(data_dir), "--port", str(port), "--api-port", str(api_port),
         "--allow-private-destinations", "--no-verify-tls", "--database-url", url],
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


def _stop(proc) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_up_on_postgresql_creates_the_schema_and_resumes(tmp_path, postgres):
    url = postgres.new_database()
    port, api_port = free_port(), free_port()
    proc, printed = _up(tmp_path, port, api_port, url)
    try:
        assert "created to schema revision" in printed
        auth = {"authorization": f"Bearer {(tmp_path / 'api_token').read_text().strip()}"}
        room = httpx.post(f"http://127.0.0.1:{api_port}/v1/rooms", json={"creator": f"@a:127.0.0.1:{port}"},
                          headers=auth, timeout=30).json()["room_id"]
    finally:
        _stop(proc)
    assert not (tmp_path / "fedstack.db").exists()
    assert migrate.current_revision(url) == migrate.HEAD
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        assert conn.execute("SELECT room_id FROM rooms").fetchall() == [(room,)]

    again = subprocess.run([sys.executable, "-m", "fedstack.cli", "migrate", "--data-dir", str(tmp_path),
                            "--database-url", url], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stdout == ""          # already current

    proc, printed = _up(tmp_path, port, api_port, url)
    try:
        assert "schema revision" not in printed
        auth = {"authorization": f"Bearer {(tmp_path / 'api_token').read_text().strip()}"}
        rooms = httpx.get(f"http://127.0.0.1:{api_port}/v1/admin/rooms", headers=auth, timeout=30)
        assert rooms.status_code == 200 and room in str(rooms.json())
    finally:
        _stop(proc)
