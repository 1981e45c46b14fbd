"""Read-only queries for operators (metrics and admin routes): every destination with its
queue depth and backoff, every subscription with its position and the stream's head.

Invariant: nothing here writes; each function is one `Database.run` call (a consistent
snapshot), cheap enough to run at every scrape (grouped by destination, no per-row work).
"""
from __future__ import annotations

from services.transaction import store_edus
from services.transaction import store_federation as sf
from services.transaction.sql import read_only


@read_only
def destinations(conn) -> list[dict]:
    """[{destination, queued, retry_at, retry_interval, failures}] of every destination
    that has a queue or a backoff row, by name."""
    depth = dict(conn.execute("SELECT destination, COUNT(*) FROM outbox GROUP BY destination"))
    rows = {r[0]: r[1:] for r in conn.execute(
        "SELECT destination, retry_at, retry_interval, failures FROM destinations")}
    out = []
    for name in sorted(set(depth) | set(rows)):
        retry_at, interval, failures = rows.get(name, (0.0, 0.0, 0))
        out.append({"destination": name, "queued": depth.get(name, 0), "retry_at": retry_at,
                    "retry_interval": interval, "failures": failures})
    return out


@read_only
def subscriptions(conn) -> dict:
    """{head, subscriptions: [{subscription_id, url, room_id, types, position, lag}]}: lag
    is how many stream positions (events and EDUs of any room) lie past the position."""
    head = store_edus.max_position(conn)
    subs = sf.list_subscriptions(conn)
    for s in subs:
        s["lag"] = max(0, head - s["position"])
    return {"head": head, "subscriptions": subs}
