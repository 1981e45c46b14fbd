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
import time

from services.transaction import store_trace
from shared.logs import request_id
from shared.metrics import Metrics

log = logging.getLogger("fedstack.transaction.relay")

BATCH = 100


class Relay:
    def __init__(self, db, pdu_client, retry_s: float = 0.5, metrics=None):
        self.db = db
        self._woken_at: float | None = None   # the oldest staging not yet relayed
        self.m_stored = (metrics or Metrics("transaction")).histogram(
            "fedstack_event_stored_seconds", "Received PDUs: from the staging commit of "
            "their transaction to the pdu service having processed and stored them")
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
        if self._woken_at is None:
            self._woken_at = time.monotonic()
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                since, self._woken_at = self._woken_at, None
                items = await self.db.run(store_trace.read_inbox, BATCH)
                if not items:
                    break
                try:   # the hop carries the request id of the batch's first PDU
                    request_id.set(items[0].get("request_id"))
                    await self.pdu.inbound(items)
                    if since is not None:
                        took = time.monotonic() - since
                        for _ in items:
                            self.m_stored.observe(took)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # pdu down or failing: try again later
                    log.warning("relay to pdu failed (%s); retrying", exc)
                    self._woken_at = since if since is not None else self._woken_at
                    await asyncio.sleep(self.retry_s)
                    continue
                if len(items) < BATCH and not self._wake.is_set():
                    break   # the read saw the whole inbox; anything staged since woke us
