"""The one database of a homeserver: sqlite (the default, a file in the data directory) or
PostgreSQL (`database_url` postgresql+psycopg://...), opened only here.

Invariants (both engines; how each holds it in brackets):
- Only this module opens the database, and store functions run only on its worker threads
  (all access goes through `Database.run`). Writes run on one writer thread with one
  connection. [sqlite: that thread is the only one. PostgreSQL: also a small pool of
  READERS reader threads, each with its own connection, for functions marked
  `sql.read_only`; each such call is one REPEATABLE READ READ ONLY transaction, a
  consistent snapshot.]
- Each `run(fn, ...)` is atomic: its writes all commit or none do (an exception rolls back
  exactly its own writes), and its future resolves only after the commit that holds them
  returned, so an acknowledged write is durable [sqlite: WAL, synchronous=FULL;
  PostgreSQL: its commit, with the server's synchronous_commit].
- Group commit: write calls queued while the writer was busy run back to back in one
  transaction, each inside its own SAVEPOINT, and share one commit (one fsync). Writes
  are applied in the order they were queued. A read sees every write whose call returned
  before the read was queued (it starts after that commit).
- Writes are serialised (one writer), so stream positions (sql.next_positions and the
  events key) are drawn and committed in increasing order: a reader never sees a position
  while a lower one is still to come.
- A second transaction service on the same database refuses to start (`DatabaseInUse`)
  [sqlite: a lock file next to the database; PostgreSQL: a session advisory lock held by
  a connection of this process for its lifetime].
- The schema is at the code's revision before any call runs (migrate.ensure_current:
  a database of an older release is upgraded in place; one newer than the code is
  refused with `migrate.DatabaseTooNew`).

Why SQLAlchemy only at the edges: it defines the schema (schema.py) that Alembic migrates
and `fedstack copy-db` copies, and it compiles the portable SQL for PostgreSQL once
(sql.py); calls execute on the driver's connection. Profiles of the transaction service
under load put 50-57% of the database thread in SQLAlchemy's statement building and result
handling when every call went through it (building an INSERT alone cost more than
executing it); a sqlite database at the current revision is served without importing it.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from pathlib import Path

from services.transaction import engines, migrate
from services.transaction.engines import DatabaseInUse  # noqa: F401  (re-exported)
from shared.metrics import SIZE_BUCKETS

log = logging.getLogger("fedstack.transaction.db")

MAX_GROUP = 64      # calls sharing one commit at most
READERS = 3         # PostgreSQL: reader connections besides the writer's


class _Call:
    __slots__ = ("fn", "args", "loop", "future", "result", "error")

    def __init__(self, fn, args, loop, future):
        self.fn, self.args, self.loop, self.future = fn, args, loop, future
        self.result = self.error = None


class Database:
    """`await db.run(fn, *args)` runs fn(conn, *args) atomically on a worker thread (see
    the module invariants) and returns its result. `target`: a database URL
    (sqlite:///PATH, postgresql+psycopg://...) or a sqlite file's path."""

    def __init__(self, target: str | Path, metrics=None):
        self.engine = engines.for_target(target)
        self.url = self.engine.url
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
        self.engine.acquire()       # DatabaseInUse
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._reads: queue.SimpleQueue | None = None
        self._threads: list[threading.Thread] = []
        self.commits = 0            # observable: calls / commits shows the grouping

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.to_thread(migrate.ensure_current, self.url)
        except BaseException:
            self.engine.release()
            raise
        opened = loop.create_future()
        writer = threading.Thread(target=self._main, args=(loop, opened), name="db", daemon=True)
        writer.start()
        self._threads = [writer]
        await opened
        if self.engine.readers:
            self._reads = queue.SimpleQueue()
            for i in range(min(self.engine.readers, READERS)):
                ready = loop.create_future()
                t = threading.Thread(target=self._reader, args=(loop, ready), name=f"db-read-{i}",
                                     daemon=True)
                t.start()
                self._threads.append(t)
                await ready

    async def run(self, fn, *args):
        if not self._threads or not self._threads[0].is_alive():
            raise RuntimeError("database is closed")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        q = self._reads if self._reads is not None and getattr(fn, "read_only", False) else self._queue
        if self._call_seconds is None:
            q.put(_Call(fn, args, loop, fut))
            return await fut
        timer = self._timers.get(fn)
        if timer is None:
            timer = self._timers[fn] = self._call_seconds.labels(getattr(fn, "__name__", "call"))
        start = time.perf_counter()
        q.put(_Call(fn, args, loop, fut))
        try:
            return await fut
        finally:
            timer.observe(time.perf_counter() - start)

    @property
    def queued(self) -> int:
        """Calls waiting for the database threads (observable for tests)."""
        return self._queue.qsize() + (self._reads.qsize() if self._reads is not None else 0)

    async def close(self) -> None:
        if self._threads:
            if self._reads is not None:
                for _ in self._threads[1:]:
                    self._reads.put(None)
            self._queue.put(None)
            for t in self._threads:
                await asyncio.to_thread(t.join)
            self._threads = []
            self._reads = None
        self.engine.release()

    # ------------------------------------------------------------------ worker threads

    def _main(self, loop, opened) -> None:
        try:
            conn = self.engine.connect()
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
                conn = self.engine.usable(conn)
                self._run_group(conn, calls)
                if self._group_size is not None:
                    self._group_size.observe(len(calls))
                for c in calls:
                    _answer(c)
                if stop:
                    return
        finally:
            conn.close()

    def _reader(self, loop, ready) -> None:
        try:
            conn = self.engine.connect()
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            loop.call_soon_threadsafe(_settle, ready, None, exc)
            return
        loop.call_soon_threadsafe(_settle, ready, None, None)
        try:
            while True:
                c = self._reads.get()
                if c is None:
                    return
                conn = self.engine.usable(conn)
                try:
                    self.engine.begin_read(conn)
                    c.result = c.fn(conn, *c.args)
                    self.engine.commit(conn)
                except Exception as exc:  # noqa: BLE001 - handed to the caller
                    c.result, c.error = None, exc
                    self.engine.rollback(conn)
                _answer(c)
        finally:
            conn.close()

    def _run_group(self, conn, calls: list[_Call]) -> None:
        """Run `calls` in one transaction, each in a savepoint; commit once. If the
        transaction as a whole fails, each call is run again on its own."""
        if len(calls) == 1:
            self._run_alone(conn, calls[0])
            return
        engine = self.engine
        try:
            engine.begin(conn)
            for c in calls:
                conn.execute("SAVEPOINT call")
                try:
                    c.result = c.fn(conn, *c.args)
                except Exception as exc:  # noqa: BLE001 - this call's error, its writes undone
                    c.error = exc
                    conn.execute("ROLLBACK TO SAVEPOINT call")
                conn.execute("RELEASE SAVEPOINT call")
            engine.commit(conn)
            self.commits += 1
        except engine.errors as exc:  # the group's transaction itself failed
            log.warning("group commit of %d calls failed (%s); running them one by one",
                        len(calls), exc)
            engine.rollback(conn)
            for c in calls:
                c.result = c.error = None
                conn = engine.usable(conn)
                self._run_alone(conn, c)

    def _run_alone(self, conn, c: _Call) -> None:
        try:
            self.engine.begin(conn)
            c.result = c.fn(conn, *c.args)
            self.engine.commit(conn)
            self.commits += 1
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            c.result, c.error = None, exc
            self.engine.rollback(conn)


def _answer(c: _Call) -> None:
    try:
        c.loop.call_soon_threadsafe(_settle, c.future, c.result, c.error)
    except RuntimeError:    # that event loop is closed: nobody waits
        pass


def _settle(fut: asyncio.Future, result, error) -> None:
    if fut.done():          # the caller was cancelled; its call ran (or not) all the same
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)
