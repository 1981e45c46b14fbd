"""The relay: hands staged inbox PDUs to the pdu service, oldest first.

Invariants: an inbox row leaves the inbox only in the pdu service's persist commit (which
names the inbox ids it consumed), so a crash anywhere re-delivers it and event_id
deduplication makes that harmless. Every staging commit is followed by `wake()`, so a read
that returned less than a full batch saw everything staged before the wake it answers;
the inbox is read again only when woken since (or when pdu failed).
"""
from __future__ import annotations

import asyncio
import logging

from services.transaction import store_federation

log = logging.getLogger("fedstack.transaction.relay")

BATCH = 100


class Relay:
    def __init__(self, db, pdu_client, retry_s: float = 0.5):
        self.db = db
        self.pdu = pdu_client
        self.retry_s = retry_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._wake.set()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                items = await self.db.run(store_federation.read_inbox, BATCH)
                if not items:
                    break
                try:
                    await self.pdu.inbound(items)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # pdu down or failing: try again later
                    log.warning("relay to pdu failed (%s); retrying", exc)
                    await asyncio.sleep(self.retry_s)
                    continue
                if len(items) < BATCH and not self._wake.is_set():
                    break   # the read saw the whole inbox; anything staged since woke us
