"""The test PostgreSQL server (tests/postgres.py): a real server, not run as root, and each
`new_database` empty and separate from the others."""
from __future__ import annotations

import psycopg


def _dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def test_each_new_database_is_fresh_and_the_server_is_not_root(postgres):
    first, second = postgres.new_database(), postgres.new_database()
    assert first != second
    with psycopg.connect(_dsn(first), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
        conn.execute("INSERT INTO t VALUES (1)")
        owner = conn.execute("SELECT usename FROM pg_stat_activity WHERE pid = pg_backend_pid()"
                             ).fetchone()[0]
        assert owner == "postgres"
        assert conn.execute("SELECT current_setting('lc_collate')").fetchone()[0] == "C"
    with psycopg.connect(_dsn(second)) as conn:
        assert conn.execute("SELECT to_regclass('t')").fetchone()[0] is None
    import os
    uid = os.stat(postgres.dir / "data").st_uid
    assert uid != 0 and postgres.proc.poll() is None
