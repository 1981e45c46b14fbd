"""Device list resyncs: fetch `/user/devices/{userId}` from a user's server when an update
named a prev_id we never saw (store_device_lists owes the resync, durably), and hand the
answer to subscribers as a `fedstack.user_devices` EDU.

Invariants: a resync row leaves the table only in the commit that stores its answer, so a
crash before that fetches again; a failed or malformed answer keeps the row with a later
`next_try` (store_device_lists.resync_failed); at most one fetch runs at a time.
"""
from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import quote

from services.transaction import store_device_lists as sdl

log = logging.getLogger("fedstack.transaction.device_resync")

FETCH_TIMEOUT_S = 30.0
IDLE_S = 60.0


class DeviceResync:
    def __init__(self, db, transport, on_stored, clock=time.time):
        self.db = db
        self.transport = transport
        self.on_stored = on_stored           # awaited after a commit that stored an answer
        self.clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.fetched = 0                     # observable: fetches made

    def start(self) -> None:
        self._wake.set()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                for row in await self.db.run(sdl.due_resyncs, self.clock()):
                    await self._resync(row)
                nxt = await self.db.run(sdl.next_resync_at)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database or transport went away
                log.warning("device list resync pass failed: %s", exc)
                nxt = self.clock() + 1.0
            delay = IDLE_S if nxt is None else min(IDLE_S, max(0.0, nxt - self.clock()))
            if delay > 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except asyncio.TimeoutError:
                    pass

    async def _resync(self, row: dict) -> None:
        user_id, origin = row["user_id"], row["origin"]
        self.fetched += 1
        path = "/_matrix/federation/v1/user/devices/" + quote(user_id, safe="")
        resp = await self.transport.federation_request(origin, "GET", path, timeout_s=FETCH_TIMEOUT_S)
        answer = sdl.checked_answer(user_id, resp.get("body")) if resp.get("status") == 200 else None
        if answer is None:
            log.info("device list resync of %s from %s failed: %s %s", user_id, origin,
                     resp.get("status"), resp.get("error") or str(resp.get("body"))[:200])
            await self.db.run(sdl.resync_failed, user_id, row["attempts"], self.clock())
            return
        await self.db.run(sdl.resync_done, user_id, origin, answer, self.clock())
        await self.on_stored()
