"""Storage of the federation queues: received transactions, inbox, outbox, destinations,
subscriptions. Plain functions run on the database thread.

Invariants:
- A stored (origin, txn_id) response is returned byte for byte on a repeat.
- Outbox rows are deleted only when the transaction that carried them got a 200.
- Rows of a transaction being sent carry its txn_id, so a retry resends the same txn_id
  with the same content (the receiver then answers it from its own store).
- A destination's backoff (retry_at, retry_interval) survives restarts.
"""
from __future__ import annotations

import secrets
import uuid

import orjson

from services.transaction import store_device_lists, store_edus
from shared.canonical import dumps   # any integer a remote sent, unlike orjson
from shared.errors import MatrixError
from services.transaction.sql import read_only


def _marks(n: int) -> str:
    return ",".join("?" * n)


@read_only
def get_txn_response(conn, origin: str, txn_id: str) -> bytes | None:
    row = conn.execute("SELECT response FROM received_transactions WHERE origin = ? AND txn_id = ?",
                       (origin, txn_id)).fetchone()
    return row[0] if row else None


def stage_transaction(conn, origin: str, txn_id: str, response: bytes, staged: list, ts: int,
                      edus: list = ()) -> bytes:
    """Store the response, the inbox rows and the checked EDUs (see store_edus.stage; a
    device list update also notes what it says of its user's list, and may owe a resync:
    store_device_lists) in one commit; a racing duplicate gets the first response and
    stores nothing."""
    first = get_txn_response(conn, origin, txn_id)
    if first is not None:
        return first
    conn.execute("INSERT INTO received_transactions (origin, txn_id, response, ts) VALUES (?, ?, ?, ?)",
                 (origin, txn_id, response, ts))
    if staged:
        conn.executemany("INSERT INTO inbox (origin, room_id, pdu, event_id) VALUES (?, ?, ?, ?)",
                         [(origin, r, dumps(p), eid) for r, p, eid in staged])
    if edus:
        for edu_type, _room, content in store_edus.stage(conn, origin, edus, ts):
            if edu_type == "m.device_list_update":
                store_device_lists.note_update(conn, origin, content, ts / 1000)
    return response


@read_only
def read_inbox(conn, limit: int) -> list[dict]:
    """The oldest staged PDUs, each with the event_id it was staged under and whether an
    event of that id is stored (`known`, as of this read: saves the pdu layer a look-up)."""
    rows = conn.execute("SELECT i.id, i.origin, i.room_id, i.pdu, i.event_id, e.event_id IS NOT NULL"
                        " FROM inbox i LEFT JOIN events e ON e.event_id = i.event_id"
                        " ORDER BY i.id LIMIT ?", (limit,))
    return [{"inbox_id": i, "origin": o, "room_id": r, "pdu": orjson.loads(p), "event_id": eid,
             "known": bool(known) if eid is not None else None}
            for i, o, r, p, eid, known in rows]


def delete_inbox(conn, ids: list[int]) -> None:
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        conn.execute(f"DELETE FROM inbox WHERE id IN ({_marks(len(chunk))})", chunk)


def enqueue_pdus(conn, dests: dict[str, list[str]]) -> None:
    rows = [(d, eid) for eid, ds in dests.items() for d in ds]
    if rows:
        conn.executemany("INSERT INTO outbox (destination, event_id) VALUES (?, ?)", rows)


def enqueue_edus(conn, destination_edus: list[tuple[str, dict]]) -> None:
    if destination_edus:
        conn.executemany("INSERT INTO outbox (destination, edu) VALUES (?, ?)",
                         [(d, orjson.dumps(e)) for d, e in destination_edus])


@read_only
def pending_destinations(conn) -> list[dict]:
    """Destinations with queued rows, with their backoff state."""
    rows = conn.execute("SELECT o.destination, COALESCE(d.retry_at, 0.0) FROM"
                        " (SELECT DISTINCT destination FROM outbox) o"
                        " LEFT JOIN destinations d ON d.destination = o.destination")
    return [{"destination": name, "retry_at": retry_at} for name, retry_at in rows]


@read_only
def known_destinations(conn) -> list[str]:
    return [r[0] for r in conn.execute("SELECT destination FROM destinations")]


def next_transaction(conn, destination: str, max_pdus: int, max_edus: int) -> dict | None:
    """The transaction to send next: a half-sent one again (same txn_id), else a new one."""
    cols = "SELECT id, event_id, edu, txn_id FROM outbox WHERE destination = ?"
    rows = conn.execute(cols + " AND txn_id IS NOT NULL ORDER BY id", (destination,)).fetchall()
    if rows:
        txn_id = rows[0][3]
        rows = [r for r in rows if r[3] == txn_id]
    else:
        rows = (conn.execute(cols + " AND event_id IS NOT NULL ORDER BY id LIMIT ?",
                             (destination, max_pdus)).fetchall()
                + conn.execute(cols + " AND edu IS NOT NULL ORDER BY id LIMIT ?",
                               (destination, max_edus)).fetchall())
        if not rows:
            return None
        txn_id = _next_txn_id(conn)
        conn.execute(f"UPDATE outbox SET txn_id = ? WHERE id IN ({_marks(len(rows))})",
                     [txn_id] + [r[0] for r in rows])
    eids = [r[1] for r in rows if r[1]]
    by_id = {}
    if eids:
        for eid, js in conn.execute(f"SELECT event_id, json FROM events WHERE event_id IN"
                                    f" ({_marks(len(eids))})", eids):
            by_id[eid] = orjson.loads(js)
    return {"txn_id": txn_id, "row_ids": [r[0] for r in rows],
            "pdus": [by_id[e] for e in eids if e in by_id],
            "edus": [orjson.loads(r[2]) for r in rows if r[2]]}


def empty_transaction(conn) -> dict:
    """A transaction with nothing in it (a signed "we are up" to a destination)."""
    return {"txn_id": _next_txn_id(conn), "row_ids": [], "pdus": [], "edus": []}


def _next_txn_id(conn) -> str:
    """Our outbound txn ids: a random per-database prefix plus a persisted counter, so they
    never repeat, not even after the clock moves back or the database is recreated."""
    prefix = conn.execute("SELECT value FROM counters WHERE name = 'txn_prefix'").fetchone()
    if prefix is None:
        prefix = (uuid.uuid4().int & 0xFFFFFFFF,)
        conn.execute("INSERT INTO counters (name, value) VALUES ('txn_prefix', ?)", prefix)
    value = conn.execute("INSERT INTO counters (name, value) VALUES ('txn', 1) ON CONFLICT (name)"
                         " DO UPDATE SET value = counters.value + 1 RETURNING value").fetchone()[0]
    return f"{prefix[0]:08x}.{value}"


def transaction_sent(conn, destination: str, row_ids: list[int], reset_backoff: bool = True) -> None:
    drop_transaction(conn, row_ids)
    if reset_backoff:
        _set_backoff(conn, destination, 0.0, 0.0, 0)


def sent_then_next(conn, destination: str, row_ids: list[int], reset_backoff: bool,
                   max_pdus: int, max_edus: int) -> dict | None:
    """`transaction_sent` and `next_transaction` in one commit (the sender's common step)."""
    transaction_sent(conn, destination, row_ids, reset_backoff)
    return next_transaction(conn, destination, max_pdus, max_edus)


def transaction_failed(conn, destination: str, retry_at: float, interval: float) -> int:
    row = conn.execute("SELECT failures FROM destinations WHERE destination = ?",
                       (destination,)).fetchone()
    failures = (row[0] if row else 0) + 1
    _set_backoff(conn, destination, retry_at, interval, failures)
    return failures


def drop_transaction(conn, row_ids: list[int]) -> None:
    """Delete a transaction's rows (sent, or a poison one the remote refuses for good)."""
    for i in range(0, len(row_ids), 500):
        chunk = row_ids[i:i + 500]
        conn.execute(f"DELETE FROM outbox WHERE id IN ({_marks(len(chunk))})", chunk)


@read_only
def get_backoff(conn, destination: str) -> dict:
    row = conn.execute("SELECT retry_at, retry_interval, failures FROM destinations"
                       " WHERE destination = ?", (destination,)).fetchone()
    if row is None:
        return {"retry_at": 0.0, "retry_interval": 0.0, "failures": 0, "known": False}
    return {"retry_at": row[0], "retry_interval": row[1], "failures": row[2], "known": True}


def _set_backoff(conn, destination, retry_at, interval, failures) -> None:
    conn.execute("INSERT INTO destinations (destination, retry_at, retry_interval, failures)"
                 " VALUES (?, ?, ?, ?) ON CONFLICT (destination) DO UPDATE SET"
                 " retry_at = excluded.retry_at, retry_interval = excluded.retry_interval,"
                 " failures = excluded.failures", (destination, retry_at, interval, failures))


def mark_up(conn, destination: str) -> bool:
    """Clear a destination's backoff; True if it was backing off."""
    d = get_backoff(conn, destination)
    if d["retry_at"] == 0.0 and d["failures"] == 0:
        return False
    _set_backoff(conn, destination, 0.0, 0.0, 0)
    return True


@read_only
def outbox_count(conn, destination: str | None = None) -> int:
    if destination:
        return conn.execute("SELECT COUNT(*) FROM outbox WHERE destination = ?",
                            (destination,)).fetchone()[0]
    return conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]


_SUB_COLUMNS = "subscription_id, url, room_id, types, position, hs_token"


def _subscription(row) -> dict:
    sid, url, room_id, types, position, hs_token = row
    return {"subscription_id": sid, "url": url, "room_id": room_id,
            "types": orjson.loads(types) if types else None, "position": position,
            "hs_token": hs_token}


def add_subscription(conn, url: str, room_id: str | None, types: list | None, position: int) -> dict:
    """A new subscription with its own hs_token: the bearer token (and HMAC key) of its
    callbacks, which a receiver checks to know they come from us."""
    sid = uuid.uuid4().hex
    hs_token = secrets.token_urlsafe(32)
    conn.execute(f"INSERT INTO subscriptions ({_SUB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                 (sid, url, room_id, orjson.dumps(types).decode() if types is not None else None,
                  position, hs_token))
    return {"subscription_id": sid, "url": url, "room_id": room_id, "types": types,
            "position": position, "hs_token": hs_token}


@read_only
def list_subscriptions(conn) -> list[dict]:
    return [_subscription(r) for r in conn.execute(f"SELECT {_SUB_COLUMNS} FROM subscriptions")]


def delete_subscription(conn, sid: str) -> None:
    if not conn.execute("DELETE FROM subscriptions WHERE subscription_id = ?", (sid,)).rowcount:
        raise MatrixError(404, "M_NOT_FOUND", "unknown subscription")


def set_subscription_position(conn, sid: str, position: int, owner: str | None = None) -> None:
    """Positions only move forward: a late or repeated write never rewinds delivery. With
    `owner`, only the current lease holder may move it (409 otherwise)."""
    sql = ("UPDATE subscriptions SET position = CASE WHEN position < ? THEN ? ELSE position END"
           " WHERE subscription_id = ?")
    args = [position, position, sid]
    if owner is not None:
        sql += " AND lease_owner = ?"
        args.append(owner)
    if not conn.execute(sql, args).rowcount:
        if conn.execute("SELECT 1 FROM subscriptions WHERE subscription_id = ?", (sid,)).fetchone():
            raise MatrixError(409, "M_UNKNOWN", "subscription is leased by another deliverer")
        raise MatrixError(404, "M_NOT_FOUND", "unknown subscription")


def lease_subscription(conn, sid: str, owner: str, ttl_s: float, now: float) -> dict:
    """Grant (or renew) the right to deliver a subscription to one messaging replica.
    Granted when free, expired, or already `owner`'s; returns {granted, position}."""
    row = conn.execute("SELECT lease_owner, lease_until, position FROM subscriptions"
                       " WHERE subscription_id = ?", (sid,)).fetchone()
    if row is None:
        raise MatrixError(404, "M_NOT_FOUND", "unknown subscription")
    lease_owner, lease_until, position = row
    free = lease_owner in (None, owner) or (lease_until or 0) < now
    if free:
        conn.execute("UPDATE subscriptions SET lease_owner = ?, lease_until = ?"
                     " WHERE subscription_id = ?", (owner, now + ttl_s, sid))
    return {"granted": free, "position": position}
