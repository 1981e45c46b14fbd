"""Inbound `/send` transactions: idempotent, one at a time per origin, durable before 200.

Invariants:
- A stored (origin, txn_id) answers with the stored response bytes; nothing is staged again.
- While a transaction of an origin is being handled, the same txn_id waits for its answer
  and a different txn_id gets 429 (never two of one origin's transactions in parallel).
- More than 50 PDUs or 100 EDUs, or a malformed body: 400 and nothing stored, so a
  corrected retry with the same txn_id is processed.
- Each PDU gets its entry: `{}` when staged (or already known), `{"error": ...}` when it is
  malformed or for a room we are not in. Staged PDUs and the response commit together,
  and so do the EDUs that passed their checks (`edu_checks`), so a 200 means they are
  stored; a transaction without EDUs costs nothing more than before.
"""
from __future__ import annotations

import asyncio
import logging
import time

import orjson

from services.transaction import store_events, store_federation, store_trace
from shared.logs import request_id
from shared.errors import MatrixError
from shared.metrics import EDU_TYPES, Metrics, bounded
from shared.events import EventFormatError, compute_event_id, validate_event_format
from shared.room_versions import KNOWN_ROOM_VERSIONS, DEFAULT_ROOM_VERSION
from services.transaction.sql import read_only

MAX_PDUS = 50
MAX_EDUS = 100
MAX_CACHED_ROOMS = 10_000
PRUNE_EVERY = 1000       # stagings between two prunings of old request ids
log = logging.getLogger("fedstack.transaction.inbound")


class InboundTransactions:
    def __init__(self, db, on_staged, edus=None, on_edus=None, metrics=None):
        self.db = db
        m = metrics or getattr(db, "metrics", None) or Metrics("transaction")
        self.m_txns = m.counter("fedstack_inbound_transactions_total",
                                "Inbound /send transactions per origin and outcome "
                                "(accepted, duplicate, refused)", ["origin", "outcome"])
        self.m_pdus = m.counter("fedstack_inbound_pdus_total",
                                "Inbound PDUs per origin and outcome (transaction service: "
                                "staged or unstaged; pdu service: accepted, rejected, "
                                "soft_failed, dropped, duplicate)", ["origin", "outcome"])
        self.m_edus = m.counter("fedstack_inbound_edus_total",
                                "Inbound EDUs per type: received, and stored (items after "
                                "the checks)", ["edu_type", "outcome"])
        self.on_staged = on_staged           # called after a commit that staged PDUs
        self.edus = edus                     # EduChecker: what of the EDUs is stored
        self.on_edus = on_edus               # awaited after a commit that stored EDUs
        self._running: dict[str, tuple[str, asyncio.Future]] = {}
        self._versions: dict[str, str] = {}  # room_id -> room version (never changes)
        self._stagings = 0

    async def receive(self, origin: str, txn_id: str, body) -> bytes:
        room_ids = _room_ids(body)
        versions = {r: self._versions[r] for r in room_ids if r in self._versions}
        if len(versions) < len(room_ids):
            # one round trip: the stored answer (if any) and the versions not cached yet;
            # when all are cached, the staging commit itself finds a stored answer
            stored, found = await self.db.run(_lookup, origin, txn_id,
                                              [r for r in room_ids if r not in versions])
            if stored is not None:
                self.m_txns.labels(origin, "duplicate").inc()
                return stored
            if len(self._versions) > MAX_CACHED_ROOMS:
                self._versions.clear()
            self._versions.update(found)
            versions.update(found)
        running = self._running.get(origin)
        if running is not None:
            if running[0] == txn_id:
                return await asyncio.shield(running[1])
            self.m_txns.labels(origin, "refused").inc()
            raise MatrixError(429, "M_UNKNOWN", "Too many concurrent transactions")
        fut = asyncio.get_running_loop().create_future()
        self._running[origin] = (txn_id, fut)
        try:
            try:
                response = await self._process(origin, txn_id, body, versions)
            except MatrixError:
                self.m_txns.labels(origin, "refused").inc()
                raise
            self.m_txns.labels(origin, "accepted").inc()
            fut.set_result(response)
            return response
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._running[origin]

    async def _process(self, origin: str, txn_id: str, body, versions: dict) -> bytes:
        pdus, edus = _check_shape(body)
        results, staged = {}, []
        for pdu in pdus:
            key, entry, room_id = classify_pdu(pdu, versions)
            if key is None:
                continue
            results[key] = entry
            if not entry:
                staged.append((room_id, pdu, key))
        response = orjson.dumps({"pdus": results})
        checked = await self.edus.check(origin, edus) if edus and self.edus is not None else ()
        self._stagings += 1
        if self._stagings % PRUNE_EVERY == 0:
            await self.db.run(store_trace.prune, time.time())
        response = await self.db.run(store_trace.stage, request_id.get(), origin, txn_id,
                                     response, staged, int(time.time() * 1000), checked)
        log.info("staged transaction %s from %s: %d of %d PDUs, %d EDUs", txn_id, origin,
                 len(staged), len(pdus), len(edus))
        self._count(origin, len(results), len(staged), edus, checked)
        if staged:
            self.on_staged()
        if checked and self.on_edus is not None:
            await self.on_edus()
        return response


    def _count(self, origin: str, entries: int, staged: int, edus: list, checked) -> None:
        if staged:
            self.m_pdus.labels(origin, "staged").inc(staged)
        if entries > staged:
            self.m_pdus.labels(origin, "unstaged").inc(entries - staged)
        for edu in edus:
            t = edu.get("edu_type") if isinstance(edu, dict) else None
            self.m_edus.labels(bounded(t, EDU_TYPES), "received").inc()
        for item in checked:
            self.m_edus.labels(bounded(item[0], EDU_TYPES), "stored").inc()


def _check_shape(body) -> tuple[list, list]:
    if not isinstance(body, dict):
        raise MatrixError(400, "M_BAD_JSON", "transaction must be a JSON object")
    pdus = body.get("pdus")
    edus = body.get("edus", [])
    if not isinstance(pdus, list):
        raise MatrixError(400, "M_BAD_JSON", "'pdus' must be a list")
    if not isinstance(edus, list):
        raise MatrixError(400, "M_BAD_JSON", "'edus' must be a list")
    if len(pdus) > MAX_PDUS:
        raise MatrixError(400, "M_BAD_JSON", f"more than {MAX_PDUS} PDUs in one transaction")
    if len(edus) > MAX_EDUS:
        raise MatrixError(400, "M_BAD_JSON", f"more than {MAX_EDUS} EDUs in one transaction")
    return pdus, edus


def _room_ids(body) -> list[str]:
    pdus = body.get("pdus") if isinstance(body, dict) else None
    if not isinstance(pdus, list):
        return []
    return list({p["room_id"] for p in pdus[:MAX_PDUS + 1]
                 if isinstance(p, dict) and isinstance(p.get("room_id"), str)})


@read_only
def _lookup(conn, origin: str, txn_id: str, room_ids: list[str]):
    """One database round trip: the stored answer (if any) and the rooms' versions."""
    stored = store_federation.get_txn_response(conn, origin, txn_id)
    return stored, (None if stored is not None else _room_versions(conn, room_ids))


def _room_versions(conn, room_ids: list[str]) -> dict[str, str]:
    out = {}
    for rid in room_ids:
        room = store_events.get_room(conn, rid)
        if room is not None:
            out[rid] = room["room_version"]
    return out


def classify_pdu(pdu, versions: dict[str, str]) -> tuple[str | None, dict, str | None]:
    """(event_id to report under, entry, room_id). key None: unusable, nothing to report."""
    if not isinstance(pdu, dict) or not isinstance(pdu.get("room_id"), str):
        return None, {}, None
    room_id = pdu["room_id"]
    rv = KNOWN_ROOM_VERSIONS.get(versions.get(room_id, DEFAULT_ROOM_VERSION))
    try:
        event_id = compute_event_id(pdu, rv)
    except Exception:  # noqa: BLE001 - anything unhashable is simply unusable
        return None, {}, None
    if room_id not in versions:
        return event_id, {"error": "unknown room"}, room_id
    try:
        validate_event_format(pdu, rv)
    except EventFormatError as exc:
        return event_id, {"error": f"invalid event: {exc}"}, room_id
    return event_id, {}, room_id
