"""Catalogue: Inbound transactions (`PUT /send/{txnId}`).

Every case sends from a fake remote that joined one of our rooms, and checks the answer
(status, errcode, per-PDU entries) and the side effects through our own APIs: what is
stored (transaction service), what is live (messaging events endpoint), what reached a
subscription.
"""
from __future__ import annotations

import asyncio

import pytest

from tests.fakes.remote import FED, q
from tests.hostile.conftest import (delivered, errcode, joined_room, sentinel, subscribe,
                                    wait_delivered)


def chain(froom, n, prefix="m"):
    return [froom.message("fred", f"{prefix}{i}") for i in range(n)]


# --------------------------------------------------------------------------- limits

async def test_more_than_50_pdus_refused_then_corrected_retry_works(hs, remote):
    room, froom = await joined_room(hs, remote)
    sid = await subscribe(hs, room)
    evs = chain(froom, 51)
    r = await remote.send_transaction(hs, [e for _, e in evs], txn_id="big")
    assert errcode(r) == (400, "M_BAD_JSON")
    assert await hs.records(*[i for i, _ in evs]) == {}
    # the refusal was not stored: the corrected transaction under the same txnId works
    r = await remote.send_transaction(hs, [e for _, e in evs[:50]], txn_id="big")
    assert r.status_code == 200
    assert r.json() == {"pdus": {i: {} for i, _ in evs[:50]}}
    await wait_delivered(hs, sid, evs[49][0])
    assert delivered(hs, sid)[-50:] == [i for i, _ in evs[:50]]
    assert evs[50][0] not in await hs.live_ids(room)


async def test_more_than_100_edus_refused_then_corrected_retry_works(hs, remote):
    room, froom = await joined_room(hs, remote)
    eid, ev = froom.message("fred", "with edus")
    edus = [{"edu_type": "m.typing", "content": {"room_id": room, "user_id": remote.user("fred"),
                                                 "typing": True}}] * 101
    r = await remote.send_transaction(hs, [ev], edus, txn_id="edus")
    assert errcode(r) == (400, "M_BAD_JSON")
    assert await hs.records(eid) == {}
    r = await remote.send_transaction(hs, [ev], edus[:100], txn_id="edus")
    assert r.status_code == 200 and r.json() == {"pdus": {eid: {}}}
    await hs.wait_live(room, eid)


# --------------------------------------------------------------------------- idempotency

async def test_same_txn_again_same_bytes_nothing_twice_even_after_restart(hs, remote):
    room, froom = await joined_room(hs, remote)
    sid = await subscribe(hs, room)
    eid, ev = froom.message("fred", "once")
    r1 = await remote.send_transaction(hs, [ev], txn_id="t1")
    assert r1.status_code == 200 and r1.json() == {"pdus": {eid: {}}}
    await wait_delivered(hs, sid, eid)
    r2 = await remote.send_transaction(hs, [ev], txn_id="t1")
    assert r2.status_code == 200 and r2.content == r1.content
    # a reused txnId with other content is answered from storage; the new PDU is ignored
    other_id, other = froom.message("fred", "smuggled", add=False)
    r3 = await remote.send_transaction(hs, [other], txn_id="t1")
    assert r3.status_code == 200 and r3.content == r1.content
    await hs.restart()
    r4 = await remote.send_transaction(hs, [ev, other], txn_id="t1")
    assert r4.status_code == 200 and r4.content == r1.content
    await sentinel(hs, remote, froom)
    live = await hs.live_ids(room)
    assert live.count(eid) == 1 and other_id not in live
    assert await hs.records(other_id) == {}
    assert delivered(hs, sid).count(eid) == 1


async def test_same_txn_while_running_waits_for_the_first_answer_other_txn_gets_429(hs, remote):
    room, froom = await joined_room(hs, remote)
    inbound = hs.tx_app.state.svc.inbound
    real, gate, entered = inbound._process, asyncio.Event(), asyncio.Event()

    async def held(*args, **kwargs):
        entered.set()
        await gate.wait()
        return await real(*args, **kwargs)

    inbound._process = held
    try:
        eid, ev = froom.message("fred", "slow")
        first = asyncio.create_task(remote.send_transaction(hs, [ev], txn_id="run-1"))
        await asyncio.wait_for(entered.wait(), 5)
        again = asyncio.create_task(remote.send_transaction(hs, [ev], txn_id="run-1"))
        other_id, other = froom.message("fred", "parallel")
        r_other = await remote.send_transaction(hs, [other], txn_id="run-2")
        assert errcode(r_other) == (429, "M_UNKNOWN")
        await asyncio.sleep(0.05)
        assert not again.done()
        gate.set()
        r1, r2 = await first, await again
    finally:
        inbound._process = real
    assert r1.status_code == r2.status_code == 200 and r1.content == r2.content
    assert r1.json() == {"pdus": {eid: {}}}
    await hs.wait_live(room, eid)
    assert await hs.records(other_id) == {}
    # the 429 was not stored: the same txnId is processed once the first is done
    r = await remote.send_transaction(hs, [other], txn_id="run-2")
    assert r.status_code == 200 and r.json() == {"pdus": {other_id: {}}}
    await hs.wait_live(room, other_id)
    assert (await hs.live_ids(room)).count(eid) == 1


@pytest.mark.parametrize("pair", [("a?b", "a?c"), ("x#1", "x#2"), ("p%41", "pA"), ("ü 1", "ü 2"),
                                  ("n\n1", "n\n2")])
async def test_txn_ids_are_compared_exactly(hs, remote, pair):
    """Characters that mean something in a URL ('?', '#', '%') or need encoding never make
    two different txnIds collide (nor split one) on the way to the transaction store."""
    room, froom = await joined_room(hs, remote)
    (e1, ev1), (e2, ev2) = chain(froom, 2)
    r1 = await remote.send_transaction(hs, [ev1], txn_id=pair[0])
    r2 = await remote.send_transaction(hs, [ev2], txn_id=pair[1])
    assert r1.json() == {"pdus": {e1: {}}}
    assert r2.json() == {"pdus": {e2: {}}}
    await hs.wait_live(room, e2)
    r1b = await remote.send_transaction(hs, [ev2], txn_id=pair[0])
    assert r1b.content == r1.content


# --------------------------------------------------------------------------- bad PDUs

async def test_bad_pdus_among_good_ones_get_their_entries_good_ones_stored(hs, remote):
    room, froom = await joined_room(hs, remote)
    sid = await subscribe(hs, room)
    g1, good1 = froom.message("fred", "good 1")
    bad = {}
    i, ev = froom.message("fred", "float", add=False)
    ev["content"]["n"] = 1.5
    bad["float"] = (i, ev)
    i, ev = froom.message("fred", "big int", add=False)
    ev["content"]["n"] = 2**53
    bad["big int"] = (i, ev)
    i, ev = froom.message("fred", "huge int", add=False)
    ev["content"]["n"] = 2**70
    bad["huge int"] = (i, ev)
    other = remote.create_room(version="12")          # a room we are not in
    bad["unknown room"] = other.message("creator", "elsewhere", add=False)
    i, ev = froom.message("fred", "no depth", add=False)
    del ev["depth"]
    bad["missing depth"] = (i, froom.event_id(ev)), ev
    bad["missing depth"] = (froom.event_id(ev), ev)
    i, ev = froom.message("fred", "bad sender", add=False)
    ev["sender"] = "not a user"
    bad["bad sender"] = (froom.event_id(ev), ev)
    i, ev = froom.message("fred", "bad prevs", add=False)
    ev["prev_events"] = "not a list"
    bad["bad prev_events"] = (froom.event_id(ev), ev)
    i, ev = froom.message("fred", "string ts", add=False)
    ev["origin_server_ts"] = "yesterday"
    bad["string ts"] = (froom.event_id(ev), ev)
    unusable = [1, "pdu", None, [], {"room_id": 5}, {"no": "room"}]
    g2, good2 = froom.message("fred", "good 2")
    pdus = [good1, *[ev for _, ev in bad.values()], *unusable, good2]
    r = await remote.send_transaction(hs, pdus)
    assert r.status_code == 200, r.text
    entries = r.json()["pdus"]
    assert entries[g1] == {} and entries[g2] == {}
    for what, (eid, _ev) in bad.items():
        assert set(entries[eid]) == {"error"}, what
    assert entries.keys() == {g1, g2} | {eid for eid, _ in bad.values()}
    await wait_delivered(hs, sid, g2)
    assert delivered(hs, sid) == [g1, g2]
    assert await hs.records(*[eid for eid, _ in bad.values()]) == {}
    assert await hs.extremities(room) == [g2]


BAD_BODIES = [
    (b"not json", "M_NOT_JSON"),
    (b"", "M_NOT_JSON"),
    (b'{"pdus": [', "M_NOT_JSON"),
    (b"\xff\xfe{}", "M_NOT_JSON"),
    (b'\xef\xbb\xbf{"pdus": []}', "M_NOT_JSON"),
    (b'{"pdus": [], "x": NaN}', "M_NOT_JSON"),
    (b'{"pdus": [], "x": Infinity}', "M_NOT_JSON"),
    (b'{"pdus": [], "x": 1e400}', "M_BAD_JSON"),
    (b'{"pdus": [], "x": ' + b"9" * 5000 + b"}", "M_NOT_JSON"),
    (b'{"pdus": [], "x": "\\ud800"}', "M_NOT_JSON"),
    (b'{"pdus": [], "x": "\x01"}', "M_NOT_JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "M_NOT_JSON"),
    (b'{"pdus": ' + b'{"a":' * 5000 + b"1" + b"}" * 5001, "M_NOT_JSON"),
    (b"[]", "M_BAD_JSON"),
    (b"null", "M_BAD_JSON"),
    (b'"pdus"', "M_BAD_JSON"),
    (b'{"pdus": {}}', "M_BAD_JSON"),
    (b'{"edus": []}', "M_BAD_JSON"),
    (b'{"pdus": [], "edus": "x"}', "M_BAD_JSON"),
]


@pytest.mark.parametrize("raw,code", BAD_BODIES, ids=[f"{c}-{i}" for i, (_, c) in enumerate(BAD_BODIES)])
async def test_bodies_that_are_not_a_transaction_get_400_never_500(hs, remote, raw, code):
    room, froom = await joined_room(hs, remote)
    import orjson
    try:
        content = orjson.loads(raw)
    except Exception:  # noqa: BLE001
        content = None
    r = await remote.request(hs, "PUT", f"{FED}/v1/send/bad", raw_body=raw, sign_content=content)
    assert errcode(r) == (400, code), r.text
    # nothing was stored under that txnId: a good transaction with it is processed
    eid, ev = froom.message("fred", "after")
    r = await remote.send_transaction(hs, [ev], txn_id="bad")
    assert r.status_code == 200 and r.json() == {"pdus": {eid: {}}}
    await hs.wait_live(room, eid)


# --------------------------------------------------------------------------- EDUs

async def test_edus_of_other_servers_users_and_malformed_edus_are_ignored(hs, remote):
    room, froom = await joined_room(hs, remote)
    sid = await subscribe(hs, room)
    alice = hs.user("alice")
    edus = [
        {"edu_type": "m.typing", "content": {"room_id": room, "user_id": alice, "typing": True}},
        {"edu_type": "m.receipt", "content": {room: {"m.read": {alice: {"event_ids": ["$x"],
                                                                          "data": {"ts": 1}}}}}},
        {"edu_type": "m.presence", "content": {"push": [{"user_id": "@eve:third.test",
                                                          "presence": "online", "last_active_ago": 1}]}},
        {"edu_type": "m.device_list_update", "content": {"user_id": alice, "device_id": "D",
                                                         "stream_id": 1}},
        {"edu_type": "m.typing", "content": {"room_id": room, "user_id": remote.user("fred"),
                                             "typing": True, "pad": "x" * 60_000}},
        {"edu_type": "m.unknown", "content": "not an object"},
        {"content": {}}, "not an edu", 7, None,
    ]
    eid, ev = froom.message("fred", "with edus")
    r = await remote.send_transaction(hs, [ev], edus)
    assert r.status_code == 200 and r.json() == {"pdus": {eid: {}}}
    await wait_delivered(hs, sid, eid)
    await asyncio.sleep(0.1)
    assert delivered(hs, sid) == [eid]
    assert await hs.live_ids(room) == [*(await hs.live_ids(room))[:-1], eid]
    # nothing went out because of them either
    assert (await hs.destination(remote.server_name)).get("queued", 0) == 0
    assert not remote.transactions
