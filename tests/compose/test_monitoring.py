"""docker-compose.yml's `monitoring` profile for real: a homeserver started with it has a
Prometheus (monitoring/Dockerfile) whose four targets, the services, are up, and a
fedstack metric of each service is scraped: queried through Prometheus' own HTTP API.

Run alone:  python3 -m pytest -s -m compose tests/compose/test_monitoring.py
"""
from __future__ import annotations

import time

import httpx
import pytest

from tests.compose.conftest import free_ports, record
from tests.compose.test_compose import ComposeHomeserver

pytestmark = pytest.mark.compose

# one metric each service serves once it answered a request (the health checks count)
PER_JOB = {"transport": "fedstack_http_request_duration_seconds_count",
           "transaction": "fedstack_db_call_seconds_count",
           "pdu": "fedstack_http_request_duration_seconds_count",
           "messaging": "fedstack_http_request_duration_seconds_count"}


@pytest.fixture(scope="module")
def monitored(docker_engine, fedstack_image, empty_env_file):
    hs = ComposeHomeserver("fedstack-test-mon", docker_engine, empty_env_file)
    (port,) = free_ports(1)
    hs.env.update(FEDSTACK_TEST_PROMETHEUS_PORT=str(port),
                  FEDSTACK_PROMETHEUS_IMAGE="fedstack-prometheus:compose-test")
    t0 = time.monotonic()
    hs.compose("--profile", "monitoring", "build", "prometheus", timeout=900,
               what="docker compose build of the Prometheus image")
    record("prometheus image build", f"{time.monotonic() - t0:.1f} s")
    t0 = time.monotonic()
    hs.is_up = True
    try:
        hs.compose("--profile", "monitoring", "up", "-d", "--wait", "--wait-timeout", "180",
                   "--no-build", "--pull", "never", timeout=300)
        record("monitored homeserver: compose up to all healthy", f"{time.monotonic() - t0:.1f} s")
        yield hs, f"http://127.0.0.1:{port}"
    except BaseException:
        print(hs.logs())
        raise
    finally:
        hs.compose("--profile", "monitoring", "down", "-v", "--timeout", "20", timeout=120)


def query(prom: str, expr: str) -> list[dict]:
    r = httpx.get(prom + "/api/v1/query", params={"query": expr}, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_scrapes_the_four_services(monitored):
    hs, prom = monitored
    alice = hs.user("alice")
    hs.call("POST", "/v1/rooms", {"creator": alice, "preset": "public_chat"})   # some traffic
    deadline = time.monotonic() + 90
    while True:
        targets = httpx.get(prom + "/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in targets}
        found = {job: query(prom, f'sum({metric}{{job="{job}"}})') for job, metric in PER_JOB.items()}
        if health == dict.fromkeys(PER_JOB, "up") and all(
                r and float(r[0]["value"][1]) > 0 for r in found.values()):
            break
        assert time.monotonic() < deadline, f"targets {targets}; samples {found}"
        time.sleep(1)
    # the messaging job scrapes its own series only (scope=service), not the combined view
    assert not query(prom, 'fedstack_db_call_seconds_count{job="messaging"}')
    (up,) = query(prom, 'up{job="messaging"}')
    assert up["value"][1] == "1"
