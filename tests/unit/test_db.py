"""The transaction service's database: each call atomic, queued calls grouped into one
commit, one call's failure undoing only its own writes, answers only after the commit.
On both engines (`db_engine`): sqlite, and a real PostgreSQL server."""
from __future__ import annotations

import asyncio
import threading

import pytest

from services.transaction.db import Database, DatabaseInUse
from services.transaction.engines import for_target


@pytest.fixture
def target(db_engine, tmp_path, new_database_url):
    """Where the test's database is: a sqlite file, or a fresh PostgreSQL database."""
    return str(tmp_path / "db.sqlite") if db_engine == "sqlite" else new_database_url()


def _fresh_connection(target):
    """A connection of our own, outside `Database` (what another process would see)."""
    engine = for_target(target)
    return engine.connect()


def _insert(conn, name, value, fail=False):
    conn.execute("INSERT INTO counters (name, value) VALUES (?, ?)", (name, value))
    if fail:
        raise ValueError(f"{name} fails after writing")
    return value


def _all(conn):
    return dict(conn.execute("SELECT name, value FROM counters").fetchall())


async def _hold(db) -> tuple[threading.Event, asyncio.Future]:
    """Occupy the database thread until the returned event is set."""
    started, release = threading.Event(), threading.Event()

    def hold(_conn):
        started.set()
        release.wait(10)
    blocker = asyncio.ensure_future(db.run(hold))
    while not started.is_set():
        await asyncio.sleep(0.005)
    return release, blocker


async def test_queued_calls_share_a_commit_and_failures_undo_only_their_own(target):
    db = Database(target)
    await db.start()
    try:
        release, blocker = await _hold(db)
        calls = [asyncio.ensure_future(db.run(_insert, f"k{i}", i, i % 3 == 1)) for i in range(9)]
        while db.queued < 9:
            await asyncio.sleep(0.005)
        assert not any(c.done() for c in calls)   # nobody answered before the commit
        commits = db.commits
        release.set()
        await blocker
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert [isinstance(r, ValueError) for r in results] == [i % 3 == 1 for i in range(9)]
        assert db.commits - commits == 2          # the blocker alone, then the nine together
        assert await db.run(_all) == {f"k{i}": i for i in range(9) if i % 3 != 1}
    finally:
        await db.close()
    # what was acknowledged is on disk: a fresh connection sees exactly it
    conn = _fresh_connection(target)
    assert dict(conn.execute("SELECT name, value FROM counters").fetchall()) == \
        {f"k{i}": i for i in range(9) if i % 3 != 1}
    conn.close()


async def test_a_group_whose_commit_fails_is_run_call_by_call(target):
    db = Database(target)
    await db.start()
    try:
        release, blocker = await _hold(db)

        def breaks_the_transaction(conn):
            conn.execute("ROLLBACK")    # as sqlite does itself on some errors (disk full...)
            return "ran"
        calls = [asyncio.ensure_future(db.run(_insert, "a", 1)),
                 asyncio.ensure_future(db.run(breaks_the_transaction)),
                 asyncio.ensure_future(db.run(_insert, "b", 2))]
        while db.queued < 3:
            await asyncio.sleep(0.005)
        release.set()
        await blocker
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert results[0] == 1 and results[2] == 2
        assert isinstance(results[1], db.engine.errors)   # alone, it cannot commit either
        assert await db.run(_all) == {"a": 1, "b": 2}
    finally:
        await db.close()


async def test_a_second_database_on_the_same_file_is_refused(target):
    db = Database(target)
    with pytest.raises(DatabaseInUse):
        Database(target)
    await db.start()
    await db.close()
    again = Database(target)     # released on close
    await again.start()
    await again.close()
