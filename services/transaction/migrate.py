"""Schema versions of the transaction service's database, with Alembic
(services/transaction/migrations): `ensure_current` before the service serves, `fedstack
migrate` and `fedstack up` before the processes start.

Invariants:
- HEAD is the newest revision this code knows (a test checks it against the migrations).
- A database at HEAD is used as it is; checking costs one query and imports neither
  Alembic nor SQLAlchemy.
- An older database is upgraded in place, every revision in its own transaction where the
  engine allows DDL in one (PostgreSQL; sqlite's DDL here commits per statement, and every
  revision is written to be re-run after an interruption).
- A database without Alembic's version table is either empty (created at HEAD) or a file
  of the releases before migrations existed (recognised by its tables; revision 0001 is
  exactly that schema, so upgrading it adds only what such a file may lack, and stamps it).
- A database at a revision this code does not know (written by a newer release) is
  refused (`DatabaseTooNew`), never touched.
"""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

HEAD = "0001"
MIGRATIONS = Path(__file__).parent / "migrations"


# Alembic keeps the running migration's context in module globals (alembic.context, op):
# two upgrades at once in one process (two homeservers started from two threads) would
# run on each other's connections. One at a time per process.
_ALEMBIC = threading.Lock()


class DatabaseTooNew(RuntimeError):
    pass


def current_revision(url: str) -> str | None:
    """The database's Alembic revision (None: no version table) without SQLAlchemy."""
    from services.transaction import engines
    engine = engines.for_target(url)
    if isinstance(engine, engines.SqliteEngine):
        engine.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(engine.path)
        try:
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND"
                                " name = 'alembic_version'").fetchone():
                return None
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        finally:
            conn.close()
    else:
        import psycopg
        with psycopg.connect(engine.conninfo, autocommit=True) as conn:
            if conn.execute("SELECT to_regclass('alembic_version')").fetchone()[0] is None:
                return None
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return row[0] if row else None


def ensure_current(url: str) -> str:
    """Bring the database at `url` to HEAD (see the invariants); returns what was done:
    "current", "created" or "upgraded from REV" (REV "pre-alembic" for an old file)."""
    rev = current_revision(url)
    if rev == HEAD:
        return "current"
    with _ALEMBIC:
        return _upgrade(url)


def _upgrade(url: str) -> str:
    rev = current_revision(url)     # again: another thread may have done it meanwhile
    if rev == HEAD:
        return "current"
    known = _revisions()
    if rev is not None and rev not in known:
        raise DatabaseTooNew(f"the database is at schema revision {rev}, which this code does "
                             f"not know (its newest is {HEAD}): it was written by a newer "
                             "fedstack; run that release (or restore a backup)")
    before = rev or ("pre-alembic" if _has_tables(url) else None)
    _alembic_upgrade(url)
    return "created" if before is None else f"upgraded from {before}"


def _config(url: str):
    from alembic.config import Config
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["url"] = url
    return cfg


def _revisions() -> set[str]:
    from alembic.script import ScriptDirectory
    return {s.revision for s in ScriptDirectory.from_config(_config("")).walk_revisions()}


def heads() -> list[str]:
    from alembic.script import ScriptDirectory
    return list(ScriptDirectory.from_config(_config("")).get_heads())


def _alembic_upgrade(url: str) -> None:
    from alembic import command
    command.upgrade(_config(url), "head")


def sqlalchemy_engine(url: str):
    """A SQLAlchemy engine for `url` (sqlite:///PATH or postgresql+psycopg://...)."""
    from sqlalchemy import create_engine
    from services.transaction import engines
    if isinstance(engines.for_target(url), engines.SqliteEngine) and "://" not in url:
        url = engines.sqlite_url(url)
    return create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))


def _has_tables(url: str) -> bool:
    from sqlalchemy import inspect
    engine = sqlalchemy_engine(url)
    try:
        return "events" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
