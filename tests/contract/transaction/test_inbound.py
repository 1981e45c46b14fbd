"""Inbound `/send` transactions: idempotent per (origin, txn_id), refused whole when over
the limits (so a corrected retry is processed), one at a time per origin, and every staged
PDU reaches the pdu service once."""
from __future__ import annotations

import asyncio
import threading

import orjson
import pytest

from shared.contracts import transaction as c
from shared.crypto import SigningKey
from tests.contract.helpers import make_pdu, unique, wait_until
from tests.contract.transaction.conftest import new_room

KEY = SigningKey.generate("k")


def inbound(origin: str, txn_id: str) -> str:
    return c.INBOUND.format(origin=origin, txn_id=txn_id)


def txn(origin: str, pdus: list, edus: list | None = None) -> dict:
    body = {"origin": origin, "origin_server_ts": 1700000000000, "pdus": pdus}
    if edus is not None:
        body["edus"] = edus
    return body


def pdus_for(room_id: str, n: int, tag: str = "") -> tuple[list[dict], list[str]]:
    made = [make_pdu(room_id, KEY, body=f"{tag}{i}-{unique()}") for i in range(n)]
    return [p for p, _ in made], [e for _, e in made]


async def test_repeat_answers_byte_identical(service_client):
    room = await new_room(service_client)
    origin, txn_id = "remote.test", unique("t")
    pdus, ids = pdus_for(room, 3)
    first = await service_client.put(inbound(origin, txn_id), json=txn(origin, pdus))
    assert first.status_code == 200, first.text
    assert first.json() == {"pdus": {e: {} for e in ids}}
    again = await service_client.put(inbound(origin, txn_id), json=txn(origin, pdus))
    assert again.status_code == 200 and again.content == first.content
    # even a different body under the same id gets the first answer
    other, _ = pdus_for(room, 1)
    third = await service_client.put(inbound(origin, txn_id), json=txn(origin, other))
    assert third.content == first.content
    # the same txn_id from another origin is another transaction
    fresh = await service_client.put(inbound("elsewhere.test", txn_id), json=txn("elsewhere.test", other))
    assert fresh.status_code == 200 and fresh.content != first.content


async def test_repeats_stage_each_pdu_once(service_client, fake_pdu):
    room = await new_room(service_client)
    origin, txn_id = "remote.test", unique("t")
    pdus, ids = pdus_for(room, 4)
    body = txn(origin, pdus)
    # two concurrent copies, then a late retry
    a, b = await asyncio.gather(service_client.put(inbound(origin, txn_id), json=body),
                                service_client.put(inbound(origin, txn_id), json=body))
    assert a.status_code == b.status_code == 200 and a.content == b.content
    await wait_until(lambda: len(fake_pdu.items) >= 4, what="relay to pdu")
    late = await service_client.put(inbound(origin, txn_id), json=body)
    assert late.content == a.content
    await asyncio.sleep(0.2)
    assert fake_pdu.pdus() == pdus                   # once each, oldest first
    assert {i["origin"] for i in fake_pdu.items} == {origin}
    assert {i["room_id"] for i in fake_pdu.items} == {room}
    # each item names the event_id it was staged under, and that no such event is stored
    assert [(i["event_id"], i["known"]) for i in fake_pdu.items] == [(e, False) for e in ids]


@pytest.mark.parametrize("field,limit", [("pdus", 50), ("edus", 100)])
async def test_over_limit_is_400_and_nothing_is_stored(service_client, field, limit):
    room = await new_room(service_client)
    origin, txn_id = "remote.test", unique("t")
    pdus, ids = pdus_for(room, 51 if field == "pdus" else 2)
    edus = [{"edu_type": "m.typing", "content": {"n": i}} for i in range(101 if field == "edus" else 1)]
    resp = await service_client.put(inbound(origin, txn_id), json=txn(origin, pdus, edus))
    assert resp.status_code == 400, resp.text
    assert isinstance(resp.json()["errcode"], str)
    # the corrected retry under the same txn id is processed, not answered from storage
    fixed_pdus, fixed_ids = (pdus[:50], ids[:50]) if field == "pdus" else (pdus, ids)
    resp = await service_client.put(inbound(origin, txn_id), json=txn(origin, fixed_pdus, edus[:limit]))
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"pdus": {e: {} for e in fixed_ids}}


@pytest.mark.parametrize("body", [
    [], {"pdus": {}}, {"pdus": [], "edus": "x"}, {"origin": "remote.test"}])
async def test_malformed_transaction_is_400_and_nothing_is_stored(service_client, body):
    origin, txn_id = "remote.test", unique("t")
    resp = await service_client.put(inbound(origin, txn_id), content=orjson.dumps(body))
    assert resp.status_code == 400, resp.text
    room = await new_room(service_client)
    pdus, ids = pdus_for(room, 1)
    resp = await service_client.put(inbound(origin, txn_id), json=txn(origin, pdus))
    assert resp.json() == {"pdus": {ids[0]: {}}}


async def test_not_json_is_400(service_client):
    resp = await service_client.put(inbound("remote.test", unique("t")), content=b"{nope")
    assert resp.status_code == 400 and resp.json()["errcode"] == "M_NOT_JSON"


async def test_unknown_room_and_invalid_pdus_get_error_entries(service_client):
    room = await new_room(service_client)
    good, good_id = make_pdu(room, KEY)
    stranger, stranger_id = make_pdu(f"!{unique()}:nowhere.test", KEY)
    bad, bad_id = make_pdu(room, KEY, depth=-1)       # fails the event format
    resp = await service_client.put(inbound("remote.test", unique("t")),
                                    json=txn("remote.test", [good, stranger, bad]))
    assert resp.status_code == 200, resp.text
    entries = resp.json()["pdus"]
    assert entries[good_id] == {}
    assert set(entries) == {good_id, stranger_id, bad_id}
    assert isinstance(entries[stranger_id].get("error"), str)
    assert isinstance(entries[bad_id].get("error"), str)


async def test_only_known_room_pdus_reach_pdu(service_client, fake_pdu):
    room = await new_room(service_client)
    good, _ = make_pdu(room, KEY)
    stranger, _ = make_pdu(f"!{unique()}:nowhere.test", KEY)
    resp = await service_client.put(inbound("remote.test", unique("t")),
                                    json=txn("remote.test", [stranger, good]))
    assert resp.status_code == 200
    await wait_until(lambda: fake_pdu.items, what="relay")
    await asyncio.sleep(0.1)
    assert fake_pdu.pdus() == [good]


async def test_concurrent_other_txn_from_same_origin_is_429(service, service_client, inprocess):
    """While one transaction of an origin is being handled, another of its transactions
    is refused (429); other origins are not held up; the refused one is retried fine."""
    room = await new_room(service_client)
    db = service.app.state.svc.db
    started, release = threading.Event(), threading.Event()

    def hold(_conn):     # hold the db thread
        started.set()
        release.wait(5)
    blocker = asyncio.ensure_future(db.run(hold))
    await wait_until(started.is_set, what="the database thread held")
    try:
        first, second, third = (asyncio.ensure_future(service_client.put(
            inbound(origin, unique("t")), json=txn(origin, pdus_for(room, 1)[0])))
            for origin in ("remote.test", "remote.test", "other.test"))
        # all three are queued on the database thread behind the blocker (PostgreSQL:
        # their look-ups ran on reader connections; the two stagings wait for the writer)
        queued = 2 if db.engine.readers else 3
        await wait_until(lambda: db.queued >= queued, what="queued requests")
    finally:
        release.set()
    await blocker
    statuses = sorted([(await first).status_code, (await second).status_code])
    assert statuses == [200, 429], statuses
    assert (await third).status_code == 200
    refused = first if first.result().status_code == 429 else second
    retry = await service_client.put(refused.result().request.url.path,
                                     content=refused.result().request.content)
    assert retry.status_code == 200, retry.text


async def test_relay_retries_until_pdu_accepts(service_client, fake_pdu):
    fake_pdu.fail_next = 1
    room = await new_room(service_client)
    pdus, _ = pdus_for(room, 2)
    resp = await service_client.put(inbound("remote.test", unique("t")), json=txn("remote.test", pdus))
    assert resp.status_code == 200
    await wait_until(lambda: len(fake_pdu.items) >= 2, timeout=5, what="relay retry")
    assert fake_pdu.calls >= 2 and fake_pdu.pdus() == pdus
