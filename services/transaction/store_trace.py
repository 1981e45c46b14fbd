"""Request ids carried through the database (see `shared.logs`): the id of the /send that
staged an inbound PDU is kept beside its event id for TTL_S, so the relay's hop to the pdu
service and the stream's hop to messaging carry the id of the request that brought it.

Invariants: optional everywhere (a PDU without an id is relayed and delivered the same,
just without one); written in the staging commit itself (no extra commit); rows older
than TTL_S are pruned (`prune`), so the table stays a window, not a history.
"""
from __future__ import annotations

from services.transaction import store_federation as sf
from services.transaction.sql import read_only

TTL_S = 600.0


def stage(conn, request_id: str | None, origin: str, txn_id: str, response: bytes,
          staged: list, ts: int, edus=()) -> bytes:
    """`store_federation.stage_transaction`, and the request id of each staged PDU."""
    out = sf.stage_transaction(conn, origin, txn_id, response, staged, ts, edus)
    if request_id and staged:
        conn.executemany("INSERT INTO event_request_ids (event_id, request_id, ts)"
                         " VALUES (?, ?, ?) ON CONFLICT DO NOTHING", [(eid, request_id, ts / 1000) for _r, _p, eid in staged])
    return out


def _ids(conn, event_ids: list[str]) -> dict[str, str]:
    out = {}
    for i in range(0, len(event_ids), 500):
        chunk = event_ids[i:i + 500]
        out.update(conn.execute("SELECT event_id, request_id FROM event_request_ids WHERE "
                                f"event_id IN ({','.join('?' * len(chunk))})", chunk).fetchall())
    return out


@read_only
def read_inbox(conn, limit: int) -> list[dict]:
    """`store_federation.read_inbox`, each item with the `request_id` that staged it."""
    items = sf.read_inbox(conn, limit)
    ids = _ids(conn, [i["event_id"] for i in items if i["event_id"]])
    for item in items:
        rid = ids.get(item["event_id"])
        if rid:
            item["request_id"] = rid
    return items


def annotate(conn, entries: list[dict]) -> list[dict]:
    """Stream entries ({position, event}) get the `request_id` their event came with."""
    ids = _ids(conn, [e["event"]["event_id"] for e in entries]) if entries else {}
    for e in entries:
        rid = ids.get(e["event"]["event_id"])
        if rid:
            e["request_id"] = rid
    return entries


def prune(conn, now: float) -> None:
    conn.execute("DELETE FROM event_request_ids WHERE ts < ?", (now - TTL_S,))
