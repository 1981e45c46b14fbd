"""Our users' devices and keys, as the homeserver told the stack. Plain functions run on
the database thread.

Invariants:
- Every change of a user's device list takes a new stream_id from one persisted counter
  (so a user's stream_ids only grow, also across devices and restarts), and its
  m.device_list_update EDU (stream_id, prev_id = the user's previous stream_id) is queued
  for the given destinations in the same commit as the change: never one without the other.
- A user's list before any change is stream_id 0 (what /user/devices answers for it), so
  the first update names prev_id [0]: a server that fetched the empty list (Synapse does
  when one of our users joins its room) applies the update without fetching the list
  again; an empty prev_id would make Synapse resync every time (and its resync racing a
  key query reports us in `failures`).
- A cross-signing change queues its m.signing_key_update in the same commit.
- A one-time key is handed out at most once: a claim deletes what it returns in the same
  call, and calls run one at a time on the database thread (concurrent claims serialise).
- Only keys of the user and device they are stored under are accepted (400 otherwise).
"""
from __future__ import annotations

import orjson

from services.transaction.store_federation import enqueue_edus
from shared.canonical import dumps
from shared.errors import MatrixError
from services.transaction.sql import read_only

CROSS_SIGNING = ("master_key", "self_signing_key", "user_signing_key")
PUBLIC_CROSS_SIGNING = ("master_key", "self_signing_key")    # what other servers get


def _next_stream_id(conn, user_id: str) -> tuple[int, list[int]]:
    value = conn.execute("INSERT INTO counters (name, value) VALUES ('device_stream', 1)"
                         " ON CONFLICT (name) DO UPDATE SET value = counters.value + 1 RETURNING value"
                         ).fetchone()[0]
    row = conn.execute("SELECT stream_id FROM device_streams WHERE user_id = ?", (user_id,)).fetchone()
    conn.execute("INSERT INTO device_streams (user_id, stream_id) VALUES (?, ?) ON CONFLICT"
                 " (user_id) DO UPDATE SET stream_id = excluded.stream_id", (user_id, value))
    return value, [row[0] if row else 0]


def _check_keys(keys: dict, user_id: str, device_id: str | None = None) -> None:
    if keys.get("user_id") != user_id or (device_id is not None and keys.get("device_id") != device_id):
        raise MatrixError(400, "M_INVALID_PARAM", "keys name another user or device")


def _device_update(user_id, device_id, stream_id, prev_id, display_name, keys, deleted) -> dict:
    edu = {"user_id": user_id, "device_id": device_id, "stream_id": stream_id,
           "prev_id": prev_id, "deleted": deleted}
    if display_name is not None:
        edu["device_display_name"] = display_name
    if keys is not None:
        edu["keys"] = keys
    return edu


def put_device(conn, user_id: str, device_id: str, display_name: str | None, keys: dict | None,
               destinations: list[str]) -> dict:
    """Add or change a device (given fields replace stored ones); queue the update."""
    if keys is not None:
        _check_keys(keys, user_id, device_id)
    row = conn.execute("SELECT display_name, keys FROM devices WHERE user_id = ? AND device_id = ?",
                       (user_id, device_id)).fetchone()
    if row is not None:
        display_name = display_name if display_name is not None else row[0]
        keys = keys if keys is not None else (orjson.loads(row[1]) if row[1] else None)
    conn.execute("INSERT INTO devices (user_id, device_id, display_name, keys) VALUES (?, ?, ?, ?)"
                 " ON CONFLICT (user_id, device_id) DO UPDATE SET display_name = excluded.display_name,"
                 " keys = excluded.keys",
                 (user_id, device_id, display_name, dumps(keys) if keys is not None else None))
    stream_id, prev_id = _next_stream_id(conn, user_id)
    edu = _device_update(user_id, device_id, stream_id, prev_id, display_name, keys, False)
    enqueue_edus(conn, [(d, {"edu_type": "m.device_list_update", "content": edu})
                        for d in destinations])
    return {"stream_id": stream_id, "prev_id": prev_id}


def delete_device(conn, user_id: str, device_id: str, destinations: list[str]) -> dict:
    """Remove a device and its one-time keys; queue a `deleted` update (404 if unknown)."""
    if not conn.execute("DELETE FROM devices WHERE user_id = ? AND device_id = ?",
                        (user_id, device_id)).rowcount:
        raise MatrixError(404, "M_NOT_FOUND", "unknown device")
    conn.execute("DELETE FROM one_time_keys WHERE user_id = ? AND device_id = ?", (user_id, device_id))
    stream_id, prev_id = _next_stream_id(conn, user_id)
    edu = _device_update(user_id, device_id, stream_id, prev_id, None, None, True)
    enqueue_edus(conn, [(d, {"edu_type": "m.device_list_update", "content": edu})
                        for d in destinations])
    return {"stream_id": stream_id, "prev_id": prev_id}


def put_cross_signing(conn, user_id: str, keys: dict, destinations: list[str]) -> dict:
    """Store the given cross-signing keys; queue m.signing_key_update with the public ones."""
    for key_type, key in keys.items():
        _check_keys(key, user_id)
        conn.execute("INSERT INTO cross_signing_keys (user_id, key_type, key) VALUES (?, ?, ?)"
                     " ON CONFLICT (user_id, key_type) DO UPDATE SET key = excluded.key",
                     (user_id, key_type, dumps(key)))
    public = {t: k for t, k in keys.items() if t in PUBLIC_CROSS_SIGNING}
    if public:
        enqueue_edus(conn, [(d, {"edu_type": "m.signing_key_update",
                                 "content": {"user_id": user_id, **public}}) for d in destinations])
    return {}


def add_one_time_keys(conn, user_id: str, device_id: str, keys: dict) -> dict:
    """Add one-time keys ("algorithm:key_id" -> key) of a known device; a key id already
    stored keeps its first key. Returns the counts per algorithm left."""
    if conn.execute("SELECT 1 FROM devices WHERE user_id = ? AND device_id = ?",
                    (user_id, device_id)).fetchone() is None:
        raise MatrixError(404, "M_NOT_FOUND", "unknown device")
    for key_id in keys:
        if ":" not in key_id:
            raise MatrixError(400, "M_INVALID_PARAM", f"one-time key id {key_id[:80]!r} is not algorithm:id")
    conn.executemany("INSERT INTO one_time_keys (user_id, device_id, key_id, key)"
                     " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                     [(user_id, device_id, k, dumps(v)) for k, v in keys.items()])
    counts: dict[str, int] = {}
    for (key_id,) in conn.execute("SELECT key_id FROM one_time_keys WHERE user_id = ? AND device_id = ?",
                                  (user_id, device_id)):
        alg = key_id.split(":", 1)[0]
        counts[alg] = counts.get(alg, 0) + 1
    return {"one_time_key_counts": counts}


def _cross_signing(conn, user_id: str) -> dict:
    return {t: orjson.loads(k) for t, k in conn.execute(
        "SELECT key_type, key FROM cross_signing_keys WHERE user_id = ?", (user_id,))
        if t in PUBLIC_CROSS_SIGNING}


def _with_display_name(keys: dict, display_name: str | None) -> dict:
    if display_name is None:
        return keys
    return dict(keys, unsigned={**(keys.get("unsigned") or {}), "device_display_name": display_name})


@read_only
def user_devices(conn, user_id: str) -> dict:
    """The /user/devices answer: {user_id, stream_id, devices, master_key?, self_signing_key?}."""
    row = conn.execute("SELECT stream_id FROM device_streams WHERE user_id = ?", (user_id,)).fetchone()
    devices = []
    for device_id, name, keys in conn.execute(
            "SELECT device_id, display_name, keys FROM devices WHERE user_id = ? ORDER BY device_id",
            (user_id,)):
        d = {"device_id": device_id}
        if keys:
            d["keys"] = orjson.loads(keys)
        if name is not None:
            d["device_display_name"] = name
        devices.append(d)
    return {"user_id": user_id, "stream_id": row[0] if row else 0, "devices": devices,
            **_cross_signing(conn, user_id)}


@read_only
def query_keys(conn, device_keys: dict) -> dict:
    """The /user/keys/query answer for these users (all of ours): device keys (all devices
    for an empty list), and their public cross-signing keys."""
    out = {"device_keys": {}, "master_keys": {}, "self_signing_keys": {}}
    for user_id, wanted in device_keys.items():
        devs = {}
        for device_id, name, keys in conn.execute(
                "SELECT device_id, display_name, keys FROM devices WHERE user_id = ?"
                " AND keys IS NOT NULL ORDER BY device_id", (user_id,)):
            if not wanted or device_id in wanted:
                devs[device_id] = _with_display_name(orjson.loads(keys), name)
        out["device_keys"][user_id] = devs
        cs = _cross_signing(conn, user_id)
        if "master_key" in cs:
            out["master_keys"][user_id] = cs["master_key"]
        if "self_signing_key" in cs:
            out["self_signing_keys"][user_id] = cs["self_signing_key"]
    return out


def claim_keys(conn, one_time_keys: dict) -> dict:
    """Claim one key of the given algorithm per (user, device): {user: {device: algorithm}}.
    Each returned key is deleted in this same call."""
    out: dict = {}
    for user_id, by_device in one_time_keys.items():
        for device_id, algorithm in by_device.items():
            row = conn.execute("SELECT key_id, key FROM one_time_keys WHERE user_id = ? AND"
                               " device_id = ? AND key_id >= ? AND key_id < ? ORDER BY key_id LIMIT 1",
                               (user_id, device_id, algorithm + ":", algorithm + ";")).fetchone()
            if row is None:
                continue
            conn.execute("DELETE FROM one_time_keys WHERE user_id = ? AND device_id = ? AND key_id = ?",
                         (user_id, device_id, row[0]))
            out.setdefault(user_id, {}).setdefault(device_id, {})[row[0]] = orjson.loads(row[1])
    return {"one_time_keys": out}
