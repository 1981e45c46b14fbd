"""Event, room and state-group storage. Plain functions run on the database thread.

Invariants:
- An event_id is stored once; persisting it again changes nothing and reports new=False.
- State groups are immutable; a group's chain of deltas is at most MAX_CHAIN long (a longer
  one is stored as a full snapshot), so reading a group touches a bounded number of rows.
- The live stream (what subscriptions see) holds events that are not outliers, not rejected
  and not soft-failed, in `stream` order, which is persist order and so topological order.
"""
from __future__ import annotations

import orjson
from sqlalchemy import select, text
from sqlalchemy.dialects.sqlite import insert

from services.transaction.db import client_txns, events, rooms, state_groups
from shared.canonical import dumps   # any integer a remote sent, unlike orjson
from shared.errors import MatrixError

MAX_CHAIN = 64


class ExtremitiesChanged(MatrixError):
    def __init__(self, room_id: str):
        super().__init__(409, "M_UNKNOWN", f"forward extremities of {room_id} changed; retry")


def load_state_group(conn, group: int) -> dict[tuple[str, str], str]:
    """The full state map of `group`, walking its (bounded) chain of deltas."""
    chain = []
    gid = group
    if not -2**63 <= gid < 2**63:     # beyond SQLite's integers: no such group
        raise MatrixError(404, "M_NOT_FOUND", f"unknown state group {gid}")
    while gid is not None:
        row = conn.execute(select(state_groups.c.prev_group, state_groups.c.delta)
                           .where(state_groups.c.id == gid)).first()
        if row is None:
            raise MatrixError(404, "M_NOT_FOUND", f"unknown state group {gid}")
        chain.append(row.delta)
        gid = row.prev_group
    state: dict[tuple[str, str], str] = {}
    for delta in reversed(chain):
        for t, sk, eid in orjson.loads(delta):
            state[(t, sk)] = eid
    return state


def _new_group(conn, room_id: str, base: int | None, delta: list) -> int:
    chain_len = 1
    if base is not None:
        chain_len = conn.execute(select(state_groups.c.chain_len)
                                 .where(state_groups.c.id == base)).scalar_one() + 1
        if chain_len > MAX_CHAIN:
            full = load_state_group(conn, base)
            for t, sk, eid in delta:
                full[(t, sk)] = eid
            delta = [[t, sk, eid] for (t, sk), eid in full.items()]
            base, chain_len = None, 1
    res = conn.execute(state_groups.insert().values(
        room_id=room_id, prev_group=base, chain_len=chain_len, delta=orjson.dumps(delta)))
    return res.inserted_primary_key[0]


def resolve_state_spec(conn, room_id: str, spec: dict | None, groups_by_event: dict) -> int | None:
    """Turn a StateSpec (see shared.contracts.transaction) into a stored group id."""
    if spec is None:
        return None
    if "group" in spec:
        return int(spec["group"])
    if "same_as" in spec:
        eid = spec["same_as"]
        if eid in groups_by_event:
            return groups_by_event[eid]
        gid = conn.execute(select(events.c.state_group).where(events.c.event_id == eid)).scalar()
        if gid is None:
            raise MatrixError(400, "M_INVALID_PARAM", f"no state known after {eid}")
        return gid
    if "delta" in spec:
        base = resolve_state_spec(conn, room_id, spec.get("base"), groups_by_event)
        if base is not None and not spec["delta"]:
            return base
        return _new_group(conn, room_id, base, spec["delta"])
    raise MatrixError(400, "M_INVALID_PARAM", "bad state spec")


def persist(conn, req: dict) -> dict:
    """Apply a PersistRequest in the caller's database transaction (see the contract)."""
    from services.transaction.store_federation import enqueue_pdus, delete_inbox
    out: dict[str, dict] = {}
    txns = list(req.get("client_txns") or []) + ([req["client_txn"]] if req.get("client_txn") else [])
    conflicts = []
    for ct in txns:
        existing = conn.execute(select(client_txns.c.event_id).where(
            client_txns.c.sender == ct["sender"], client_txns.c.txn_id == ct["txn_id"])).scalar()
        if existing is not None:
            conflicts.append({**ct, "event_id": existing})
    if conflicts:   # nothing is written: the caller answers these with the first event ids
        return {"events": {}, "client_txn_event_id": conflicts[0]["event_id"],
                "client_txn_conflicts": conflicts, "rooms": {}}
    if txns:
        conn.execute(client_txns.insert(), txns)
    for room in req.get("rooms", []):
        _check_room(conn, room)
    groups_by_event: dict[str, int] = {}
    new_ids = set()
    for ev in req.get("events", []):
        if ev["event_id"] in out:   # listed twice in this request: the first copy decides
            continue
        gid = resolve_state_spec(conn, ev["room_id"], ev.get("state_after"), groups_by_event)
        if gid is not None:
            groups_by_event[ev["event_id"]] = gid
        res = conn.execute(insert(events).values(
            event_id=ev["event_id"], room_id=ev["room_id"], json=dumps(ev["event"]),
            outlier=int(bool(ev.get("outlier"))), rejected=ev.get("rejected"),
            soft_failed=int(bool(ev.get("soft_failed"))), state_group=gid,
        ).on_conflict_do_nothing(index_elements=["event_id"]))
        if res.rowcount:
            new_ids.add(ev["event_id"])
            out[ev["event_id"]] = {"stream": res.inserted_primary_key[0], "new": True,
                                   "state_group": gid}
        else:
            upgraded = _maybe_upgrade_outlier(conn, ev, gid)
            out[ev["event_id"]] = {"stream": None, "new": False, "upgraded": upgraded}
            if upgraded:
                out[ev["event_id"]]["state_group"] = gid
    for room in req.get("rooms", []):
        _update_room(conn, room, groups_by_event)
    for red in req.get("redactions", []):
        conn.execute(events.update().where(events.c.event_id == red["event_id"])
                     .values(json=dumps(red["event"])))
    dests = {eid: d for eid, d in req.get("destinations", {}).items() if eid in new_ids}
    enqueue_pdus(conn, dests)
    delete_inbox(conn, req.get("inbox_ids", []))
    touched = {r["room_id"]: get_room(conn, r["room_id"]) for r in req.get("rooms", [])}
    return {"events": out, "client_txn_event_id": None, "rooms": touched}


def _maybe_upgrade_outlier(conn, ev: dict, gid: int | None) -> bool:
    """An event first stored as an outlier may later join the DAG view (never the reverse).
    It is re-inserted so that it gets a new stream position and subscriptions see it."""
    if ev.get("outlier") or gid is None:
        return False
    row = conn.execute(select(events.c.outlier).where(events.c.event_id == ev["event_id"])).first()
    if row is None or not row.outlier:
        return False
    conn.execute(events.delete().where(events.c.event_id == ev["event_id"]))
    conn.execute(events.insert().values(
        event_id=ev["event_id"], room_id=ev["room_id"], json=dumps(ev["event"]),
        outlier=0, rejected=ev.get("rejected"), soft_failed=int(bool(ev.get("soft_failed"))),
        state_group=gid))
    return True


def _check_room(conn, room: dict) -> None:
    row = conn.execute(select(rooms.c.extremities).where(rooms.c.room_id == room["room_id"])).first()
    if row is None:
        if room.get("room_version") is None:
            raise MatrixError(404, "M_NOT_FOUND", f"unknown room {room['room_id']}")
        return
    expect = room.get("expect_extremities")
    if expect is not None and sorted(orjson.loads(row.extremities)) != sorted(expect):
        raise ExtremitiesChanged(room["room_id"])


def _update_room(conn, room: dict, groups_by_event: dict) -> None:
    gid = resolve_state_spec(conn, room["room_id"], room.get("current_state"), groups_by_event)
    values = {}
    if room.get("extremities") is not None:
        values["extremities"] = orjson.dumps(sorted(set(room["extremities"])))
    if gid is not None:
        values["current_state_group"] = gid
    exists = conn.execute(select(rooms.c.room_id).where(rooms.c.room_id == room["room_id"])).first()
    if exists is None:
        conn.execute(rooms.insert().values(
            room_id=room["room_id"], room_version=room["room_version"],
            extremities=values.get("extremities", b"[]"), current_state_group=gid))
    elif values:
        conn.execute(rooms.update().where(rooms.c.room_id == room["room_id"]).values(**values))


def _record(row) -> dict:
    return {"event_id": row.event_id, "room_id": row.room_id, "event": orjson.loads(row.json),
            "outlier": bool(row.outlier), "rejected": row.rejected,
            "soft_failed": bool(row.soft_failed), "state_group": row.state_group,
            "stream": row.stream}


def get_events(conn, event_ids: list[str]) -> dict[str, dict]:
    out = {}
    ids = list(dict.fromkeys(event_ids))
    for i in range(0, len(ids), 500):
        for row in conn.execute(select(events).where(events.c.event_id.in_(ids[i:i + 500]))):
            out[row.event_id] = _record(row)
    return out


def get_room(conn, room_id: str) -> dict | None:
    row = conn.execute(select(rooms).where(rooms.c.room_id == room_id)).first()
    if row is None:
        return None
    return {"room_id": row.room_id, "room_version": row.room_version,
            "extremities": orjson.loads(row.extremities),
            "current_state_group": row.current_state_group}


def get_state_groups(conn, groups: list[int]) -> dict[int, list]:
    return {g: [[t, sk, e] for (t, sk), e in load_state_group(conn, g).items()] for g in groups}


def stream(conn, after: int, limit: int, room_id: str | None) -> list[dict]:
    """Live events after `after`, oldest first: [{position, event (with event_id)}]."""
    q = (select(events.c.stream, events.c.event_id, events.c.json)
         .where(events.c.stream > after, events.c.outlier == 0, events.c.rejected.is_(None),
                events.c.soft_failed == 0)
         .order_by(events.c.stream).limit(limit))
    if room_id:
        q = q.where(events.c.room_id == room_id)
    out = []
    for row in conn.execute(q):
        ev = orjson.loads(row.json)
        ev["event_id"] = row.event_id
        out.append({"position": row.stream, "event": ev})
    return out


def max_stream(conn) -> int:
    return conn.execute(text("SELECT COALESCE(MAX(stream), 0) FROM events")).scalar_one()


def get_client_txn(conn, sender: str, txn_id: str) -> str | None:
    return conn.execute(select(client_txns.c.event_id).where(
        client_txns.c.sender == sender, client_txns.c.txn_id == txn_id)).scalar()
