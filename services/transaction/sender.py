"""Outbound delivery: one worker per destination, one transaction in flight each.

Invariants:
- At most one transaction in flight per destination (one worker task per destination).
- A transaction holds at most 50 PDUs and 100 EDUs; its rows are deleted only after a 200.
- A failed transaction is retried with the same txn_id and content after a backoff that
  doubles from `backoff_min_s` to `backoff_max_s`; the backoff is persisted. A 429 with
  `retry_after_ms` is retried after that delay instead (capped), without backing off.
- A transaction the remote refuses for good (4xx other than 408/429, POISON_ATTEMPTS times
  in a row) is dropped, so one poison item never wedges a destination.
- Coalescing: after a 200 for a transaction of fewer than COALESCE_BELOW items, the next
  one is read only `send_coalesce_ms` later, so a steady trickle of events goes in a few
  larger transactions instead of many of one or two (each costs both servers a signed,
  TLS, staged and relayed request). An event queued while nothing is in flight is sent at
  once; a transaction of COALESCE_BELOW items or more is followed at once by the next.
- `clock` is injectable so tests can move time without waiting.
- After a (re)start, each known destination not backing off gets one signed request (its
  queued transaction, or an empty one) so that a peer that backed off from us resumes.
"""
from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import quote

from services.transaction import store_federation as sf
from shared.metrics import Metrics

log = logging.getLogger("fedstack.transaction.sender")

MAX_PDUS = 50
MAX_EDUS = 100
COALESCE_BELOW = 10
POISON_ATTEMPTS = 3
_NO_BACKOFF = {"retry_at": 0.0, "retry_interval": 0.0, "failures": 0, "known": True}


class Sender:
    def __init__(self, db, transport, settings, *, clock=time.time, metrics=None):
        self.db = db
        m = metrics or Metrics("transaction")
        self.m_txns = m.counter("fedstack_outbound_transactions_total",
                                "Outbound transactions per destination and outcome (sent, "
                                "failed, rate_limited, dropped, poke_failed)",
                                ["destination", "outcome"])
        self.m_send = m.histogram("fedstack_outbound_transaction_seconds",
                                  "Send latency of outbound transactions (request to answer)",
                                  ["destination"])
        self.queued_since: dict[str, float] = {}   # destination -> its queue head's age base
        self.last_success: dict[str, float] = {}   # destination -> time of its last 200
        self.transport = transport
        self.server_name = settings.server_name
        self.backoff_min = settings.backoff_min_s
        self.backoff_max = settings.backoff_max_s
        self.coalesce_s = settings.send_coalesce_ms / 1000
        self.clock = clock
        self._workers: dict[str, asyncio.Task] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._poison: dict[str, tuple[str, int]] = {}
        self._poke: set[str] = set()
        self._backoff: dict[str, dict] = {}     # mirror of the stored backoff (we own it)
        self.in_flight: dict[str, int] = {}     # observable for tests
        self.max_in_flight_seen = 0

    async def start(self) -> None:
        for d in await self.db.run(sf.pending_destinations):
            self.notify([d["destination"]])

    async def stop(self) -> None:
        tasks = list(self._workers.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def notify(self, destinations) -> None:
        """New rows are queued for these destinations: make sure a worker will send them."""
        for d in destinations:
            if d == self.server_name:
                continue
            self.queued_since.setdefault(d, self.clock())
            self._wake.setdefault(d, asyncio.Event()).set()
            task = self._workers.get(d)
            if task is None or task.done():
                self._workers[d] = asyncio.create_task(self._worker(d))

    async def poke_all(self) -> None:
        """We (re)started: send every known destination that is not backing off one signed
        request (its queued transaction, else an empty one), so a server that backed off
        from us while we were away resumes at once (Synapse resets its backoff for us on
        any signed request from us). Our own persisted backoffs are kept (invariant 5)."""
        now = self.clock()
        for d in await self.db.run(sf.known_destinations):
            if d == self.server_name or (await self._get_backoff(d))["retry_at"] > now:
                continue
            self._poke.add(d)
            self.notify([d])

    async def _get_backoff(self, destination: str) -> dict:
        """The destination's backoff, read from the database once, then kept in step by
        every write this sender makes (the transaction service is its only writer)."""
        if destination not in self._backoff:
            self._backoff[destination] = await self.db.run(sf.get_backoff, destination)
        return self._backoff[destination]

    async def mark_up(self, destination: str) -> None:
        """The destination showed it is alive: drop its backoff and send at once."""
        b = await self._get_backoff(destination)
        if b["retry_at"] == 0.0 and b["failures"] == 0:
            return          # not backing off: nothing to do (no database round trip)
        await self.db.run(sf.mark_up, destination)
        self._backoff[destination] = dict(_NO_BACKOFF)
        self.notify([destination])   # the worker ends at once if nothing is queued

    async def retry_now(self, destination: str) -> None:
        """An operator asked: drop the destination's backoff and send at once (its queued
        transaction, else an empty one, so a reachable destination shows it)."""
        await self.db.run(sf.mark_up, destination)
        self._backoff[destination] = dict(_NO_BACKOFF)
        self._poke.add(destination)
        self.notify([destination])

    def state(self, destination: str) -> dict:
        """What this sender knows of a destination beyond the database (for operators)."""
        b = self._backoff.get(destination) or {}
        since = self.queued_since.get(destination)
        return {"retry_at": b.get("retry_at"), "in_flight": self.in_flight.get(destination, 0),
                "oldest_age_s": None if since is None else max(0.0, self.clock() - since),
                "last_success_ts": self.last_success.get(destination)}

    async def _wait(self, ev: asyncio.Event, seconds: float) -> None:
        try:
            await asyncio.wait_for(ev.wait(), timeout=max(0.0, seconds))
        except asyncio.TimeoutError:
            pass

    async def _worker(self, destination: str) -> None:
        ev = self._wake.setdefault(destination, asyncio.Event())
        txn = None      # the next transaction, when the last send already fetched it
        while True:
            ev.clear()
            backoff = await self._get_backoff(destination)
            delay = backoff["retry_at"] - self.clock()
            if delay > 0:
                await self._wait(ev, min(delay, 60.0))
                continue
            if txn is None:
                txn = await self.db.run(sf.next_transaction, destination, MAX_PDUS, MAX_EDUS)
            if txn is None and destination in self._poke:
                txn = await self.db.run(sf.empty_transaction)
            if txn is None:
                if ev.is_set():
                    continue
                self.queued_since.pop(destination, None)
                return  # no await since the check: a later notify starts a new worker
            self._poke.discard(destination)
            sent, txn = await self._send(destination, txn, backoff)
            if sent and txn is None and not ev.is_set():
                self.queued_since.pop(destination, None)
                return  # the read after the send saw the queue empty, nothing queued since

    async def _send(self, destination: str, txn: dict, backoff: dict) -> tuple[bool, dict | None]:
        """Send `txn` once: (sent, next). After a 200 its rows are deleted and the next
        transaction is read in the same commit (None: nothing queued)."""
        sent_at = self.clock()
        body = {"origin": self.server_name, "origin_server_ts": int(sent_at * 1000),
                "pdus": txn["pdus"]}
        if txn["edus"]:
            body["edus"] = txn["edus"]
        self.in_flight[destination] = self.in_flight.get(destination, 0) + 1
        self.max_in_flight_seen = max(self.max_in_flight_seen, self.in_flight[destination])
        started = time.perf_counter()
        try:
            resp = await self.transport.federation_request(
                destination, "PUT", "/_matrix/federation/v1/send/" + quote(txn["txn_id"], safe=""),
                body=body)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # transport itself unreachable
            resp = {"status": 0, "error": str(exc)}
        finally:
            self.in_flight[destination] -= 1
        status = resp.get("status", 0)
        self.m_send.labels(destination).observe(time.perf_counter() - started)
        self.m_txns.labels(destination, _outcome(status, bool(txn["row_ids"]))).inc()
        if not txn["row_ids"] and status != 200:
            # an empty "we are up" transaction: nothing to retry, and its failure (often
            # our own transport still starting) is no reason to back off from them
            log.info("poke of %s failed: %s %s", destination, status, resp.get("error") or resp.get("body"))
            return False, None
        if status == 200:
            if self.coalesce_s > 0 and len(txn["row_ids"]) < COALESCE_BELOW:
                await asyncio.sleep(self.coalesce_s)   # see Coalescing above
            write = backoff["failures"] or backoff["retry_at"] or not backoff.get("known", True)
            nxt = await self.db.run(sf.sent_then_next, destination, txn["row_ids"], bool(write),
                                    MAX_PDUS, MAX_EDUS)
            self._backoff[destination] = dict(_NO_BACKOFF)
            self._poison.pop(destination, None)
            self.last_success[destination] = self.clock()
            if destination in self.queued_since:   # the rest was queued since it was read
                self.queued_since[destination] = sent_at
            return True, nxt
        log.info("send to %s failed: %s %s", destination, status, resp.get("error") or resp.get("body"))
        retry_after = _retry_after_s(resp) if status == 429 else None
        if retry_after is not None:
            # asked to slow down, not failing: wait as long as asked (at most backoff_max),
            # with no doubling and nothing persisted
            self._backoff[destination] = dict(backoff, retry_at=self.clock() + min(retry_after, self.backoff_max))
            return False, None
        if 400 <= status < 500 and status not in (408, 429) and self._is_poison(destination, txn):
            log.warning("dropping transaction %s to %s refused %d times", txn["txn_id"],
                        destination, POISON_ATTEMPTS)
            await self.db.run(sf.drop_transaction, txn["row_ids"])
            self.m_txns.labels(destination, "dropped").inc()
            return False, None
        interval = min(self.backoff_max, max(self.backoff_min, backoff["retry_interval"] * 2))
        retry_at = self.clock() + interval
        failures = await self.db.run(sf.transaction_failed, destination, retry_at, interval)
        self._backoff[destination] = {"retry_at": retry_at, "retry_interval": interval,
                                      "failures": failures, "known": True}
        return False, None

    def _is_poison(self, destination: str, txn: dict) -> bool:
        txn_id, count = self._poison.get(destination, (txn["txn_id"], 0))
        count = count + 1 if txn_id == txn["txn_id"] else 1
        self._poison[destination] = (txn["txn_id"], count)
        return count >= POISON_ATTEMPTS


def _outcome(status: int, has_rows: bool) -> str:
    if status == 200:
        return "sent"
    if not has_rows:
        return "poke_failed"
    return "rate_limited" if status == 429 else "failed"


def _retry_after_s(resp: dict) -> float | None:
    """The delay a 429 answer asks for (`retry_after_ms` in its Matrix error), if any."""
    body = resp.get("body")
    ms = body.get("retry_after_ms") if isinstance(body, dict) else None
    if isinstance(ms, int) and not isinstance(ms, bool) and ms >= 0:
        return ms / 1000
    return None
