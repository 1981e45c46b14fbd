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

from services.transaction import sql
from shared.canonical import dumps   # any integer a remote sent, unlike orjson
from shared.errors import MatrixError
from shared.events import redacted_form, server_of
from shared.room_versions import get_room_version
from services.transaction.sql import read_only

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
        row = conn.execute("SELECT prev_group, delta FROM state_groups WHERE id = ?",
                           (gid,)).fetchone()
        if row is None:
            raise MatrixError(404, "M_NOT_FOUND", f"unknown state group {gid}")
        gid, delta = row
        chain.append(delta)
    state: dict[tuple[str, str], str] = {}
    for delta in reversed(chain):
        for t, sk, eid in orjson.loads(delta):
            state[(t, sk)] = eid
    return state


def _new_group(conn, room_id: str, base: int | None, delta: list) -> int:
    chain_len = 1
    if base is not None:
        row = conn.execute("SELECT chain_len FROM state_groups WHERE id = ?", (base,)).fetchone()
        if row is None:
            raise MatrixError(404, "M_NOT_FOUND", f"unknown state group {base}")
        chain_len = row[0] + 1
        if chain_len > MAX_CHAIN:
            full = load_state_group(conn, base)
            for t, sk, eid in delta:
                full[(t, sk)] = eid
            delta = [[t, sk, eid] for (t, sk), eid in full.items()]
            base, chain_len = None, 1
    return conn.execute(
        "INSERT INTO state_groups (room_id, prev_group, chain_len, delta) VALUES (?, ?, ?, ?)"
        " RETURNING id", (room_id, base, chain_len, orjson.dumps(delta))).fetchone()[0]


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
        row = conn.execute("SELECT state_group FROM events WHERE event_id = ?", (eid,)).fetchone()
        gid = row[0] if row else None
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
        existing = get_client_txn(conn, ct["sender"], ct["txn_id"])
        if existing is not None:
            conflicts.append({**ct, "event_id": existing})
    if conflicts:   # nothing is written: the caller answers these with the first event ids
        return {"events": {}, "client_txn_event_id": conflicts[0]["event_id"],
                "client_txn_conflicts": conflicts, "rooms": {}}
    if txns:
        conn.executemany("INSERT INTO client_txns (sender, txn_id, event_id) VALUES (?, ?, ?)",
                         [(ct["sender"], ct["txn_id"], ct["event_id"]) for ct in txns])
    for room in req.get("rooms", []):
        _check_room(conn, room)
    groups_by_event: dict[str, int] = {}
    new_ids = set()
    events, listed = [], set()
    for ev in req.get("events", []):
        if ev["event_id"] in listed:    # listed twice in this request: the first copy decides
            continue
        listed.add(ev["event_id"])
        gid = resolve_state_spec(conn, ev["room_id"], ev.get("state_after"), groups_by_event)
        if gid is not None:
            groups_by_event[ev["event_id"]] = gid
        events.append((ev, gid))
    _store_events(conn, events, out, new_ids)
    for room in req.get("rooms", []):
        _update_room(conn, room, groups_by_event)
    for red in req.get("redactions", []):
        conn.execute("UPDATE events SET json = ? WHERE event_id = ?",
                     (dumps(red["event"]), red["event_id"]))
    _add_pending_redactions(conn, req.get("pending_redactions") or [])
    if new_ids:
        for eid in _apply_pending_redactions(conn, new_ids):
            out[eid]["redacted"] = True
    dests = {eid: d for eid, d in req.get("destinations", {}).items() if eid in new_ids}
    enqueue_pdus(conn, dests)
    delete_inbox(conn, req.get("inbox_ids", []))
    touched = {r["room_id"]: get_room(conn, r["room_id"]) for r in req.get("rooms", [])}
    return {"events": out, "client_txn_event_id": None, "rooms": touched}


def _store_events(conn, events: list[tuple[dict, int | None]], out: dict, new_ids: set) -> None:
    """Insert (event, state group) pairs in their order, each run of new events in one
    statement batch (sql.insert_returning); an event already stored is looked at on its
    own, at its place in the order (an outlier joining the DAG gets its position there)."""
    stored = set()
    ids = [ev["event_id"] for ev, _ in events]
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        stored.update(r[0] for r in conn.execute(
            f"SELECT event_id FROM events WHERE event_id IN ({','.join('?' * len(chunk))})", chunk))
    run: list = []

    def flush():
        rows = sql.insert_returning(conn, _INSERT_EVENT + " ON CONFLICT (event_id) DO NOTHING"
                                    " RETURNING stream", [_event_row(ev, gid) for ev, gid in run])
        for (ev, gid), row in zip(run, rows):
            if row is None:         # stored meanwhile (not by us: one writer); as below
                _known(conn, ev, gid, out)
            else:
                new_ids.add(ev["event_id"])
                out[ev["event_id"]] = {"stream": row[0], "new": True, "state_group": gid}
        run.clear()
    for ev, gid in events:
        if ev["event_id"] in stored:
            if run:
                flush()
            _known(conn, ev, gid, out)
        else:
            run.append((ev, gid))
    if run:
        flush()


def _known(conn, ev: dict, gid, out: dict) -> None:
    upgraded = _maybe_upgrade_outlier(conn, ev, gid)
    out[ev["event_id"]] = {"stream": None, "new": False, "upgraded": upgraded}
    if upgraded:
        out[ev["event_id"]]["state_group"] = gid


def _add_pending_redactions(conn, pending: list[dict]) -> None:
    if pending:
        conn.executemany("INSERT INTO pending_redactions (target, redaction_id, room_id, scope)"
                         " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                         [(p["target"], p["redaction_id"], p["room_id"], p.get("scope")) for p in pending])


def _apply_pending_redactions(conn, new_ids: set) -> list[str]:
    """Apply the pending redactions of events this commit stored (see PersistRequest);
    returns the ids redacted. Rows whose target arrived are consumed either way."""
    ids = list(new_ids)
    rows = []
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        rows += conn.execute("SELECT p.target, p.room_id, p.scope, e.json FROM pending_redactions p"
                             " JOIN events e ON e.event_id = p.redaction_id"
                             f" WHERE p.target IN ({','.join('?' * len(chunk))})", chunk).fetchall()
    redacted = []
    for target, room_id, scope, redaction_json in rows:
        row = conn.execute("SELECT room_id, json FROM events WHERE event_id = ?", (target,)).fetchone()
        room = get_room(conn, room_id)
        if row is None or row[0] != room_id or room is None or target in redacted:
            continue
        event = orjson.loads(row[1])
        sender = event.get("sender")
        if scope is not None and not (isinstance(sender, str) and ":" in sender
                                      and server_of(sender) == scope):
            continue
        form = redacted_form(event, orjson.loads(redaction_json), get_room_version(room["room_version"]))
        conn.execute("UPDATE events SET json = ? WHERE event_id = ?", (dumps(form), target))
        redacted.append(target)
    if rows:
        conn.executemany("DELETE FROM pending_redactions WHERE target = ?", [(r[0],) for r in rows])
    return redacted


def _maybe_upgrade_outlier(conn, ev: dict, gid: int | None) -> bool:
    """An event first stored as an outlier may later join the DAG view (never the reverse).
    It is re-inserted so that it gets a new stream position and subscriptions see it."""
    if ev.get("outlier") or gid is None:
        return False
    row = conn.execute("SELECT outlier FROM events WHERE event_id = ?", (ev["event_id"],)).fetchone()
    if row is None or not row[0]:
        return False
    conn.execute("DELETE FROM events WHERE event_id = ?", (ev["event_id"],))
    conn.execute(_INSERT_EVENT, _event_row(dict(ev, outlier=False), gid))
    return True


_INSERT_EVENT = ("INSERT INTO events (event_id, room_id, json, outlier, rejected, soft_failed,"
                 " state_group) VALUES (?, ?, ?, ?, ?, ?, ?)")


def _event_row(ev: dict, gid: int | None) -> tuple:
    return (ev["event_id"], ev["room_id"], dumps(ev["event"]), int(bool(ev.get("outlier"))),
            ev.get("rejected"), int(bool(ev.get("soft_failed"))), gid)


def _check_room(conn, room: dict) -> None:
    row = conn.execute("SELECT extremities FROM rooms WHERE room_id = ?",
                       (room["room_id"],)).fetchone()
    if row is None:
        if room.get("room_version") is None:
            raise MatrixError(404, "M_NOT_FOUND", f"unknown room {room['room_id']}")
        return
    expect = room.get("expect_extremities")
    if expect is not None and sorted(orjson.loads(row[0])) != sorted(expect):
        raise ExtremitiesChanged(room["room_id"])


def _update_room(conn, room: dict, groups_by_event: dict) -> None:
    gid = resolve_state_spec(conn, room["room_id"], room.get("current_state"), groups_by_event)
    ext = room.get("extremities")
    ext = orjson.dumps(sorted(set(ext))) if ext is not None else None
    done = conn.execute("UPDATE rooms SET extremities = COALESCE(?, extremities),"
                        " current_state_group = COALESCE(?, current_state_group)"
                        " WHERE room_id = ?", (ext, gid, room["room_id"])).rowcount
    if not done:
        conn.execute("INSERT INTO rooms (room_id, room_version, extremities, current_state_group)"
                     " VALUES (?, ?, ?, ?)",
                     (room["room_id"], room["room_version"], ext or b"[]", gid))


_EVENT_COLUMNS = "event_id, room_id, json, outlier, rejected, soft_failed, state_group, stream"


def _record(row) -> dict:
    event_id, room_id, js, outlier, rejected, soft_failed, state_group, stream_pos = row
    return {"event_id": event_id, "room_id": room_id, "event": orjson.loads(js),
            "outlier": bool(outlier), "rejected": rejected, "soft_failed": bool(soft_failed),
            "state_group": state_group, "stream": stream_pos}


@read_only
def get_events(conn, event_ids: list[str]) -> dict[str, dict]:
    out = {}
    ids = list(dict.fromkeys(event_ids))
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        for row in conn.execute(f"SELECT {_EVENT_COLUMNS} FROM events WHERE event_id IN"
                                f" ({','.join('?' * len(chunk))})", chunk):
            out[row[0]] = _record(row)
    return out


@read_only
def get_room(conn, room_id: str) -> dict | None:
    row = conn.execute("SELECT room_version, extremities, current_state_group FROM rooms"
                       " WHERE room_id = ?", (room_id,)).fetchone()
    if row is None:
        return None
    return {"room_id": room_id, "room_version": row[0], "extremities": orjson.loads(row[1]),
            "current_state_group": row[2]}


@read_only
def get_state_groups(conn, groups: list[int]) -> dict[int, list]:
    return {g: [[t, sk, e] for (t, sk), e in load_state_group(conn, g).items()] for g in groups}


@read_only
def stream(conn, after: int, limit: int, room_id: str | None) -> list[dict]:
    """Live events after `after`, oldest first: [{position, event (with event_id)}]."""
    live = "stream > ? AND outlier = 0 AND rejected IS NULL AND soft_failed = 0"
    if room_id:
        rows = conn.execute(f"SELECT stream, event_id, json FROM events WHERE room_id = ? AND {live}"
                            " ORDER BY stream LIMIT ?", (room_id, after, limit))
    else:
        rows = conn.execute(f"SELECT stream, event_id, json FROM events WHERE {live}"
                            " ORDER BY stream LIMIT ?", (after, limit))
    out = []
    for pos, event_id, js in rows:
        ev = orjson.loads(js)
        ev["event_id"] = event_id
        out.append({"position": pos, "event": ev})
    return out


@read_only
def max_stream(conn) -> int:
    return conn.execute("SELECT COALESCE(MAX(stream), 0) FROM events").fetchone()[0]


@read_only
def get_client_txn(conn, sender: str, txn_id: str) -> str | None:
    row = conn.execute("SELECT event_id FROM client_txns WHERE sender = ? AND txn_id = ?",
                       (sender, txn_id)).fetchone()
    return row[0] if row else None


@read_only
def room_ids(conn) -> list[str]:
    """Every room with a current state."""
    return [r[0] for r in conn.execute("SELECT room_id FROM rooms WHERE current_state_group"
                                       " IS NOT NULL ORDER BY room_id")]
