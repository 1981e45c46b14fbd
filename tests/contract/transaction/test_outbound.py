"""Outbound delivery: queued PDUs reach a destination in transactions of at most 50, one in
flight at a time, a failed transaction is retried under the same txn_id, a poison
transaction does not wedge the queue, and the queue and backoff survive a restart. Also:
one transaction service per database file."""
from __future__ import annotations

import asyncio
import time

import pytest

from services.transaction.db import DatabaseInUse
from shared.contracts import transaction as c
from tests.contract.helpers import asgi_client, unique, wait_until
from tests.contract.transaction.conftest import (FakePdu, FakeTransport, build_transaction,
                                                 new_room, tx_settings)

DEST = "dest.test"


def queued_events(room: str, n: int, destinations=(DEST,), tag="o") -> tuple[dict, list[str]]:
    ids = ["$" + unique(f"{tag}{i}-") for i in range(n)]
    return {"events": [{"event_id": e, "room_id": room,
                        "event": {"type": "m.room.message", "room_id": room, "content": {"eid": e}}}
                       for e in ids],
            "destinations": {e: list(destinations) for e in ids}}, ids


async def destinations(client) -> dict:
    resp = await client.get(c.DESTINATIONS)
    assert resp.status_code == 200, resp.text
    return resp.json()["destinations"]


async def test_batches_of_50_one_in_flight_same_txn_id_on_retry(service_client, fake_transport):
    attempts = {"n": 0}

    def respond(dest, txn_id, body):           # the first two attempts get no answer
        attempts["n"] += 1
        return 0 if attempts["n"] <= 2 else 200
    fake_transport.respond = respond
    room = await new_room(service_client)
    body, ids = queued_events(room, 120)
    resp = await service_client.post(c.PERSIST, json=body)      # one commit: 120 queued
    assert resp.status_code == 200, resp.text
    await wait_until(lambda: len(fake_transport.delivered(DEST)) >= 120, timeout=10,
                     what="all 120 PDUs delivered")
    sends = fake_transport.sends
    assert fake_transport.delivered(DEST) == ids, "lost, repeated or reordered PDUs"
    assert all(s["n_pdus"] <= 50 for s in sends), [s["n_pdus"] for s in sends]
    assert fake_transport.max_in_flight[DEST] == 1
    assert {s["origin"] for s in sends} == {"hs.test"}
    # the failed attempts and the success that followed are one transaction
    assert sends[0]["status"] == sends[1]["status"] == 0 and sends[2]["status"] == 200
    assert sends[0]["txn_id"] == sends[1]["txn_id"] == sends[2]["txn_id"]
    assert sends[0]["event_ids"] == sends[1]["event_ids"] == sends[2]["event_ids"]
    ok = [s["txn_id"] for s in sends if s["status"] == 200]
    assert len(ok) == len(set(ok)) == 3, "every new transaction needs a new txn_id"
    await wait_until(lambda: _queued(service_client, 0), what="queue emptied")


async def _queued(client, n) -> bool:
    return (await destinations(client)).get(DEST, {}).get("queued") == n


async def test_destinations_are_independent(service_client, fake_transport):
    """A destination that is down does not hold up another one."""
    fake_transport.respond = lambda dest, txn_id, body: 0 if dest == "down.test" else 200
    room = await new_room(service_client)
    body, ids = queued_events(room, 3, destinations=("down.test", DEST))
    assert (await service_client.post(c.PERSIST, json=body)).status_code == 200
    await wait_until(lambda: fake_transport.delivered(DEST) == ids, what="delivery to the live one")
    state = await wait_until(lambda: _failing(service_client, "down.test"), what="backoff")
    assert state["queued"] == 3 and state["retry_at"] > time.time() - 1


async def _failing(client, dest):
    d = (await destinations(client)).get(dest)
    return d if d and d["failures"] >= 1 else None


async def test_poison_transaction_is_dropped_and_the_queue_moves_on(service_client, fake_transport):
    room = await new_room(service_client)
    poison_body, poison = queued_events(room, 1, tag="poison")
    fake_transport.respond = lambda dest, txn_id, body: (
        400 if any((p.get("content") or {}).get("eid") in poison for p in body["pdus"]) else 200)
    assert (await service_client.post(c.PERSIST, json=poison_body)).status_code == 200
    await wait_until(lambda: len(fake_transport.sends) >= 3, timeout=5, what="three refusals")
    body, ids = queued_events(room, 2, tag="after")
    assert (await service_client.post(c.PERSIST, json=body)).status_code == 200
    await wait_until(lambda: fake_transport.delivered(DEST) == ids, timeout=5,
                     what="events after the poison one")
    assert poison[0] not in fake_transport.delivered(DEST)


async def test_inbound_transaction_from_a_destination_ends_its_backoff(data_dir, database_url, inprocess):
    """A destination that sends us a transaction is alive: its queue goes out at once."""
    transport, pdu = FakeTransport(), FakePdu()
    transport.respond = lambda dest, txn_id, body: 0 if transport.down else 200
    transport.down = True
    app = build_transaction(tx_settings(data_dir, database_url, backoff_min_s=60, backoff_max_s=60), transport, pdu)
    async with app.router.lifespan_context(app), asgi_client(app) as client:
        room = await new_room(client)
        body, ids = queued_events(room, 1)
        assert (await client.post(c.PERSIST, json=body)).status_code == 200
        await wait_until(lambda: _failing(client, DEST), what="backoff")
        transport.down = False
        resp = await client.put(c.INBOUND.format(origin=DEST, txn_id=unique()),
                                json={"origin": DEST, "pdus": []})
        assert resp.status_code == 200
        await wait_until(lambda: transport.delivered(DEST) == ids, timeout=3, what="resend")


async def test_429_with_retry_after_is_retried_after_that_delay_not_backed_off(data_dir, database_url, inprocess):
    """A destination asking us to slow down (429 + retry_after_ms) gets the same
    transaction again after that delay; that is no failure: no backoff (here 60 s)."""
    transport, pdu = FakeTransport(), FakePdu()
    answers = iter([429, 429])
    transport.respond = lambda dest, txn_id, body: next(answers, 200)
    app = build_transaction(tx_settings(data_dir, database_url, backoff_min_s=60, backoff_max_s=60), transport, pdu)
    async with app.router.lifespan_context(app), asgi_client(app) as client:
        room = await new_room(client)
        body, ids = queued_events(room, 3)
        assert (await client.post(c.PERSIST, json=body)).status_code == 200
        await wait_until(lambda: transport.delivered(DEST) == ids, timeout=3, what="resend")
        assert [s["status"] for s in transport.sends] == [429, 429, 200]
        assert len({s["txn_id"] for s in transport.sends}) == 1

        async def recorded():     # the sender records a 200 after its coalescing pause
            return (await destinations(client)).get(DEST)
        info = await wait_until(recorded, timeout=3, what="the 200 recorded")
        assert info["failures"] == 0 and info["retry_at"] == 0.0


async def test_backoff_and_queue_survive_a_restart(data_dir, database_url, inprocess):
    settings = tx_settings(data_dir, database_url, backoff_min_s=30, backoff_max_s=60)
    failing, pdu = FakeTransport(), FakePdu()
    failing.respond = lambda dest, txn_id, body: 500
    app = build_transaction(settings, failing, pdu)
    async with app.router.lifespan_context(app), asgi_client(app) as client:
        room = await new_room(client)
        body, ids = queued_events(room, 2)
        assert (await client.post(c.PERSIST, json=body)).status_code == 200
        before = await wait_until(lambda: _failing(client, DEST), what="first failure")
    assert before["retry_interval"] == 30 and before["retry_at"] > time.time() + 20
    first_txn = failing.sends[0]["txn_id"]

    healthy = FakeTransport()
    app = build_transaction(settings, healthy, FakePdu())
    async with app.router.lifespan_context(app), asgi_client(app) as client:
        after = (await destinations(client))[DEST]
        assert {k: after[k] for k in ("retry_at", "retry_interval", "failures", "queued")} == {
            "retry_at": before["retry_at"], "retry_interval": 30, "failures": 1, "queued": 2}
        await asyncio.sleep(0.3)
        assert healthy.sends == [], "the restarted sender ignored the persisted backoff"
        # the destination shows it is alive: the same transaction goes out at once
        assert (await client.post(c.DESTINATION_UP.format(destination=DEST), json={})).status_code == 200
        await wait_until(lambda: healthy.delivered(DEST) == ids, what="resend after up")
        assert healthy.sends[0]["txn_id"] == first_txn


async def test_queue_survives_a_restart(data_dir, database_url, inprocess):
    """Whatever happens to the backoff, a queued transaction is neither lost nor renamed."""
    settings = tx_settings(data_dir, database_url, backoff_min_s=30, backoff_max_s=60)
    failing = FakeTransport()
    failing.respond = lambda dest, txn_id, body: 500
    app = build_transaction(settings, failing, FakePdu())
    async with app.router.lifespan_context(app), asgi_client(app) as client:
        room = await new_room(client)
        body, ids = queued_events(room, 2)
        assert (await client.post(c.PERSIST, json=body)).status_code == 200
        await wait_until(lambda: _failing(client, DEST), what="first failure")
    healthy = FakeTransport()
    app = build_transaction(settings, healthy, FakePdu())
    async with app.router.lifespan_context(app), asgi_client(app) as client:
        await client.post(c.DESTINATION_UP.format(destination=DEST), json={})
        await wait_until(lambda: healthy.delivered(DEST) == ids, what="resend after restart")
        assert healthy.sends[0]["txn_id"] == failing.sends[0]["txn_id"]
        await wait_until(lambda: _queued(client, 0), what="queue emptied")


async def test_second_service_on_the_same_database_refuses_to_start(data_dir, database_url, inprocess):
    settings = tx_settings(data_dir, database_url)
    first = build_transaction(settings, FakeTransport(), FakePdu())
    async with first.router.lifespan_context(first):
        second = build_transaction(settings, FakeTransport(), FakePdu())
        with pytest.raises(DatabaseInUse):
            async with second.router.lifespan_context(second):
                pass
    # once the first one stopped, the file is free again
    third = build_transaction(settings, FakeTransport(), FakePdu())
    async with third.router.lifespan_context(third), asgi_client(third) as client:
        assert (await client.get("/health")).status_code == 200
