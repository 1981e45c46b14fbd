"""Operating a homeserver of real processes (as `fedstack up` starts them): one `grep` of a
request id over the four services' log files follows a federation /send; the messaging
port's /metrics combines the four services (fetched over the internal HTTP hops); the
`fedstack admin` command finds the API and its token as an operator would."""
from __future__ import annotations

import json
import os
import subprocess
import time
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.processes import CallbackServer, api_headers, api_url, start_homeserver


@pytest.fixture(scope="module")
def servers(tmp_path_factory, database_for):
    old = {k: os.environ.get(k) for k in ("FEDSTACK_LOG_LEVEL", "FEDSTACK_LOG_FORMAT")}
    os.environ.update(FEDSTACK_LOG_LEVEL="info", FEDSTACK_LOG_FORMAT="json")
    try:
        a, b = tmp_path_factory.mktemp("ops-a"), tmp_path_factory.mktemp("ops-b")
        a = start_homeserver(a, database_url=database_for(a))
        b = start_homeserver(b, database_url=database_for(b))
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    cb = CallbackServer().start()
    yield a, b, cb
    cb.stop()
    a.stop()
    b.stop()


def api(hs, method, path, **kw):
    r = httpx.request(method, api_url(hs) + path, timeout=60, headers=api_headers(hs), **kw)
    assert r.status_code == 200, r.text
    return r.json()


def log_lines(hs) -> list[dict]:
    out = []
    for f in sorted(Path(hs.settings.data_dir, "logs").glob("*.log")):
        for line in f.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
    return out


def admin(hs, *argv, data_dir=True) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDSTACK_")}
    env["FEDSTACK_API_URL"] = api_url(hs)
    extra = ["--data-dir", hs.settings.data_dir] if data_dir else []
    p = subprocess.run([sys.executable, "-m", "fedstack.cli", "admin", *argv, *extra],
                       capture_output=True, text=True, env=env, timeout=60,
                       cwd=Path(hs.settings.data_dir).parent)   # no ./data of another homeserver
    return p.returncode, p.stdout + p.stderr


def test_one_request_id_in_four_log_files_metrics_and_admin(servers):
    a, b, cb = servers
    alice, bob = f"@alice:{a.settings.server_name}", f"@bob:{b.settings.server_name}"
    room = api(a, "POST", "/v1/rooms", json={"creator": alice, "preset": "public_chat"})["room_id"]
    api(b, "POST", f"/v1/rooms/{room}/join", json={"user_id": bob, "servers": [a.settings.server_name]})
    sid = api(b, "POST", "/v1/subscriptions", json={"url": cb.url, "room_id": room,
                                                    "types": ["m.room.message"]})["subscription_id"]
    eid = api(a, "POST", f"/v1/rooms/{room}/events", json={
        "sender": alice, "type": "m.room.message",
        "content": {"msgtype": "m.text", "body": "grep me"}})["event_id"]
    cb.wait_for(sid, lambda evs: any(e["event_id"] == eid for e in evs))

    # messaging logs "delivered" once the callback's answer is back, a moment after the
    # callback arrived here: read the logs until that line is written (or 15 s)
    deadline = time.monotonic() + 15
    while True:
        lines = log_lines(b)
        if (any(l["service"] == "messaging" and eid in l["msg"] for l in lines)
                or time.monotonic() > deadline):
            break
        time.sleep(0.1)
    (pdu_line,) = [l for l in lines if l["service"] == "pdu" and eid in l["msg"]]
    rid = pdu_line["request_id"]
    grep = [l for l in lines if l.get("request_id") == rid]   # what `grep rid *.log` finds
    assert {l["service"] for l in grep} == {"transport", "transaction", "pdu", "messaging"}, grep
    assert any(l["service"] == "transport" and a.settings.server_name in l["msg"] for l in grep)
    assert any(l["service"] == "messaging" and eid in l["msg"] for l in grep)

    r = httpx.get(api_url(b) + "/metrics", headers=api_headers(b), timeout=30)
    assert r.status_code == 200
    fams = {f.name: f for f in text_string_to_metric_families(r.text)}
    up = {s.labels["service"]: s.value for s in fams["fedstack_service_up"].samples}
    assert up == {"transport": 1, "transaction": 1, "pdu": 1, "messaging": 1}
    accepted = [s.value for s in fams["fedstack_inbound_pdus"].samples
                if s.labels == {"origin": a.settings.server_name, "outcome": "accepted"}]
    assert accepted and accepted[0] >= 1
    assert httpx.get(api_url(b) + "/metrics", timeout=30).status_code == 401

    status, out = admin(b, "status", "--json")       # token from the data directory
    assert status == 0, out
    assert json.loads(out)["services"] == {"transport": "up", "transaction": "up",
                                           "pdu": "up", "messaging": "up"}
    status, out = admin(a, "destinations")
    assert status == 0 and b.settings.server_name in out, out
    status, out = admin(a, "destinations", data_dir=False)   # no token anywhere
    assert status == 1 and "M_MISSING_TOKEN" in out, out
