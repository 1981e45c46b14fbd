"""Storage of received EDUs: the EDU half of the live stream. Plain functions run on the
database thread.

Invariants:
- EDUs and events share one sequence of stream positions: an EDU's position is drawn from
  the `events` table's autoincrement sequence (sql.next_positions), so one subscription
  position covers both, and an event persisted after an EDU has a higher position.
- An inbound transaction's EDUs are stored in the same commit as its response and its
  PDUs' inbox rows (`stage`, called by `store_federation.stage_transaction`).
- An EDU with a dedup key (a to-device message_id, a device list stream_id) is stored at
  most once per (origin, edu_type, key), whatever transaction brings it again; keys are
  forgotten after SEEN_KEEP_MS.
- A stored EDU is removed only once every subscription's position is past it (so none can
  still be delivered); with no subscription, nothing can deliver it and it is removed.
  Pruning runs when a transaction brings EDUs, so storage follows the slowest
  subscription (one whose receiver is down keeps every EDU since, as it keeps events).
"""
from __future__ import annotations

import orjson

from services.transaction import sql
from shared.canonical import dumps   # any integer a remote sent, unlike orjson

SEEN_KEEP_MS = 7 * 24 * 3600 * 1000


next_positions = sql.next_positions      # engine-specific: see services/transaction/sql.py
max_position = sql.read_only(sql.max_position)


def stage(conn, origin: str, edus: list, ts: int) -> list:
    """Store checked EDUs, each (edu_type, room_id, content, dedup key or None), in order;
    returns the new ones (edu_type, room_id, content). Delivered ones are pruned first."""
    fresh = []
    for edu_type, room_id, content, dedup in edus:
        if dedup is not None and not conn.execute(
                "INSERT INTO edu_seen (origin, edu_type, dedup, ts) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (origin, edu_type, dedup, ts)).rowcount:
            continue
        fresh.append((edu_type, room_id, content))
    if not fresh:
        return []
    prune(conn, ts)
    first = next_positions(conn, len(fresh))
    conn.executemany("INSERT INTO edu_stream (stream, origin, edu_type, room_id, content)"
                     " VALUES (?, ?, ?, ?, ?)",
                     [(first + i, origin, t, r, dumps(c)) for i, (t, r, c) in enumerate(fresh)])
    return fresh


def prune(conn, now_ms: int) -> None:
    """Drop EDUs every subscription has passed, and dedup keys older than SEEN_KEEP_MS."""
    low = conn.execute("SELECT MIN(position) FROM subscriptions").fetchone()[0]
    if low is None:
        conn.execute("DELETE FROM edu_stream")
    else:
        conn.execute("DELETE FROM edu_stream WHERE stream <= ?", (low,))
    conn.execute("DELETE FROM edu_seen WHERE ts < ?", (now_ms - SEEN_KEEP_MS,))


@sql.read_only
def stream(conn, after: int, limit: int, room_id: str | None) -> list[dict]:
    """EDUs after `after`, oldest first: [{position, edu: {edu_type, origin, content}}].
    With room_id, only the EDUs of that room (typing, receipts)."""
    sql = "SELECT stream, origin, edu_type, content FROM edu_stream WHERE stream > ?"
    args: list = [after]
    if room_id:
        sql += " AND room_id = ?"
        args.append(room_id)
    rows = conn.execute(sql + " ORDER BY stream LIMIT ?", (*args, limit))
    return [{"position": pos, "edu": {"edu_type": t, "origin": o, "content": orjson.loads(c)}}
            for pos, o, t, c in rows]


def merge(events: list[dict], edus: list[dict], limit: int) -> tuple[list, list]:
    """The first `limit` items of both (each list ordered by position), by position."""
    if len(events) + len(edus) <= limit:
        return events, edus
    cut = sorted([e["position"] for e in events] + [e["position"] for e in edus])[limit - 1]
    return ([e for e in events if e["position"] <= cut],
            [e for e in edus if e["position"] <= cut])
