"""Sender coalescing: after a small transaction the next is gathered for send_coalesce_ms;
an event queued while nothing is in flight goes at once, and full transactions follow each
other without a pause."""
from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from services.transaction import store_events as se
from services.transaction.db import Database
from services.transaction.sender import Sender
from tests.unit.test_db_calls import DEST, _queue

COALESCE_MS = 400.0


class _TimedTransport:
    """200 to everything; records (monotonic time, PDU numbers) per transaction."""

    def __init__(self):
        self.sends: list[tuple[float, list[int]]] = []
        self.answered = asyncio.Event()

    async def federation_request(self, destination, method, path, body=None, **_):
        self.sends.append((time.monotonic(), [p["content"]["n"] for p in body["pdus"]]))
        self.answered.set()
        return {"status": 200, "body": {"pdus": {}}}


def _events(first: int, n: int) -> dict:
    q = _queue(first + n)
    q["events"] = q["events"][first:]
    q["destinations"] = {e["event_id"]: [DEST] for e in q["events"]}
    return q


async def _sender(tmp_path, coalesce_ms: float):
    db = Database(tmp_path / "db.sqlite")
    await db.start()
    transport = _TimedTransport()
    sender = Sender(db, transport, SimpleNamespace(server_name="here.test", backoff_min_s=0.01,
                                                   backoff_max_s=0.1, send_coalesce_ms=coalesce_ms))
    sender._backoff[DEST] = {"retry_at": 0.0, "retry_interval": 0.0, "failures": 0, "known": True}
    return db, transport, sender


async def test_a_trickle_is_gathered_after_a_small_transaction(tmp_path):
    db, transport, sender = await _sender(tmp_path, COALESCE_MS)
    try:
        queued_at = time.monotonic()
        await db.run(se.persist, _events(0, 1))
        sender.notify([DEST])
        await asyncio.wait_for(transport.answered.wait(), 5)
        assert transport.sends[0][0] - queued_at < COALESCE_MS / 1000 / 2   # a lone event: at once
        for n in (1, 2, 3):                # a trickle while the sender gathers
            await asyncio.sleep(0.02)
            await db.run(se.persist, _events(n, 1))
            sender.notify([DEST])
        await asyncio.wait_for(sender._workers[DEST], 5)
        assert [t[1] for t in transport.sends] == [[0], [1, 2, 3]]
        assert transport.sends[1][0] - transport.sends[0][0] >= COALESCE_MS / 1000 * 0.9
    finally:
        await sender.stop()
        await db.close()


async def test_big_transactions_follow_each_other_at_once_and_zero_turns_it_off(tmp_path):
    db, transport, sender = await _sender(tmp_path, COALESCE_MS)
    try:
        await db.run(se.persist, _events(0, 100))
        sender.notify([DEST])
        await asyncio.wait_for(sender._workers[DEST], 5)
        assert [len(t[1]) for t in transport.sends] == [50, 50]
        assert transport.sends[1][0] - transport.sends[0][0] < COALESCE_MS / 1000 / 2
    finally:
        await sender.stop()
        await db.close()
    db, transport, sender = await _sender(tmp_path / "off", 0.0)
    try:
        for n in range(3):
            await db.run(se.persist, _events(n, 1))
            sender.notify([DEST])
            await asyncio.wait_for(sender._workers[DEST], 5)
        assert [t[1] for t in transport.sends] == [[0], [1], [2]]
    finally:
        await sender.stop()
        await db.close()
