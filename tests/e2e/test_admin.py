"""`fedstack admin` over the messaging API's admin routes: a down destination is listed
with its queue and retry time, and `retry` makes it send at once instead of after its
backoff; rooms, origins, subscriptions and status answer with what the homeserver holds.
The CLI runs in this process against the in-process homeserver's API (an ASGI transport
stands for the network)."""
from __future__ import annotations

import argparse
import io
import json
import time

import httpx
import pytest

from fedstack import admin
from tests.harness import InProcessHomeserver, Receiver

BACKOFF_S = 30.0


@pytest.fixture
async def pair(tmp_path):
    network: dict = {}
    a = InProcessHomeserver("a.test:8448", tmp_path / "a", network, Receiver())
    a.settings = a.settings.with_(backoff_min_s=BACKOFF_S, backoff_max_s=BACKOFF_S * 2)
    b = InProcessHomeserver("b.test:8448", tmp_path / "b", network, Receiver())
    await a.start()
    await b.start()
    yield a, b
    await a.stop()
    await b.stop()


async def cli(hs, *argv, token=None) -> tuple[int, str]:
    """`fedstack admin ARGV` against `hs`'s messaging API; (exit status, output)."""
    parser = argparse.ArgumentParser()
    admin.add_arguments(parser)
    args = parser.parse_args([*argv, f"--token={token or hs.settings.token()}"])
    out = io.StringIO()
    status = await admin.run_async(args, transport=httpx.ASGITransport(hs.messaging_app), out=out)
    return status, out.getvalue()


async def test_destinations_and_retry_now(pair):
    a, b = pair
    alice, bob = a.user("alice"), b.user("bob")
    room = await a.api.create_room(alice, preset="public_chat")
    await b.api.join(room, bob, servers=[a.server_name])
    sb = await b.api.subscribe("http://cb/callback", room_id=room, types=["m.room.message"])
    b.link.down = True
    for i in range(3):
        await a.api.send(room, alice, "m.room.message", {"body": f"m{i}", "msgtype": "m.text"})
    deadline = time.monotonic() + 10
    while True:     # A's sender tried, failed, and backs off
        status, out = await cli(a, "destinations", "--json")
        assert status == 0, out
        row = next((d for d in json.loads(out)["destinations"] if d["destination"] == b.server_name), None)
        if row and row["failures"] >= 1:
            break
        assert time.monotonic() < deadline, out
        await asyncio_sleep(0.05)
    assert row["queued"] == 3
    assert row["retry_at"] > time.time() + BACKOFF_S / 2
    assert row["oldest_age_s"] is not None and row["oldest_age_s"] >= 0
    status, table = await cli(a, "destinations")
    assert status == 0
    line = next(l for l in table.splitlines() if b.server_name in l)
    cells = [c.strip() for c in line.split("│")[1:-1]]
    assert cells[0] == b.server_name and cells[1] == "3" and cells[4] == "1"
    assert cells[5].startswith("in ") and cells[5].endswith(" s")    # retry in ~30 s

    b.link.down = False
    await asyncio_sleep(1.0)
    assert not b.receiver.events(sb), "delivered before its backoff ended: nothing to show"
    status, out = await cli(a, "retry", b.server_name)
    assert status == 0 and "sending now" in out
    started = time.monotonic()
    await b.receiver.wait_for(lambda e: len(e) >= 3, timeout=1.0, subscription_id=sb)
    assert time.monotonic() - started < 1.0
    status, out = await cli(a, "destinations", "--json")
    row = next(d for d in json.loads(out)["destinations"] if d["destination"] == b.server_name)
    assert row["queued"] == 0 and row["failures"] == 0 and row["last_success_ts"] > time.time() - 5


async def test_rooms_origins_subscriptions_status(pair):
    a, b = pair
    alice, bob = a.user("alice"), b.user("bob")
    room = await a.api.create_room(alice, preset="public_chat")
    await b.api.join(room, bob, servers=[a.server_name])
    sid = await b.api.subscribe("http://cb/callback", room_id=room, types=["m.room.message"])
    await a.api.send(room, alice, "m.room.message", {"body": "x", "msgtype": "m.text"})
    await b.receiver.wait_for(lambda e: len(e) >= 1, subscription_id=sid)

    status, out = await cli(b, "rooms", "--json")
    assert status == 0
    (r,) = [r for r in json.loads(out)["rooms"] if r["room_id"] == room]
    assert r["members"] == {a.server_name: 1, b.server_name: 1}
    assert r["room_version"] and len(r["extremities"]) >= 1

    status, out = await cli(b, "origins", "--json")
    assert status == 0
    (o,) = [o for o in json.loads(out)["origins"] if o["origin"] == a.server_name]
    assert o["transactions"].get("accepted", 0) >= 1 and o["pdus"].get("accepted", 0) >= 1
    assert o["refusals"] == 0

    status, out = await cli(b, "subscriptions", "--json")
    (s,) = [s for s in json.loads(out)["subscriptions"] if s["subscription_id"] == sid]
    assert s["lag"] >= 0 and s["last_delivered_ts"] is not None

    status, out = await cli(b, "status", "--json")
    st = json.loads(out)
    assert st["services"] == {"transport": "up", "transaction": "up", "pdu": "up", "messaging": "up"}
    assert st["rooms"] >= 1 and st["subscriptions"] >= 1
    for what in ("rooms", "origins", "subscriptions", "status"):   # the tables print
        status, out = await cli(b, what)
        assert status == 0 and out.strip(), what

    status, out = await cli(b, "status", token="wrong")
    assert status == 1 and "M_UNKNOWN_TOKEN" in out


async def asyncio_sleep(s):
    import asyncio
    await asyncio.sleep(s)
