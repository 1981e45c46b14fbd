"""Callbacks: every live event of a subscription's room (and types) POSTed to its url,
and every received EDU (of that room, for a room subscription; of those types) beside them.

Invariants:
- Events go out in stream (room) order, in batches; a batch is retried until the receiver
  answers 2xx; only then does the subscription's position move past it (durably, through
  the transaction service). So a restart of any service resumes after the last
  acknowledged batch. A batch can be repeated only if this service dies between the
  receiver's 2xx and saving the position; the body's `position` lets a receiver drop it.
- EDUs share the stream's positions: a body carries `events` and `edus`, each in stream
  (arrival) order, and the position covers both; EDUs obey the same retry and position
  rules as events. `types` filters an EDU by its edu_type as it filters events by type.
- One deliverer per subscription across all messaging replicas: a replica delivers only
  while it holds the subscription's lease (renewed every loop, LEASE_S long), and a
  position write from a replica that lost the lease is refused.
- Every replica picks up subscriptions created through another one (list refreshed).
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid

import aiohttp

from services.messaging.auth import callback_headers
from shared.canonical import dumps
from shared.errors import MatrixError
from shared.metrics import Metrics

log = logging.getLogger("fedstack.messaging.delivery")

BATCH = 100
POLL_MS = 5000
LEASE_S = 10.0
REFRESH_S = 5.0
RETRY_MIN_S, RETRY_MAX_S = 0.2, 30.0


class LeaseLost(Exception):
    pass


class Delivery:
    def __init__(self, tx, *, http=None, owner: str | None = None, metrics=None):
        """`http`: an httpx.AsyncClient (in-process tests hand one in); else aiohttp."""
        self.tx = tx
        m = metrics or Metrics("messaging")
        self.m_batches = m.counter("fedstack_subscription_batches_total", "Callback batches "
                                   "per subscription and outcome (delivered, retried)",
                                   ["subscription", "outcome"])
        self.m_delivered = m.histogram("fedstack_event_delivered_seconds", "Events: from "
                                       "their origin_server_ts to their callback's 2xx")
        self.last_delivered: dict[str, float] = {}   # subscription -> time of its last 2xx
        self.http = http
        self._session: aiohttp.ClientSession | None = None
        # A stable identity (host and port) lets a restarted replica take its leases back
        # at once instead of waiting for them to expire.
        self.owner = owner or uuid.uuid4().hex
        self._tasks: dict[str, asyncio.Task] = {}
        self._refresher: asyncio.Task | None = None

    async def start(self) -> None:
        """Load (and keep loading) the subscriptions in the background: the transaction
        service may start after us, and other replicas may add subscriptions."""
        self._refresher = asyncio.create_task(self._refresh())

    async def _refresh(self) -> None:
        while True:
            try:
                subs = await self.tx.list_subscriptions()
                known = {s["subscription_id"] for s in subs}
                for sub in subs:
                    self.add(sub)
                for sid in [s for s in self._tasks if s not in known]:
                    self.remove(sid)
                await asyncio.sleep(REFRESH_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - not reachable yet
                log.info("loading subscriptions failed (%s); retrying", exc)
                await asyncio.sleep(RETRY_MIN_S)

    async def stop(self) -> None:
        tasks = list(self._tasks.values()) + ([self._refresher] if self._refresher else [])
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.http is not None:
            await self.http.aclose()
        if self._session is not None:
            await self._session.close()

    def add(self, sub: dict) -> None:
        if sub["subscription_id"] not in self._tasks:
            self._tasks[sub["subscription_id"]] = asyncio.create_task(self._loop(sub))

    def remove(self, subscription_id: str) -> None:
        task = self._tasks.pop(subscription_id, None)
        if task:
            task.cancel()

    async def _lease(self, sid: str) -> int:
        """Hold the lease; returns the stored position. Waits while another replica has it."""
        while True:
            try:
                got = await self.tx.lease_subscription(sid, self.owner, LEASE_S)
                if got["granted"]:
                    return got["position"]
                await asyncio.sleep(LEASE_S / 3)
            except asyncio.CancelledError:
                raise
            except MatrixError as exc:
                if exc.status == 404:
                    raise
                await asyncio.sleep(RETRY_MIN_S * 5)
            except Exception as exc:  # noqa: BLE001 - transaction service away
                log.info("lease failed: %s", exc)
                await asyncio.sleep(RETRY_MIN_S * 5)

    async def _loop(self, sub: dict) -> None:
        sid = sub["subscription_id"]
        types = set(sub["types"]) if sub.get("types") else None
        while True:
            try:
                await self._deliver_while_leased(sub, sid, types)
            except asyncio.CancelledError:
                raise
            except LeaseLost:
                continue
            except MatrixError as exc:
                if exc.status == 404:   # subscription deleted
                    self._tasks.pop(sid, None)
                    return
                await asyncio.sleep(RETRY_MIN_S * 5)

    async def _deliver_while_leased(self, sub, sid, types) -> None:
        position = await self._lease(sid)
        leased_at = time.monotonic()
        unsaved = False     # `position` was delivered but not yet saved
        while True:
            if time.monotonic() - leased_at > LEASE_S / 3:
                stored = await self._lease(sid)
                position = max(position, stored)
                leased_at = time.monotonic()
            try:   # saving the position rides on the next read: one round trip, not two
                page = await self.tx.stream(position, BATCH, sub.get("room_id"), POLL_MS,
                                            subscription_id=sid if unsaved else None,
                                            owner=self.owner, edus=True)
            except asyncio.CancelledError:
                raise
            except MatrixError as exc:
                if exc.status == 409:
                    raise LeaseLost()
                if exc.status == 404:
                    raise
                log.info("stream read failed: %s", exc)
                await asyncio.sleep(RETRY_MIN_S * 5)
                continue
            except Exception as exc:  # noqa: BLE001 - transaction service away: retry
                log.info("stream read failed: %s", exc)
                await asyncio.sleep(RETRY_MIN_S * 5)
                continue
            unsaved = False
            received = page.get("edus") or []
            if not page["events"] and not received:
                continue
            last = page["next"]
            events = [dict(e["event"], position=e["position"]) for e in page["events"]
                      if types is None or e["event"].get("type") in types]
            edus = [dict(e["edu"], position=e["position"]) for e in received
                    if types is None or e["edu"].get("edu_type") in types]
            if events or edus:
                rids = {e["event"]["event_id"]: e["request_id"] for e in page["events"]
                        if e.get("request_id")}
                await self._post_until_acknowledged(sub, events, last, edus, rids)
            position, unsaved = last, True

    async def _post_until_acknowledged(self, sub: dict, events: list, last: int,
                                       edus: list = (), rids: dict | None = None) -> None:
        body = dumps({"subscription_id": sub["subscription_id"], "events": events,
                             "edus": list(edus), "position": last})
        delay = RETRY_MIN_S
        while True:
            try:
                status = await self._post(sub["url"], body, callback_headers(sub.get("hs_token"), body))
                if 200 <= status < 300:
                    self._delivered(sub["subscription_id"], events, rids or {})
                    return
                log.info("callback %s answered %s", sub["url"], status)
            except OSError as exc:
                log.info("callback %s failed: %s", sub["url"], exc)
            self.m_batches.labels(sub["subscription_id"], "retried").inc()
            await asyncio.sleep(delay)
            delay = min(RETRY_MAX_S, delay * 2)

    def _delivered(self, sid: str, events: list, rids: dict) -> None:
        now = time.time()
        if log.isEnabledFor(logging.INFO):   # one line per event, under its request id
            for ev in events:
                log.info("delivered %s to subscription %s", ev.get("event_id"), sid,
                         extra={"request_id": rids.get(ev.get("event_id"))})
        self.last_delivered[sid] = now
        self.m_batches.labels(sid, "delivered").inc()
        for ev in events:
            ts = ev.get("origin_server_ts")
            if isinstance(ts, int) and not isinstance(ts, bool):
                self.m_delivered.observe(max(0.0, now - ts / 1000))

    async def _post(self, url: str, body: bytes, headers: dict) -> int:
        """POST one batch; the receiver's status, or OSError when there was no answer."""
        if self.http is not None:
            try:
                return (await self.http.post(url, content=body, headers=headers)).status_code
            except Exception as exc:  # noqa: BLE001 - httpx's errors: no answer
                raise OSError(f"{type(exc).__name__}: {exc}") from exc
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30.0))
        try:
            async with self._session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                return resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise OSError(f"{type(exc).__name__}: {exc}") from exc
