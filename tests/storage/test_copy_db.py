"""`fedstack copy-db` (fedstack/copy_db.py): a stopped homeserver's sqlite database moved to
a real PostgreSQL server keeps every row, and the service on the copy resumes where the
original stopped (queues, subscription positions, stream positions and keys after the
copied ones). Copied back to a new sqlite file, every table is as it was, row for row.
A database in use, or a destination with rows, is refused."""
from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from services.transaction import store_edus
from services.transaction import store_events as se
from services.transaction import store_federation as sf
from services.transaction.db import Database

REPO = Path(__file__).resolve().parents[2]
ROOM = "!r:here.test"


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedstack.cli", *args], capture_output=True,
                          text=True, timeout=300, cwd=REPO, env=dict(os.environ))


async def _fill(url: str) -> dict:
    db = Database(url)
    await db.start()
    try:
        events = [{"event_id": f"$e{i}", "room_id": ROOM,
                   "event": {"type": "m.room.message", "room_id": ROOM, "content": {"n": i, "b": "é\u2603"}},
                   "state_after": {"delta": [["m.room.create", "", "$e0"]]} if i == 0 else {"same_as": "$e0"}}
                  for i in range(1200)]
        await db.run(se.persist, {"rooms": [{"room_id": ROOM, "room_version": "10", "extremities": ["$e1199"]}],
                                  "events": events,
                                  "destinations": {e["event_id"]: ["a.test"] for e in events[:700]}})
        await db.run(sf.enqueue_edus, [("b.test", {"edu_type": "m.typing", "content": {"x": 1}})])
        from services.transaction import store_trace
        await db.run(store_trace.stage, "req", "remote.test", "t1", b'{"pdus":{}}',
                     [(ROOM, {"type": "m.room.message"}, "$staged")], 1_700_000_000_000,
                     [("m.receipt", ROOM, {"r": 1}, None)])
        sub = await db.run(sf.add_subscription, "http://cb.test/x", ROOM, None, 0)
        await db.run(sf.set_subscription_position, sub["subscription_id"], 900)
        await db.run(sf.transaction_failed, "a.test", 1e12, 30.0)
        return {"sub": sub["subscription_id"], "head": await db.run(store_edus.max_position),
                "inbox": [i["inbox_id"] for i in await db.run(sf.read_inbox, 5)]}
    finally:
        await db.close()


def _dump(path: Path) -> dict[str, list]:
    conn = sqlite3.connect(path)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                                            " AND name NOT IN ('alembic_version', 'sqlite_sequence')")]
        return {n: sorted(conn.execute(f"SELECT * FROM {n}").fetchall(), key=repr) for n in names}
    finally:
        conn.close()


def test_copy_to_postgresql_keeps_every_row_and_the_service_resumes(tmp_path, postgres):
    source = tmp_path / "fedstack.db"
    info = asyncio.run(_fill(f"sqlite:///{source}"))
    dest = postgres.new_database()

    done = _cli("copy-db", "--from", f"sqlite:///{source}", "--to", dest)
    assert done.returncode == 0, done.stderr
    assert "events: 1200 rows" in done.stdout and "outbox: 701 rows" in done.stdout
    assert "copied and checked" in done.stdout

    async def resume():
        db = Database(dest)
        await db.start()
        try:
            evs = await db.run(se.get_events, [f"$e{i}" for i in range(1200)])
            assert [evs[f"$e{i}"]["event"]["content"]["n"] for i in range(1200)] == list(range(1200))
            assert evs["$e7"]["event"]["content"]["b"] == "é\u2603"
            assert await db.run(sf.outbox_count, "a.test") == 700
            assert (await db.run(sf.get_backoff, "a.test"))["failures"] == 1
            [sub] = await db.run(sf.list_subscriptions)
            assert (sub["subscription_id"], sub["position"]) == (info["sub"], 900)
            assert await db.run(sf.get_txn_response, "remote.test", "t1") == b'{"pdus":{}}'
            assert len(await db.run(store_edus.stream, 0, 10, None)) == 1
            assert await db.run(store_edus.max_position) == info["head"]
            page = await db.run(se.stream, 900, 1000, ROOM)
            assert [p["event"]["event_id"] for p in page] == [f"$e{i}" for i in range(900, 1200)]
            # keys and positions continue after the copied ones
            out = await db.run(se.persist, {"events": [{"event_id": "$new", "room_id": ROOM,
                                                        "event": {"type": "m.room.message"}}],
                                            "destinations": {"$new": ["a.test"]}})
            assert out["events"]["$new"]["stream"] > info["head"]
            await db.run(sf.stage_transaction, "remote.test", "t2", b"{}",
                         [(ROOM, {"type": "x"}, "$staged2")], 1, ())
            inbox = [i["inbox_id"] for i in await db.run(sf.read_inbox, 5)]
            assert inbox[0] == info["inbox"][0] and inbox[1] > inbox[0]
        finally:
            await db.close()
    asyncio.run(resume())

    # and back: a new sqlite file equal to the original, table by table (plus the new rows)
    back = tmp_path / "back.db"
    again = _cli("copy-db", "--from", dest, "--to", f"sqlite:///{back}")
    assert again.returncode == 0, again.stderr
    original, copied = _dump(source), _dump(back)
    for table in ("received_transactions", "inbox", "events", "outbox"):
        copied[table] = [r for r in copied[table] if "t2" not in r and "$staged2" not in r
                         and "$new" not in r]
    assert copied == original


def test_a_database_in_use_or_a_destination_with_rows_is_refused(tmp_path, postgres):
    source = tmp_path / "fedstack.db"
    asyncio.run(_fill(f"sqlite:///{source}"))
    dest = postgres.new_database()

    async def while_running():
        db = Database(f"sqlite:///{source}")
        await db.start()
        try:
            return await asyncio.to_thread(_cli, "copy-db", "--from", f"sqlite:///{source}", "--to", dest)
        finally:
            await db.close()
    busy = asyncio.run(while_running())
    assert busy.returncode == 1 and "stop the homeserver first" in busy.stderr

    assert _cli("copy-db", "--from", f"sqlite:///{source}", "--to", dest).returncode == 0
    twice = _cli("copy-db", "--from", f"sqlite:///{source}", "--to", dest)
    assert twice.returncode == 1 and "not empty" in twice.stderr
