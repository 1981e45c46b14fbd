"""Other servers' users' device lists: how far we know each, and the resyncs owed. Plain
functions run on the database thread.

Invariants:
- A user's list is known up to `stream_id`: an m.device_list_update whose prev_id are all
  at most that (or a first update with no prev_id) moves it to the update's stream_id;
  one naming a prev_id beyond it (an update we never saw) owes a resync: a row in
  device_list_resyncs, committed with the transaction that brought the update.
- A user has at most one resync owed, and it is not tried before `next_try`: at least
  RESYNC_MIN_INTERVAL_S after the user's last finished resync, and after a failure
  RESYNC_MIN_INTERVAL_S doubling up to RESYNC_MAX_INTERVAL_S; so a peer whose prev_ids
  never line up cannot make us fetch in a loop.
- A finished resync sets stream_id to the answer's, clears the row and stores the answer
  as a `fedstack.user_devices` EDU for subscribers, in one commit.
"""
from __future__ import annotations

from services.transaction import store_edus
from services.transaction.sql import read_only

RESYNC_MIN_INTERVAL_S = 30.0
RESYNC_MAX_INTERVAL_S = 3600.0
RESYNC_EDU = "fedstack.user_devices"
MAX_DEVICES = 1000


def note_update(conn, origin: str, content: dict, now: float) -> bool:
    """Account for a received update; True if it owes a resync of its user."""
    user_id, stream_id, prev = content["user_id"], content["stream_id"], content.get("prev_id") or []
    row = conn.execute("SELECT stream_id, resynced_at FROM remote_device_lists WHERE user_id = ?",
                       (user_id,)).fetchone()
    if (row is None and not prev) or (row is not None and all(p <= row[0] for p in prev)):
        conn.execute("INSERT INTO remote_device_lists (user_id, stream_id) VALUES (?, ?) ON CONFLICT"
                     " (user_id) DO UPDATE SET stream_id = CASE WHEN excluded.stream_id > remote_device_lists.stream_id"
                     " THEN excluded.stream_id ELSE remote_device_lists.stream_id END",
                     (user_id, stream_id))
        return False
    last = row[1] if row is not None and row[1] is not None else None
    next_try = now if last is None else max(now, last + RESYNC_MIN_INTERVAL_S)
    conn.execute("INSERT INTO device_list_resyncs (user_id, origin, next_try) VALUES (?, ?, ?)"
                 " ON CONFLICT DO NOTHING",
                 (user_id, origin, next_try))
    return True


@read_only
def due_resyncs(conn, now: float, limit: int = 20) -> list[dict]:
    rows = conn.execute("SELECT user_id, origin, attempts FROM device_list_resyncs WHERE next_try <= ?"
                        " ORDER BY next_try LIMIT ?", (now, limit))
    return [{"user_id": u, "origin": o, "attempts": a} for u, o, a in rows]


@read_only
def next_resync_at(conn) -> float | None:
    return conn.execute("SELECT MIN(next_try) FROM device_list_resyncs").fetchone()[0]


def resync_failed(conn, user_id: str, attempts: int, now: float) -> None:
    wait = min(RESYNC_MAX_INTERVAL_S, RESYNC_MIN_INTERVAL_S * 2 ** attempts)
    conn.execute("UPDATE device_list_resyncs SET next_try = ?, attempts = ? WHERE user_id = ?",
                 (now + wait, attempts + 1, user_id))


def resync_done(conn, user_id: str, origin: str, answer: dict, now: float) -> None:
    """Store the checked /user/devices answer (see `checked_answer`)."""
    conn.execute("INSERT INTO remote_device_lists (user_id, stream_id, resynced_at) VALUES (?, ?, ?)"
                 " ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id,"
                 " resynced_at = excluded.resynced_at", (user_id, answer["stream_id"], now))
    conn.execute("DELETE FROM device_list_resyncs WHERE user_id = ?", (user_id,))
    store_edus.stage(conn, origin, [(RESYNC_EDU, None, answer, None)], int(now * 1000))


def checked_answer(user_id: str, body) -> dict | None:
    """The /user/devices answer reduced to what is well-formed and about `user_id`."""
    if not isinstance(body, dict) or body.get("user_id") != user_id:
        return None
    sid = body.get("stream_id")
    if not isinstance(sid, int) or isinstance(sid, bool) or not 0 <= sid < 2**63:
        return None
    devices = [d for d in body.get("devices") or [] if isinstance(d, dict)
               and isinstance(d.get("device_id"), str)
               and (not isinstance(d.get("keys"), dict)
                    or (d["keys"].get("user_id") == user_id and d["keys"].get("device_id") == d["device_id"]))]
    out = {"user_id": user_id, "stream_id": sid, "devices": devices[:MAX_DEVICES]}
    for k in ("master_key", "self_signing_key"):
        if isinstance(body.get(k), dict) and body[k].get("user_id") == user_id:
            out[k] = body[k]
    return out
