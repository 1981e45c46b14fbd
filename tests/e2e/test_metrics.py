"""Prometheus metrics after a known traffic pattern: N messages to a destination that is
down, then up. Each service's own `/metrics` and the messaging API's combined view are
scraped and parsed as Prometheus does; two homeservers in one process keep apart."""
from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import InProcessHomeserver, Receiver

N = 12


@pytest.fixture
async def pair(tmp_path):
    network: dict = {}
    a = InProcessHomeserver("a.test:8448", tmp_path / "a", network, Receiver())
    b = InProcessHomeserver("b.test:8448", tmp_path / "b", network, Receiver())
    await a.start()
    await b.start()
    yield a, b
    await a.stop()
    await b.stop()


async def scrape(app) -> dict:
    """{(sample name, frozenset of labels): value} of an app's /metrics (parsed strictly)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://m") as c:
        r = await c.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


def parse(text: str) -> dict:
    out = {}
    for fam in text_string_to_metric_families(text):
        assert fam.name.startswith("fedstack_"), fam.name
        for s in fam.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out, f"duplicate series {key}"
            out[key] = s.value
    return out


def value(samples: dict, name: str, **labels) -> float:
    """The sum of the series of `name` whose labels include `labels` (0 if none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


async def eventually(check, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_counters_and_queue_gauges_after_an_outage(pair):
    a, b = pair
    alice, bob = a.user("alice"), b.user("bob")
    room = await a.api.create_room(alice, preset="public_chat")
    await b.api.join(room, bob, servers=[a.server_name])
    sb = await b.api.subscribe("http://cb/callback", room_id=room, types=["m.room.message"])
    b.link.down = True
    for i in range(N):
        await a.api.send(room, alice, "m.room.message", {"body": f"m{i}", "msgtype": "m.text"})

    async def down_state():
        m = await scrape(a.tx_app)
        dest = {"destination": b.server_name}
        assert value(m, "fedstack_destination_queue_depth", **dest) == N
        assert value(m, "fedstack_destination_oldest_item_age_seconds", **dest) > 0
        assert value(m, "fedstack_destination_failures", **dest) >= 1
        assert value(m, "fedstack_outbound_transactions_total", outcome="failed", **dest) >= 1
        return m
    await eventually(down_state)
    b.link.down = False
    await b.receiver.wait_for(lambda e: len(e) >= N, subscription_id=sb)

    async def up_state():
        m = await scrape(a.tx_app)
        dest = {"destination": b.server_name}
        assert value(m, "fedstack_destination_queue_depth", **dest) == 0
        assert value(m, "fedstack_destination_backoff_seconds", **dest) == 0
        assert value(m, "fedstack_destination_failures", **dest) == 0
        assert value(m, "fedstack_outbound_transactions_total", outcome="sent", **dest) >= 1
        assert value(m, "fedstack_outbound_transaction_seconds_count", **dest) >= 2
        return m
    ma = await eventually(up_state)
    # the database and the internal hops of A's transaction service were measured
    assert value(ma, "fedstack_db_call_seconds_count", call="persist") >= N
    assert value(ma, "fedstack_db_group_commit_size_count") >= 1
    assert value(ma, "fedstack_http_request_duration_seconds_count", service="transaction",
                 route="/_internal/transaction/v1/events/persist") >= N

    origin = {"origin": a.server_name}
    mtx = await scrape(b.tx_app)
    assert value(mtx, "fedstack_inbound_transactions_total", outcome="accepted", **origin) >= 1
    assert value(mtx, "fedstack_inbound_pdus_total", outcome="staged", **origin) == N
    assert value(mtx, "fedstack_event_stored_seconds_count") == N
    mpdu = await scrape(b.pdu_app)
    assert value(mpdu, "fedstack_inbound_pdus_total", outcome="accepted", **origin) == N
    mtr = await scrape(b.transport_app)
    assert value(mtr, "fedstack_http_request_duration_seconds_count", service="transport",
                 route="/_matrix/federation/v1/send/{txn_id:text}") >= 1
    # the other homeserver's registry is its own: B sent nothing to itself, A got no PDU
    assert value(await scrape(a.tx_app), "fedstack_inbound_pdus_total") == 0
    assert value(mtx, "fedstack_outbound_transactions_total", destination=b.server_name) == 0

    # the messaging API's combined view: all four services, one valid exposition
    status, text = await b.api.raw("GET", "/metrics")     # with the client's API token
    assert status == 200, text
    combined = parse(text.decode())
    for service in ("transport", "transaction", "pdu", "messaging"):
        assert value(combined, "fedstack_service_up", service=service) == 1
    assert value(combined, "fedstack_inbound_pdus_total", outcome="accepted", **origin) == N
    assert value(combined, "fedstack_inbound_pdus_total", outcome="staged", **origin) == N
    assert value(combined, "fedstack_event_delivered_seconds_count") >= N
    assert value(combined, "fedstack_subscription_batches_total", subscription=sb,
                 outcome="delivered") >= 1
    assert value(combined, "fedstack_subscription_lag_positions", subscription=sb) == 0
    for service in ("transport", "transaction", "pdu", "messaging"):
        assert value(combined, "fedstack_http_request_duration_seconds_count", service=service) > 0


async def test_combined_metrics_need_the_api_token(pair):
    a, _ = pair
    async with httpx.AsyncClient(transport=httpx.ASGITransport(a.messaging_app),
                                 base_url="http://m") as c:
        r = await c.get("/metrics")
        assert r.status_code == 401 and r.json()["errcode"] == "M_MISSING_TOKEN"
        r = await c.get("/metrics", headers={"authorization": "Bearer nope"})
        assert r.status_code == 401 and r.json()["errcode"] == "M_UNKNOWN_TOKEN"


async def test_the_public_federation_listener_hides_metrics(pair):
    """The transport's public listener (PublicOnly) answers 404 for /metrics, which its
    internal listener serves."""
    from fedstack.cli import PublicOnly
    a, _ = pair
    async with httpx.AsyncClient(transport=httpx.ASGITransport(PublicOnly(a.transport_app)),
                                 base_url="http://public") as c:
        r = await c.get("/metrics")
        assert r.status_code == 404 and r.json()["errcode"] == "M_UNRECOGNIZED"
    assert (await scrape(a.transport_app))   # the internal listener serves them


async def test_scope_service_is_the_messaging_service_alone(pair):
    a, _ = pair
    await a.api.create_room(a.user("alice"))
    status, text = await a.api.raw("GET", "/metrics?scope=service")
    assert status == 200
    own = parse(text.decode())
    assert value(own, "fedstack_http_request_duration_seconds_count", service="messaging") > 0
    assert not [k for k in own if dict(k[1]).get("service") not in (None, "messaging")]
    assert value(own, "fedstack_db_call_seconds_count") == 0     # the transaction's is not here
