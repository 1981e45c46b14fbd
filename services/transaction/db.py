"""The one database of a homeserver: sqlite, opened only here, used from one thread.

Invariants:
- Only this module opens the file, and only from the single worker thread of `Database`
  (all access goes through `Database.run`, each call one database transaction).
- A lock file next to the database makes a second transaction service on the same file
  refuse to start (`DatabaseInUse`).
- WAL with synchronous=FULL: a commit that returned is on disk.
"""
from __future__ import annotations

import asyncio
import fcntl
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import (BigInteger, Column, Float, Index, Integer, LargeBinary, MetaData,
                        PrimaryKeyConstraint, Table, Text, create_engine, event)

metadata = MetaData()

received_transactions = Table(
    "received_transactions", metadata,
    Column("origin", Text, nullable=False), Column("txn_id", Text, nullable=False),
    Column("response", LargeBinary, nullable=False), Column("ts", BigInteger, nullable=False),
    PrimaryKeyConstraint("origin", "txn_id"))

inbox = Table(
    "inbox", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("origin", Text, nullable=False), Column("room_id", Text, nullable=False),
    Column("pdu", LargeBinary, nullable=False))

rooms = Table(
    "rooms", metadata,
    Column("room_id", Text, primary_key=True), Column("room_version", Text, nullable=False),
    Column("extremities", LargeBinary, nullable=False),  # JSON list of event ids
    Column("current_state_group", Integer))

events = Table(
    "events", metadata,
    Column("stream", Integer, primary_key=True, autoincrement=True),
    Column("event_id", Text, nullable=False, unique=True),
    Column("room_id", Text, nullable=False),
    Column("json", LargeBinary, nullable=False),
    Column("outlier", Integer, nullable=False, default=0),
    Column("rejected", Text),
    Column("soft_failed", Integer, nullable=False, default=0),
    Column("state_group", Integer))
Index("events_room_stream", events.c.room_id, events.c.stream)

state_groups = Table(
    "state_groups", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("room_id", Text, nullable=False),
    Column("prev_group", Integer),
    Column("chain_len", Integer, nullable=False),
    Column("delta", LargeBinary, nullable=False))  # JSON [[type, state_key, event_id], ...]

outbox = Table(
    "outbox", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("destination", Text, nullable=False),
    Column("event_id", Text),
    Column("edu", LargeBinary),
    Column("txn_id", Text))  # set once the row is part of a transaction being sent
Index("outbox_dest", outbox.c.destination, outbox.c.id)

destinations = Table(
    "destinations", metadata,
    Column("destination", Text, primary_key=True),
    Column("retry_at", Float, nullable=False, default=0.0),
    Column("retry_interval", Float, nullable=False, default=0.0),
    Column("failures", Integer, nullable=False, default=0))

client_txns = Table(
    "client_txns", metadata,
    Column("sender", Text, nullable=False), Column("txn_id", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    PrimaryKeyConstraint("sender", "txn_id"))

subscriptions = Table(
    "subscriptions", metadata,
    Column("subscription_id", Text, primary_key=True),
    Column("url", Text, nullable=False), Column("room_id", Text),
    Column("types", Text), Column("position", Integer, nullable=False),
    Column("lease_owner", Text), Column("lease_until", Float))

counters = Table(
    "counters", metadata,
    Column("name", Text, primary_key=True), Column("value", Integer, nullable=False))


class DatabaseInUse(RuntimeError):
    pass


class Database:
    """sqlite behind one worker thread. `await db.run(fn, *args)` runs fn(conn, *args) in a
    transaction on that thread and returns its result; an exception rolls it back."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(str(self.path) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise DatabaseInUse(f"{self.path} is already used by another transaction service")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db")
        self._engine = None
        self._conn = None

    def _open(self):
        engine = create_engine(f"sqlite:///{self.path}", poolclass=None)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=OFF")
            cur.close()

        metadata.create_all(engine)
        self._engine = engine
        self._conn = engine.connect()

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._open)

    def _run(self, fn, args):
        with self._conn.begin():
            return fn(self._conn, *args)

    async def run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._run, fn, args)

    async def close(self) -> None:
        def _close():
            if self._conn is not None:
                self._conn.close()
                self._engine.dispose()
        await asyncio.get_running_loop().run_in_executor(self._executor, _close)
        self._executor.shutdown(wait=True)
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        os.close(self._lock_fd)
