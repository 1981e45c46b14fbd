"""Callbacks: every live event of a subscription's room (and types) POSTed to its url.

Invariants:
- Events go out in stream (room) order, in batches; a batch is retried until the receiver
  answers 2xx; only then does the subscription's position move past it (durably, through
  the transaction service). So a restart of any service resumes after the last
  acknowledged batch and nothing acknowledged is delivered again.
- One delivery loop per subscription, so batches of one subscription never overlap.
"""
from __future__ import annotations

import asyncio
import logging

import httpx
import orjson

log = logging.getLogger("fedstack.messaging.delivery")

BATCH = 100
POLL_MS = 5000
RETRY_MIN_S, RETRY_MAX_S = 0.2, 30.0


class Delivery:
    def __init__(self, tx, *, http: httpx.AsyncClient | None = None):
        self.tx = tx
        self.http = http or httpx.AsyncClient(timeout=30.0)
        self._tasks: dict[str, asyncio.Task] = {}

    async def start(self) -> None:
        """Load the subscriptions in the background: the transaction service may start
        after us, so this retries until it answers."""
        self._tasks["_load"] = asyncio.create_task(self._load())

    async def _load(self) -> None:
        while True:
            try:
                subs = await self.tx.list_subscriptions()
                break
            except Exception as exc:  # noqa: BLE001 - not reachable yet
                log.info("loading subscriptions failed (%s); retrying", exc)
                await asyncio.sleep(RETRY_MIN_S)
        for sub in subs:
            self.add(sub)

    async def stop(self) -> None:
        for t in self._tasks.values():
            t.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        await self.http.aclose()

    def add(self, sub: dict) -> None:
        if sub["subscription_id"] not in self._tasks:
            self._tasks[sub["subscription_id"]] = asyncio.create_task(self._loop(sub))

    def remove(self, subscription_id: str) -> None:
        task = self._tasks.pop(subscription_id, None)
        if task:
            task.cancel()

    async def _loop(self, sub: dict) -> None:
        position = sub["position"]
        types = set(sub["types"]) if sub.get("types") else None
        while True:
            try:
                page = await self.tx.stream(position, BATCH, sub.get("room_id"), POLL_MS)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # transaction service away: wait and retry
                log.info("stream read failed: %s", exc)
                await asyncio.sleep(RETRY_MIN_S * 5)
                continue
            if not page["events"]:
                continue
            last = page["events"][-1]["position"]
            events = [dict(e["event"], position=e["position"]) for e in page["events"]
                      if types is None or e["event"].get("type") in types]
            if events:
                await self._post_until_acknowledged(sub, events, last)
            await self._save_position(sub["subscription_id"], last)
            position = last

    async def _post_until_acknowledged(self, sub: dict, events: list, last: int) -> None:
        body = orjson.dumps({"subscription_id": sub["subscription_id"], "events": events,
                             "position": last})
        delay = RETRY_MIN_S
        while True:
            try:
                resp = await self.http.post(sub["url"], content=body,
                                            headers={"content-type": "application/json"})
                if 200 <= resp.status_code < 300:
                    return
                log.info("callback %s answered %s", sub["url"], resp.status_code)
            except httpx.HTTPError as exc:
                log.info("callback %s failed: %s", sub["url"], exc)
            await asyncio.sleep(delay)
            delay = min(RETRY_MAX_S, delay * 2)

    async def _save_position(self, sid: str, position: int) -> None:
        while True:
            try:
                await self.tx.set_subscription_position(sid, position)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep the position in memory until it can be saved
                log.info("saving position failed: %s", exc)
                await asyncio.sleep(RETRY_MIN_S * 5)
