"""Catalogue: Outbound delivery under faults.

Our homeserver sends a fake remote (that joined our room) the room's events while the fake
misbehaves: 5xx, refused connections, resets, truncated answers, a hang, a slow drip, a
long outage across a restart of our side, a poison transaction. Checked: one transaction
in flight, the same txnId on retries, backoff persisted and ended by the remote's own
authenticated requests, the queue intact until a 200, batches within 50 PDUs / 100 EDUs,
and in the end every event delivered exactly once, in order.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from tests.fakes.remote import FED, Fault, Reply, q, wait_for
from tests.hostile.conftest import errcode, joined_room

SEND = FED + "/v1/send/{txn_id}"


async def send_messages(hs, room, n, prefix="m"):
    alice = hs.user("alice")
    return [await hs.api.send(room, alice, "m.room.message", {"body": f"{prefix}{i}"}) for i in range(n)]


def delivered_messages(remote) -> list[str]:
    return [p["content"]["body"] for p in remote.received_pdus() if p["type"] == "m.room.message"]


async def wait_delivered(remote, bodies, timeout=15.0):
    await wait_for(lambda: all(b in delivered_messages(remote) for b in bodies), timeout,
                   what=f"{len(bodies)} messages at the fake")
    got = [b for b in delivered_messages(remote) if b in set(bodies)]
    assert got == list(bodies), "delivered out of order or twice"


def txn_ids(route) -> list[str]:
    return [c.params["txn_id"] for c in route.calls]


# --------------------------------------------------------------------------- failures

@pytest.mark.parametrize("fault", ["500", "503 not json", "connection refused"])
async def test_failing_remote_is_retried_one_in_flight_backoff_persisted_queue_intact(world, fault):
    hs = await world.homeserver(backoff_min_s=0.05, backoff_max_s=0.2)
    remote = await world.remote()
    room, froom = await joined_room(hs, remote)
    tx = remote.handle_transactions()
    if fault == "500":
        tx.fail_always(Fault.http(500))
    elif fault == "503 not json":
        tx.fail_always(Fault.malformed(b"<html>busy</html>", status=503))
    else:
        remote.down = True
    ids = await send_messages(hs, room, 5)
    if fault == "connection refused":
        await wait_for(lambda: hs.destination(remote.server_name), what="a failure recorded")
        await asyncio.sleep(0.5)
    else:
        await wait_for(lambda: len(tx.calls) >= 4, what="several attempts")
    d = await hs.destination(remote.server_name)
    assert d["failures"] >= 2 and d["retry_at"] > 0 and d["retry_interval"] > 0
    assert d["queued"] == 5
    assert tx.max_in_flight <= 1
    assert len(set(txn_ids(tx))) <= 1, "a failed transaction is retried under its txnId"
    assert not remote.transactions
    tx.heal()
    remote.down = False
    await wait_delivered(remote, [f"m{i}" for i in range(5)])
    d = await wait_for(lambda: _drained(hs, remote), what="queue drained")
    assert d["failures"] == 0 and d["retry_at"] == 0
    assert (await hs.destinations())["max_in_flight_seen"] == 1
    assert tx.max_in_flight == 1
    assert len(ids) == 5


async def _drained(hs, remote):
    d = await hs.destination(remote.server_name)
    return d if d.get("queued") == 0 and d.get("failures") == 0 else None


@pytest.mark.parametrize("fault", ["reset", "truncated"])
async def test_reset_or_truncated_answers_on_the_wire_are_retried(world, fault):
    hs = await world.homeserver(backoff_min_s=0.05, backoff_max_s=0.2)
    remote = await world.remote(tls=True)
    room, froom = await joined_room(hs, remote)
    tx = remote.handle_transactions()
    tx.fail(Fault.reset() if fault == "reset" else Fault.truncated(), times=2)
    await send_messages(hs, room, 3)
    await wait_delivered(remote, ["m0", "m1", "m2"])
    assert len(tx.calls) >= 3
    first = txn_ids(tx)[0]
    assert txn_ids(tx)[:3] == [first] * 3
    await wait_for(lambda: _drained(hs, remote), what="queue drained")


async def test_long_outage_across_a_restart_of_our_side_loses_nothing(world):
    hs = await world.homeserver(backoff_min_s=0.05, backoff_max_s=0.3)
    remote = await world.remote()
    room, froom = await joined_room(hs, remote)
    remote.down = True
    await send_messages(hs, room, 60)
    await wait_for(lambda: hs.destination(remote.server_name), what="a failure recorded")
    before = await hs.destination(remote.server_name)
    await hs.restart()
    after = await hs.destination(remote.server_name)
    assert after["queued"] == 60                       # the queue is durable
    assert after["failures"] >= before["failures"] >= 1   # and so is the backoff
    remote.down = False
    await wait_delivered(remote, [f"m{i}" for i in range(60)])
    sizes = [len(t["pdus"]) for t in remote.transactions]
    assert max(sizes) <= 50
    await wait_for(lambda: _drained(hs, remote), what="queue drained")


# --------------------------------------------------------------------------- backoff ends

@pytest.mark.parametrize("how", ["send", "event", "make_join"])
async def test_request_from_a_backed_off_server_ends_its_backoff_at_once(world, how):
    hs = await world.homeserver(backoff_min_s=60.0, backoff_max_s=120.0)
    remote = await world.remote()
    room, froom = await joined_room(hs, remote)
    tx = remote.handle_transactions()
    tx.fail(Fault.http(502))
    await send_messages(hs, room, 1, "early")
    await wait_for(lambda: tx.calls, what="the failed attempt")
    d = await wait_for(lambda: hs.destination(remote.server_name), what="backoff recorded")
    assert d["retry_at"] > time.time() + 30
    await send_messages(hs, room, 1, "late")
    await asyncio.sleep(0.2)
    assert not remote.transactions                      # backing off: nothing sent
    t0 = time.monotonic()
    if how == "send":
        r = await remote.send_transaction(hs, [])
    elif how == "event":
        r = await remote.request(hs, "GET", f"{FED}/v1/event/{q(froom.extremities[0])}")
    else:
        r = await remote.request(hs, "GET", f"{FED}/v1/make_join/{q(room)}/{q(remote.user('ginny'))}",
                                 query=[("ver", "12")])
    assert r.status_code == 200, r.text
    await wait_delivered(remote, ["early0", "late0"], timeout=5)
    assert time.monotonic() - t0 < 3
    assert (await hs.destination(remote.server_name))["failures"] == 0


async def test_unauthenticated_request_does_not_end_a_backoff(world):
    hs = await world.homeserver(backoff_min_s=60.0, backoff_max_s=120.0)
    remote = await world.remote()
    room, froom = await joined_room(hs, remote)
    tx = remote.handle_transactions()
    tx.fail(Fault.http(500))
    await send_messages(hs, room, 1)
    await wait_for(lambda: tx.calls, what="the failed attempt")
    await wait_for(lambda: hs.destination(remote.server_name), what="backoff recorded")
    r = await remote.send_transaction(hs, [], auth=False)
    assert errcode(r) == (401, "M_UNAUTHORIZED")
    r = await remote.send_transaction(hs, [], origin=remote.server_name, key=remote.key.__class__.generate())
    assert errcode(r) == (401, "M_UNAUTHORIZED")
    await asyncio.sleep(0.3)
    assert len(tx.calls) == 1 and not remote.transactions
    assert (await hs.destination(remote.server_name))["failures"] == 1


# --------------------------------------------------------------------------- batching

async def test_more_than_50_pdus_go_in_several_transactions_rows_kept_until_200(world):
    hs = await world.homeserver(backoff_min_s=0.05, backoff_max_s=0.2)
    remote = await world.remote()
    room, froom = await joined_room(hs, remote)
    remote.down = True
    await send_messages(hs, room, 120)
    await wait_for(lambda: hs.destination(remote.server_name), what="a failure recorded")
    seen_queue = []
    tx = remote.handle_transactions()
    accept = tx.handler

    async def second_fails_once(req):
        seen_queue.append((await hs.destination(remote.server_name))["queued"])
        if len(tx.calls) == 2:
            return Fault.http(500)
        return accept(req)

    tx.handler = second_fails_once
    remote.down = False
    await wait_delivered(remote, [f"m{i}" for i in range(120)])
    sizes = [len(t["pdus"]) for t in remote.transactions]
    assert max(sizes) <= 50 and sum(sizes) == 120 and len(sizes) <= 4
    assert seen_queue[0] == 120
    assert seen_queue[1] == seen_queue[2] == 120 - sizes[0]   # the refused one's rows stayed
    assert txn_ids(tx)[1] == txn_ids(tx)[2]
    await wait_for(lambda: _drained(hs, remote), what="queue drained")


async def test_more_than_100_edus_go_in_several_transactions(world):
    hs = await world.homeserver(backoff_min_s=0.05, backoff_max_s=0.2)
    remote = await world.remote()
    room, froom = await joined_room(hs, remote)
    remote.down = True
    edus = [{"edu_type": "m.typing", "content": {"room_id": room, "user_id": hs.user("alice"),
                                                 "typing": i % 2 == 0, "n": i}} for i in range(250)]
    await hs.tx.queue_edus([{"destination": remote.server_name, **e} for e in edus])
    remote.down = False
    await wait_for(lambda: sum(len(t.get("edus", [])) for t in remote.transactions) >= 250,
                   what="all EDUs")
    sizes = [len(t.get("edus", [])) for t in remote.transactions]
    assert sizes == [100, 100, 50]
    got = [e["content"]["n"] for t in remote.transactions for e in t.get("edus", [])]
    assert got == list(range(250))
    await wait_for(lambda: _drained(hs, remote), what="queue drained")


# --------------------------------------------------------------------------- poison

async def test_a_transaction_refused_for_good_never_wedges_the_destination(world):
    hs = await world.homeserver(backoff_min_s=0.05, backoff_max_s=0.2)
    remote = await world.remote()
    room, froom = await joined_room(hs, remote)
    tx = remote.handle_transactions()
    accept = tx.handler

    def refuse_poison(req):
        bodies = [p.get("content", {}).get("body") for p in (req.json or {}).get("pdus", [])]
        if "poison0" in bodies:
            return Reply(400, {"errcode": "M_BAD_JSON", "error": "never"})
        return accept(req)

    tx.handler = refuse_poison
    await send_messages(hs, room, 1, "poison")
    await wait_for(lambda: len(tx.calls) >= 3, what="the poison refused for good")
    await send_messages(hs, room, 3, "after")
    await wait_delivered(remote, ["after0", "after1", "after2"])
    await wait_for(lambda: _drained(hs, remote), what="queue drained")


async def test_oversized_or_refused_edus_never_wedge_the_destination(world):
    from shared.errors import MatrixError
    hs = await world.homeserver(backoff_min_s=0.05, backoff_max_s=0.2)
    remote = await world.remote()
    room, froom = await joined_room(hs, remote)
    big = {"destination": remote.server_name, "edu_type": "m.big", "content": {"pad": "x" * 70_000}}
    with pytest.raises(MatrixError) as exc:
        await hs.tx.queue_edus([big])
    assert (exc.value.status, exc.value.errcode) == (413, "M_TOO_LARGE")
    tx = remote.handle_transactions()
    accept = tx.handler

    def refuse_edu(req):
        if any(e.get("edu_type") == "m.poison" for e in (req.json or {}).get("edus", [])):
            return Reply(400, {"errcode": "M_BAD_JSON", "error": "never"})
        return accept(req)

    tx.handler = refuse_edu
    await hs.tx.queue_edus([{"destination": remote.server_name, "edu_type": "m.poison", "content": {}}])
    await wait_for(lambda: len(tx.calls) >= 3, what="the poison EDU refused for good")
    await send_messages(hs, room, 2, "after")
    await wait_delivered(remote, ["after0", "after1"])
    assert not any(e.get("edu_type") in ("m.big", "m.poison")
                   for t in remote.transactions for e in t.get("edus", []))


# --------------------------------------------------------------------------- hung remote

@pytest.mark.parametrize("fault", ["hang", "slow drip"])
async def test_hung_remote_times_out_and_frees_the_slot(world, fault):
    hs = await world.homeserver(backoff_min_s=0.05, backoff_max_s=0.2, federation_timeout_s=0.5)
    remote = await world.remote(tls=True)
    room, froom = await joined_room(hs, remote)
    tx = remote.handle_transactions()
    tx.fail(Fault.hang() if fault == "hang" else Fault.drip(0.1, {"pdus": {}, "pad": "x" * 100}))
    t0 = time.monotonic()
    await send_messages(hs, room, 1)
    await wait_delivered(remote, ["m0"], timeout=10)
    assert time.monotonic() - t0 < 5
    assert len(tx.calls) == 2 and len(set(txn_ids(tx))) == 1
    assert (await hs.destinations())["max_in_flight_seen"] == 1
    await send_messages(hs, room, 1, "next")
    await wait_delivered(remote, ["next0"])


# --------------------------------------------------------------------------- joins

@pytest.mark.parametrize("first", ["403", "500", "404", "reset", "down", "bad template", "not json"])
async def test_make_join_refused_by_the_first_server_tries_the_next(world, hs, first):
    bad = await world.remote("first.test:8448")
    good = await world.remote("second.test:8448")
    froom = good.create_room(version="12")
    good.serve_joins(froom)
    make = bad.route("GET", FED + "/v1/make_join/{room_id}/{user_id}", lambda req: {})
    send = bad.route("PUT", FED + "/v2/send_join/{room_id}/{event_id}", lambda req: {})
    faults = {"403": Fault.http(403, {"errcode": "M_FORBIDDEN", "error": "no"}),
              "500": Fault.http(500), "404": Fault.http(404, {"errcode": "M_NOT_FOUND", "error": "?"}),
              "reset": Fault.reset(), "not json": Fault.malformed(b"{{{"),
              "bad template": {"room_version": "12", "event": {"type": "m.room.member",
                                                               "content": {"membership": "ban"}}}}
    if first == "down":
        bad.down = True
    else:
        make.handler = lambda req: faults[first]
    alice = hs.user("alice")
    eid = await hs.api.join(froom.room_id, alice, servers=[bad.server_name, good.server_name])
    assert first == "down" or make.calls
    assert not send.calls
    state = {(e["type"], e["state_key"]): e["event_id"] for e in await hs.api.state(froom.room_id)}
    assert state[("m.room.member", alice)] == eid


async def test_a_slow_but_timely_remote_gets_each_transaction_once(world):
    hs = await world.homeserver(backoff_min_s=0.05, backoff_max_s=0.2, federation_timeout_s=1.0)
    remote = await world.remote()
    room, froom = await joined_room(hs, remote)
    tx = remote.handle_transactions()
    tx.fail_always(Fault.delay(0.3))
    await send_messages(hs, room, 3)
    await wait_delivered(remote, ["m0", "m1", "m2"])
    assert len(tx.calls) == len(set(txn_ids(tx))) == len(remote.transactions)
    assert tx.max_in_flight == 1
