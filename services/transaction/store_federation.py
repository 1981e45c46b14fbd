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

import uuid

import orjson
from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.sqlite import insert

from services.transaction.db import (counters, destinations, events, inbox, outbox,
                                     received_transactions, subscriptions)
from shared.canonical import dumps   # any integer a remote sent, unlike orjson
from shared.errors import MatrixError


def get_txn_response(conn, origin: str, txn_id: str) -> bytes | None:
    return conn.execute(select(received_transactions.c.response).where(
        received_transactions.c.origin == origin,
        received_transactions.c.txn_id == txn_id)).scalar()


def stage_transaction(conn, origin: str, txn_id: str, response: bytes, staged: list, ts: int) -> bytes:
    """Store the response and the inbox rows in one commit; a racing duplicate gets the first."""
    first = get_txn_response(conn, origin, txn_id)
    if first is not None:
        return first
    conn.execute(received_transactions.insert().values(origin=origin, txn_id=txn_id,
                                                      response=response, ts=ts))
    if staged:
        conn.execute(inbox.insert(), [{"origin": origin, "room_id": r, "pdu": dumps(p)}
                                      for r, p in staged])
    return response


def read_inbox(conn, limit: int) -> list[dict]:
    rows = conn.execute(select(inbox).order_by(inbox.c.id).limit(limit))
    return [{"inbox_id": r.id, "origin": r.origin, "room_id": r.room_id,
             "pdu": orjson.loads(r.pdu)} for r in rows]


def delete_inbox(conn, ids: list[int]) -> None:
    if ids:
        conn.execute(delete(inbox).where(inbox.c.id.in_(ids)))


def enqueue_pdus(conn, dests: dict[str, list[str]]) -> None:
    rows = [{"destination": d, "event_id": eid} for eid, ds in dests.items() for d in ds]
    if rows:
        conn.execute(outbox.insert(), rows)


def enqueue_edus(conn, destination_edus: list[tuple[str, dict]]) -> None:
    if destination_edus:
        conn.execute(outbox.insert(), [{"destination": d, "edu": orjson.dumps(e)}
                                       for d, e in destination_edus])


def pending_destinations(conn) -> list[dict]:
    """Destinations with queued rows, with their backoff state."""
    rows = conn.execute(select(outbox.c.destination).distinct())
    names = [r.destination for r in rows]
    out = []
    for name in names:
        d = conn.execute(select(destinations).where(destinations.c.destination == name)).first()
        out.append({"destination": name, "retry_at": d.retry_at if d else 0.0})
    return out


def known_destinations(conn) -> list[str]:
    return [r.destination for r in conn.execute(select(destinations.c.destination))]


def next_transaction(conn, destination: str, max_pdus: int, max_edus: int) -> dict | None:
    """The transaction to send next: a half-sent one again (same txn_id), else a new one."""
    rows = conn.execute(select(outbox).where(outbox.c.destination == destination,
                                             outbox.c.txn_id.is_not(None))
                        .order_by(outbox.c.id)).all()
    if rows:
        txn_id = rows[0].txn_id
        rows = [r for r in rows if r.txn_id == txn_id]
    else:
        pdu_rows = conn.execute(select(outbox).where(outbox.c.destination == destination,
                                                     outbox.c.event_id.is_not(None))
                                .order_by(outbox.c.id).limit(max_pdus)).all()
        edu_rows = conn.execute(select(outbox).where(outbox.c.destination == destination,
                                                     outbox.c.edu.is_not(None))
                                .order_by(outbox.c.id).limit(max_edus)).all()
        rows = pdu_rows + edu_rows
        if not rows:
            return None
        txn_id = _next_txn_id(conn)
        conn.execute(update(outbox).where(outbox.c.id.in_([r.id for r in rows]))
                     .values(txn_id=txn_id))
    ids = [r.id for r in rows]
    eids = [r.event_id for r in rows if r.event_id]
    by_id = {}
    for i in range(0, len(eids), 500):
        for e in conn.execute(select(events.c.event_id, events.c.json)
                              .where(events.c.event_id.in_(eids[i:i + 500]))):
            by_id[e.event_id] = orjson.loads(e.json)
    pdus = [by_id[e] for e in eids if e in by_id]
    edus = [orjson.loads(r.edu) for r in rows if r.edu]
    return {"txn_id": txn_id, "row_ids": ids, "pdus": pdus, "edus": edus}


def empty_transaction(conn) -> dict:
    """A transaction with nothing in it (a signed "we are up" to a destination)."""
    return {"txn_id": _next_txn_id(conn), "row_ids": [], "pdus": [], "edus": []}


def _next_txn_id(conn) -> str:
    """Our outbound txn ids: a random per-database prefix plus a persisted counter, so they
    never repeat, not even after the clock moves back or the database is recreated."""
    row = conn.execute(select(counters.c.value).where(counters.c.name == "txn")).first()
    prefix = conn.execute(select(counters.c.value).where(counters.c.name == "txn_prefix")).first()
    if prefix is None:
        p = uuid.uuid4().int & 0xFFFFFFFF
        conn.execute(counters.insert().values(name="txn_prefix", value=p))
        prefix_v = p
    else:
        prefix_v = prefix.value
    value = (row.value if row else 0) + 1
    conn.execute(insert(counters).values(name="txn", value=value)
                 .on_conflict_do_update(index_elements=["name"], set_={"value": value}))
    return f"{prefix_v:08x}.{value}"


def transaction_sent(conn, destination: str, row_ids: list[int], reset_backoff: bool = True) -> None:
    conn.execute(delete(outbox).where(outbox.c.id.in_(row_ids)))
    if reset_backoff:
        _set_backoff(conn, destination, 0.0, 0.0, 0)


def transaction_failed(conn, destination: str, retry_at: float, interval: float) -> int:
    row = conn.execute(select(destinations.c.failures)
                       .where(destinations.c.destination == destination)).first()
    failures = (row.failures if row else 0) + 1
    _set_backoff(conn, destination, retry_at, interval, failures)
    return failures


def drop_transaction(conn, row_ids: list[int]) -> None:
    """Give up on a poison transaction the remote refuses for good."""
    conn.execute(delete(outbox).where(outbox.c.id.in_(row_ids)))


def get_backoff(conn, destination: str) -> dict:
    d = conn.execute(select(destinations).where(destinations.c.destination == destination)).first()
    if d is None:
        return {"retry_at": 0.0, "retry_interval": 0.0, "failures": 0, "known": False}
    return {"retry_at": d.retry_at, "retry_interval": d.retry_interval, "failures": d.failures,
            "known": True}


def _set_backoff(conn, destination, retry_at, interval, failures) -> None:
    conn.execute(insert(destinations).values(
        destination=destination, retry_at=retry_at, retry_interval=interval, failures=failures,
    ).on_conflict_do_update(index_elements=["destination"], set_={
        "retry_at": retry_at, "retry_interval": interval, "failures": failures}))


def mark_up(conn, destination: str) -> bool:
    """Clear a destination's backoff; True if it was backing off."""
    d = get_backoff(conn, destination)
    if d["retry_at"] == 0.0 and d["failures"] == 0:
        return False
    _set_backoff(conn, destination, 0.0, 0.0, 0)
    return True


def outbox_count(conn, destination: str | None = None) -> int:
    q = select(func.count()).select_from(outbox)
    if destination:
        q = q.where(outbox.c.destination == destination)
    return conn.execute(q).scalar_one()


def add_subscription(conn, url: str, room_id: str | None, types: list | None, position: int) -> dict:
    sid = uuid.uuid4().hex
    conn.execute(subscriptions.insert().values(
        subscription_id=sid, url=url, room_id=room_id,
        types=orjson.dumps(types).decode() if types is not None else None, position=position))
    return {"subscription_id": sid, "url": url, "room_id": room_id, "types": types,
            "position": position}


def list_subscriptions(conn) -> list[dict]:
    return [{"subscription_id": r.subscription_id, "url": r.url, "room_id": r.room_id,
             "types": orjson.loads(r.types) if r.types else None, "position": r.position}
            for r in conn.execute(select(subscriptions))]


def delete_subscription(conn, sid: str) -> None:
    res = conn.execute(delete(subscriptions).where(subscriptions.c.subscription_id == sid))
    if not res.rowcount:
        raise MatrixError(404, "M_NOT_FOUND", "unknown subscription")


def set_subscription_position(conn, sid: str, position: int, owner: str | None = None) -> None:
    """Positions only move forward: a late or repeated write never rewinds delivery. With
    `owner`, only the current lease holder may move it (409 otherwise)."""
    q = update(subscriptions).where(subscriptions.c.subscription_id == sid)
    if owner is not None:
        q = q.where(subscriptions.c.lease_owner == owner)
    res = conn.execute(q.values(position=func.max(subscriptions.c.position, position)))
    if not res.rowcount:
        if conn.execute(select(subscriptions.c.subscription_id)
                        .where(subscriptions.c.subscription_id == sid)).first():
            raise MatrixError(409, "M_UNKNOWN", "subscription is leased by another deliverer")
        raise MatrixError(404, "M_NOT_FOUND", "unknown subscription")


def lease_subscription(conn, sid: str, owner: str, ttl_s: float, now: float) -> dict:
    """Grant (or renew) the right to deliver a subscription to one messaging replica.
    Granted when free, expired, or already `owner`'s; returns {granted, position}."""
    row = conn.execute(select(subscriptions).where(subscriptions.c.subscription_id == sid)).first()
    if row is None:
        raise MatrixError(404, "M_NOT_FOUND", "unknown subscription")
    free = row.lease_owner in (None, owner) or (row.lease_until or 0) < now
    if free:
        conn.execute(update(subscriptions).where(subscriptions.c.subscription_id == sid)
                     .values(lease_owner=owner, lease_until=now + ttl_s))
    return {"granted": free, "position": row.position}
