"""Schema migrations of the transaction service's database (services/transaction/migrate.py).

- A sqlite file written by the last release before migrations (its code, from git, run in
  a process of its own) is upgraded in place by `fedstack migrate`: every row of every
  table is still there, byte for byte, and the new code reads its events, queues,
  subscription positions and stream head as that release left them, and continues the
  positions after them.
- A database at a revision the code does not know is refused by `fedstack migrate`, by
  `fedstack up` and by the service itself, and left untouched.
- A fresh database of either engine is created at HEAD, which is exactly schema.py.
"""
from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tarfile
import io
from pathlib import Path

import pytest

from services.transaction import migrate, schema
from services.transaction import store_events as se
from services.transaction import store_edus
from services.transaction import store_federation as sf
from services.transaction.db import Database

REPO = Path(__file__).resolve().parents[2]
PRE_MIGRATIONS = "7b539ed42670a32d0e20a5a56209af4e2132566b"   # the last commit without them

# Run by the old release's code (PYTHONPATH: its tree): fills a database the way the service
# would, through its own Database and store functions.
FILL = r'''
import asyncio, json, sys
from services.transaction.db import Database
from services.transaction import store_events as se, store_federation as sf, store_edus, store_trace
from services.transaction import store_devices as sd

ROOM = "!old:here.test"

async def main(path):
    db = Database(path)
    await db.start()
    events = [{"event_id": f"$old{i}", "room_id": ROOM,
               "event": {"type": "m.room.message", "room_id": ROOM, "content": {"n": i, "big": 2**62}},
               "state_after": {"delta": [["m.room.create", "", "$old0"]]} if i == 0 else {"same_as": "$old0"}}
              for i in range(30)]
    await db.run(se.persist, {"rooms": [{"room_id": ROOM, "room_version": "10", "extremities": ["$old29"]}],
                              "events": events,
                              "destinations": {e["event_id"]: ["a.test", "b.test"] for e in events[:20]},
                              "client_txn": {"sender": "@u:here.test", "txn_id": "c1", "event_id": "$old5"}})
    await db.run(sf.enqueue_edus, [("a.test", {"edu_type": "m.typing", "content": {"x": 1}})])
    await db.run(store_trace.stage, "req1", "remote.test", "t1", b'{"pdus":{}}',
                 [(ROOM, {"type": "m.room.message", "room_id": ROOM}, "$staged1")], 1700000000000,
                 [("m.receipt", ROOM, {"r": 1}, None), ("m.direct_to_device", None, {"m": 1}, "mid1")])
    sub = await db.run(sf.add_subscription, "http://cb.test/x", None, ["m.room.message"], 3)
    await db.run(sf.set_subscription_position, sub["subscription_id"], 17)
    await db.run(sf.transaction_failed, "b.test", 1e12, 60.0)
    await db.run(sd.put_device, "@u:here.test", "DEV", "phone",
                 {"user_id": "@u:here.test", "device_id": "DEV", "keys": {}}, ["a.test"])
    head = await db.run(store_edus.max_position)
    await db.close()
    print(json.dumps({"subscription_id": sub["subscription_id"], "head": head}))

asyncio.run(main(sys.argv[1]))
'''


def _old_release(tmp_path: Path) -> Path:
    tree = tmp_path / "old-release"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", PRE_MIGRATIONS, "services", "shared"],
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree)
    return tree


def _dump(path: Path) -> dict[str, list]:
    conn = sqlite3.connect(path)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                                            " AND name != 'alembic_version' ORDER BY name")]
        return {n: sorted(conn.execute(f"SELECT * FROM {n}").fetchall(), key=repr) for n in names}
    finally:
        conn.close()


def _cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedstack.cli", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})}, cwd=REPO)


def test_a_database_of_the_release_before_migrations_is_upgraded_with_every_row(tmp_path):
    old = _old_release(tmp_path)
    data = tmp_path / "data"
    db_file = data / "fedstack.db"
    data.mkdir()
    filled = subprocess.run([sys.executable, "-c", FILL, str(db_file)], capture_output=True, text=True,
                            timeout=120, cwd=old, env={**os.environ, "PYTHONPATH": str(old)})
    assert filled.returncode == 0, filled.stderr
    info = json.loads(filled.stdout)
    before = _dump(db_file)
    assert len(before["events"]) == 30 and len(before["outbox"]) == 42 and len(before["inbox"]) == 1
    assert migrate.current_revision(str(db_file)) is None          # no migrations back then

    done = _cli("migrate", "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    assert "upgraded from pre-alembic" in done.stdout
    assert migrate.current_revision(str(db_file)) == migrate.HEAD
    assert _dump(db_file) == before                                 # every row, byte for byte
    again = _cli("migrate", "--data-dir", str(data))
    assert again.returncode == 0 and again.stdout == ""              # at HEAD: nothing to do

    async def read_back():
        db = Database(db_file)
        await db.start()
        try:
            events = await db.run(se.get_events, [f"$old{i}" for i in range(30)])
            assert [events[f"$old{i}"]["event"]["content"]["n"] for i in range(30)] == list(range(30))
            assert events["$old3"]["event"]["content"]["big"] == 2**62
            assert await db.run(se.get_client_txn, "@u:here.test", "c1") == "$old5"
            assert await db.run(sf.outbox_count, "a.test") == 20 + 1 + 1   # PDUs, typing, device
            assert await db.run(sf.outbox_count, "b.test") == 20
            assert (await db.run(sf.get_backoff, "b.test"))["failures"] == 1
            [sub] = await db.run(sf.list_subscriptions)
            assert (sub["subscription_id"], sub["position"]) == (info["subscription_id"], 17)
            assert await db.run(sf.get_txn_response, "remote.test", "t1") == b'{"pdus":{}}'
            assert [i["event_id"] for i in await db.run(sf.read_inbox, 10)] == ["$staged1"]
            assert len(await db.run(store_edus.stream, 0, 10, None)) == 2
            assert await db.run(store_edus.max_position) == info["head"]
            txn = await db.run(sf.next_transaction, "a.test", 50, 50)
            assert len(txn["pdus"]) == 20 and len(txn["edus"]) == 2
            # new positions follow the old ones
            room = "!old:here.test"
            out = await db.run(se.persist, {"events": [{"event_id": "$new", "room_id": room,
                                                        "event": {"type": "m.room.message", "room_id": room}}]})
            assert out["events"]["$new"]["stream"] > info["head"]
        finally:
            await db.close()
    asyncio.run(read_back())


def _stamp(url: str, revision: str) -> None:
    from sqlalchemy import text
    engine = migrate.sqlalchemy_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": revision})
    engine.dispose()


def test_a_database_newer_than_the_code_is_refused_and_untouched(tmp_path, db_engine, new_database_url):
    data = tmp_path / "data"
    url = new_database_url() or f"sqlite:///{data / 'fedstack.db'}"
    env = {"FEDSTACK_DATABASE_URL": url}
    created = _cli("migrate", "--data-dir", str(data), env=env)
    assert created.returncode == 0, created.stderr
    assert "created" in created.stdout
    _stamp(url, "9999_from_the_future")

    refused = _cli("migrate", "--data-dir", str(data), env=env)
    assert refused.returncode == 1
    assert "9999_from_the_future" in refused.stderr and "newer" in refused.stderr
    up = _cli("up", "--server-name", "hs.test", "--data-dir", str(data), "--port", "1",
              "--api-port", "2", "--database-url", url)
    assert up.returncode == 1 and "9999_from_the_future" in up.stderr
    assert "stopped" not in up.stdout                                # nothing was started

    async def start():
        db = Database(url)
        with pytest.raises(migrate.DatabaseTooNew):
            await db.start()
        await Database(url).close()   # it let go of the database (not DatabaseInUse)
    asyncio.run(start())
    assert migrate.current_revision(url) == "9999_from_the_future"


def test_a_fresh_database_is_created_at_head_exactly_as_schema_py(db_engine, new_database_url, tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    assert migrate.heads() == [migrate.HEAD]
    url = new_database_url() or f"sqlite:///{tmp_path / 'fresh.db'}"
    assert migrate.ensure_current(url) == "created"
    assert migrate.ensure_current(url) == "current"
    engine = migrate.sqlalchemy_engine(url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), schema.metadata)
    finally:
        engine.dispose()
    assert diff == []
