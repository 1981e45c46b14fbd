"""The one database of a homeserver: sqlite, opened only here, used from one thread.

Invariants:
- Only this module opens the file, and only from the single worker thread of `Database`
  (all access goes through `Database.run`).
- Each `run(fn, ...)` is atomic: its writes all commit or none do (an exception rolls back
  exactly its own writes), and its future resolves only after the commit that holds them
  returned, so an acknowledged write is on disk (WAL, synchronous=FULL).
- Group commit: calls queued while the thread was busy run back to back in one sqlite
  transaction, each inside its own SAVEPOINT, and share one commit (one fsync). Calls are
  applied in the order they were queued.
- A lock file next to the database makes a second transaction service on the same file
  refuse to start (`DatabaseInUse`).

Why the stdlib `sqlite3` module and not SQLAlchemy: profiles of the transaction service
under load put 50-57% of the database thread in SQLAlchemy's statement building and
result handling (building an INSERT alone cost more than executing it), and importing it
added 11 MB to the process. The queries are few and fixed; they are plain SQL here.
"""
from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
from pathlib import Path

from shared.metrics import SIZE_BUCKETS

log = logging.getLogger("fedstack.transaction.db")

MAX_GROUP = 64      # calls sharing one commit at most

SCHEMA = """
CREATE TABLE IF NOT EXISTS received_transactions (
    origin TEXT NOT NULL, txn_id TEXT NOT NULL, response BLOB NOT NULL, ts BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id));
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, origin TEXT NOT NULL, room_id TEXT NOT NULL,
    pdu BLOB NOT NULL, event_id TEXT);
CREATE TABLE IF NOT EXISTS rooms (
    room_id TEXT PRIMARY KEY, room_version TEXT NOT NULL,
    extremities BLOB NOT NULL,               -- JSON list of event ids
    current_state_group INTEGER);
CREATE TABLE IF NOT EXISTS events (
    stream INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused: the live stream's order
    event_id TEXT NOT NULL UNIQUE, room_id TEXT NOT NULL, json BLOB NOT NULL,
    outlier INTEGER NOT NULL DEFAULT 0, rejected TEXT,
    soft_failed INTEGER NOT NULL DEFAULT 0, state_group INTEGER);
CREATE INDEX IF NOT EXISTS events_room_stream ON events (room_id, stream);
CREATE TABLE IF NOT EXISTS state_groups (
    id INTEGER PRIMARY KEY AUTOINCREMENT, room_id TEXT NOT NULL, prev_group INTEGER,
    chain_len INTEGER NOT NULL,
    delta BLOB NOT NULL);                    -- JSON [[type, state_key, event_id], ...]
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, destination TEXT NOT NULL, event_id TEXT,
    edu BLOB,
    txn_id TEXT);                            -- set once the row is in a transaction being sent
CREATE INDEX IF NOT EXISTS outbox_dest ON outbox (destination, id);
CREATE TABLE IF NOT EXISTS destinations (
    destination TEXT PRIMARY KEY, retry_at FLOAT NOT NULL DEFAULT 0.0,
    retry_interval FLOAT NOT NULL DEFAULT 0.0, failures INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS pending_redactions (   -- accepted redactions awaiting their target
    target TEXT NOT NULL, redaction_id TEXT NOT NULL, room_id TEXT NOT NULL,
    scope TEXT,                              -- NULL: any sender's event; else that server's
    PRIMARY KEY (target, redaction_id));
CREATE TABLE IF NOT EXISTS client_txns (
    sender TEXT NOT NULL, txn_id TEXT NOT NULL, event_id TEXT NOT NULL,
    PRIMARY KEY (sender, txn_id));
CREATE TABLE IF NOT EXISTS subscriptions (
    subscription_id TEXT PRIMARY KEY, url TEXT NOT NULL, room_id TEXT, types TEXT,
    position INTEGER NOT NULL, lease_owner TEXT, lease_until FLOAT, hs_token TEXT);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS event_request_ids (  -- store_trace: the request that staged an event
    event_id TEXT PRIMARY KEY, request_id TEXT NOT NULL, ts FLOAT NOT NULL);
CREATE INDEX IF NOT EXISTS event_request_ids_ts ON event_request_ids (ts);
CREATE TABLE IF NOT EXISTS edu_stream (
    stream INTEGER PRIMARY KEY,              -- taken from the events table's sequence
    origin TEXT NOT NULL, edu_type TEXT NOT NULL, room_id TEXT, content BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS edu_stream_room ON edu_stream (room_id, stream);
CREATE TABLE IF NOT EXISTS edu_seen (     -- EDUs that must not be delivered twice
    origin TEXT NOT NULL, edu_type TEXT NOT NULL, dedup TEXT NOT NULL, ts BIGINT NOT NULL,
    PRIMARY KEY (origin, edu_type, dedup));
CREATE INDEX IF NOT EXISTS edu_seen_ts ON edu_seen (ts);
CREATE TABLE IF NOT EXISTS devices (      -- our users' devices, as the homeserver gave them
    user_id TEXT NOT NULL, device_id TEXT NOT NULL, display_name TEXT, keys BLOB,
    PRIMARY KEY (user_id, device_id));
CREATE TABLE IF NOT EXISTS device_streams (  -- per user: stream_id of its last device change
    user_id TEXT PRIMARY KEY, stream_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS cross_signing_keys (
    user_id TEXT NOT NULL, key_type TEXT NOT NULL, key BLOB NOT NULL,
    PRIMARY KEY (user_id, key_type));
CREATE TABLE IF NOT EXISTS one_time_keys (   -- key_id is "algorithm:id"
    user_id TEXT NOT NULL, device_id TEXT NOT NULL, key_id TEXT NOT NULL, key BLOB NOT NULL,
    PRIMARY KEY (user_id, device_id, key_id));
CREATE TABLE IF NOT EXISTS remote_device_lists (  -- other servers' users: known up to stream_id
    user_id TEXT PRIMARY KEY, stream_id INTEGER NOT NULL, resynced_at FLOAT);
CREATE TABLE IF NOT EXISTS device_list_resyncs (  -- users whose list must be fetched again
    user_id TEXT PRIMARY KEY, origin TEXT NOT NULL, next_try FLOAT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS profiles (        -- store_directory: our users' profiles
    user_id TEXT PRIMARY KEY, displayname TEXT, avatar_url TEXT);
CREATE TABLE IF NOT EXISTS query_handlers (query_type TEXT PRIMARY KEY, url TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS room_aliases (    -- our aliases; servers: a JSON list
    alias TEXT PRIMARY KEY, room_id TEXT NOT NULL, servers TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS room_aliases_room ON room_aliases (room_id);
CREATE TABLE IF NOT EXISTS published_rooms (room_id TEXT PRIMARY KEY);   -- the public room list
"""


class DatabaseInUse(RuntimeError):
    pass


class _Call:
    __slots__ = ("fn", "args", "loop", "future", "result", "error")

    def __init__(self, fn, args, loop, future):
        self.fn, self.args, self.loop, self.future = fn, args, loop, future
        self.result = self.error = None


class Database:
    """sqlite behind one worker thread. `await db.run(fn, *args)` runs fn(conn, *args)
    atomically on that thread (see the module invariants) and returns its result."""

    def __init__(self, path: str | Path, metrics=None):
        self.path = Path(path)
        self.metrics = metrics      # the service's Metrics (None: not measured)
        self._timers: dict = {}     # fn -> its latency histogram child
        self._call_seconds = self._group_size = None
        if metrics is not None:
            self._call_seconds = metrics.histogram(
                "fedstack_db_call_seconds", "Database call latency (queue wait, run and "
                "commit), per call", ["call"])
            self._group_size = metrics.threadsafe_histogram(
                "fedstack_db_group_commit_size", "Calls sharing one commit", [],
                buckets=SIZE_BUCKETS)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(str(self.path) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise DatabaseInUse(f"{self.path} is already used by another transaction service")
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.commits = 0            # observable: calls / commits shows the grouping

    async def start(self) -> None:
        opened = asyncio.get_running_loop().create_future()
        loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._main, args=(loop, opened), name="db",
                                        daemon=True)
        self._thread.start()
        await opened

    async def run(self, fn, *args):
        if self._thread is None or not self._thread.is_alive():
            raise RuntimeError("database is closed")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if self._call_seconds is None:
            self._queue.put(_Call(fn, args, loop, fut))
            return await fut
        timer = self._timers.get(fn)
        if timer is None:
            timer = self._timers[fn] = self._call_seconds.labels(getattr(fn, "__name__", "call"))
        start = time.perf_counter()
        self._queue.put(_Call(fn, args, loop, fut))
        try:
            return await fut
        finally:
            timer.observe(time.perf_counter() - start)

    @property
    def queued(self) -> int:
        """Calls waiting for the database thread (observable for tests)."""
        return self._queue.qsize()

    async def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        os.close(self._lock_fd)

    # ------------------------------------------------------------------ database thread

    def _main(self, loop, opened) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(SCHEMA)
            _upgrade(conn)
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            loop.call_soon_threadsafe(_settle, opened, None, exc)
            return
        loop.call_soon_threadsafe(_settle, opened, None, None)
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                calls = [first]
                stop = False
                while len(calls) < MAX_GROUP:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    calls.append(nxt)
                self._run_group(conn, calls)
                if self._group_size is not None:
                    self._group_size.observe(len(calls))
                for c in calls:
                    try:
                        c.loop.call_soon_threadsafe(_settle, c.future, c.result, c.error)
                    except RuntimeError:    # that event loop is closed: nobody waits
                        pass
                if stop:
                    return
        finally:
            conn.close()

    def _run_group(self, conn, calls: list[_Call]) -> None:
        """Run `calls` in one transaction, each in a savepoint; commit once. If the
        transaction as a whole fails, each call is run again on its own."""
        if len(calls) == 1:
            self._run_alone(conn, calls[0])
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            for c in calls:
                conn.execute("SAVEPOINT call")
                try:
                    c.result = c.fn(conn, *c.args)
                except Exception as exc:  # noqa: BLE001 - this call's error, its writes undone
                    c.error = exc
                    conn.execute("ROLLBACK TO call")
                conn.execute("RELEASE call")
            conn.execute("COMMIT")
            self.commits += 1
        except sqlite3.Error as exc:  # the group's transaction itself failed
            log.warning("group commit of %d calls failed (%s); running them one by one",
                        len(calls), exc)
            _rollback(conn)
            for c in calls:
                c.result = c.error = None
                self._run_alone(conn, c)

    def _run_alone(self, conn, c: _Call) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            c.result = c.fn(conn, *c.args)
            conn.execute("COMMIT")
            self.commits += 1
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            c.result, c.error = None, exc
            _rollback(conn)


def _upgrade(conn) -> None:
    """Columns added since a database file may have been created."""
    if "event_id" not in {row[1] for row in conn.execute("PRAGMA table_info(inbox)")}:
        conn.execute("ALTER TABLE inbox ADD COLUMN event_id TEXT")
    if "hs_token" not in {row[1] for row in conn.execute("PRAGMA table_info(subscriptions)")}:
        conn.execute("ALTER TABLE subscriptions ADD COLUMN hs_token TEXT")   # NULL: made before tokens


def _rollback(conn) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def _settle(fut: asyncio.Future, result, error) -> None:
    if fut.done():          # the caller was cancelled; its call ran (or not) all the same
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)
