"""Database calls per step on the hot paths (each costs ~50 us of CPU in thread hand-offs,
more with a commit): the sender deletes a sent transaction's rows and reads (and numbers)
the next one in one call, so N queued PDUs cost ceil(N/50) + 1 calls; the relay reads the
inbox again only when something was staged since its last read."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

from services.transaction import store_events as se
from services.transaction import store_federation as sf
from services.transaction.db import Database
from services.transaction.relay import Relay
from services.transaction.sender import Sender

DEST = "dest.test"


class _Transport:
    """Answers every federation request 200 and records the PDUs sent."""

    def __init__(self):
        self.sent: list[list[str]] = []

    async def federation_request(self, destination, method, path, body=None, **_):
        self.sent.append([p["content"]["n"] for p in body["pdus"]])
        return {"status": 200, "body": {"pdus": {}}}


def _queue(n: int) -> dict:
    room = "!r:here.test"
    return {"rooms": [{"room_id": room, "room_version": "10", "extremities": []}],
            "events": [{"event_id": f"$e{i}", "room_id": room,
                        "event": {"type": "m.room.message", "room_id": room, "content": {"n": i}}}
                       for i in range(n)],
            "destinations": {f"$e{i}": [DEST] for i in range(n)}}


async def test_a_sent_transaction_and_the_next_share_one_commit(tmp_path):
    db = Database(tmp_path / "db.sqlite")
    await db.start()
    transport = _Transport()
    settings = SimpleNamespace(server_name="here.test", backoff_min_s=0.01, backoff_max_s=0.1,
                               send_coalesce_ms=3.0)
    sender = Sender(db, transport, settings)
    try:
        await db.run(se.persist, _queue(120))
        await db.run(lambda conn: None)     # settle: grouping below counts only the sender
        commits = db.commits
        sender._backoff[DEST] = {"retry_at": 0.0, "retry_interval": 0.0, "failures": 0,
                                 "known": True}     # as after a first contact
        sender.notify([DEST])
        await asyncio.wait_for(sender._workers[DEST], 10)
        assert [len(t) for t in transport.sent] == [50, 50, 20]
        assert [n for t in transport.sent for n in t] == list(range(120))
        # the first read, then sent+next three times (the last finds nothing)
        assert db.commits - commits == 4
    finally:
        await sender.stop()
        await db.close()


class _Pdu:
    """Consumes what the relay hands it, as the pdu service's persist does."""

    def __init__(self, db):
        self.db = db
        self.got: list[list[int]] = []

    async def inbound(self, items):
        self.got.append([i["pdu"]["n"] for i in items])
        await self.db.run(sf.delete_inbox, [i["inbox_id"] for i in items])


async def _stage(db, txn_id: str, ns) -> None:
    staged = [("!r:there.test", {"n": n, "room_id": "!r:there.test"}, f"$i{n}") for n in ns]
    await db.run(sf.stage_transaction, "there.test", txn_id, b"{}", staged, 0)


async def test_the_relay_reads_the_inbox_once_per_wake(tmp_path):
    db = Database(tmp_path / "db.sqlite")
    await db.start()
    pdu = _Pdu(db)
    relay = Relay(db, pdu)
    calls = []
    real_run = db.run

    async def counting_run(fn, *args):
        calls.append(fn.__name__)
        return await real_run(fn, *args)
    db.run = counting_run
    try:
        await _stage(db, "t1", [0, 1, 2])
        relay.start()
        await asyncio.wait_for(_until(lambda: len(pdu.got) == 1), 5)
        await _stage(db, "t2", [3])
        relay.wake()
        await asyncio.wait_for(_until(lambda: len(pdu.got) == 2), 5)
        await asyncio.sleep(0.05)
        assert pdu.got == [[0, 1, 2], [3]]
        assert calls.count("read_inbox") == 2       # no empty re-read after each batch
    finally:
        await relay.stop()
        await db.close()


async def _until(cond):
    while not cond():
        await asyncio.sleep(0.005)
