"""How the store_* modules' SQL reaches each engine: the one place where sqlite and
PostgreSQL differ in SQL.

The store functions get a DB-API connection (`fn(conn, ...)`, see db.py) and call
`conn.execute(sql, params)` / `conn.executemany(sql, rows)` with SQL in one portable form:
`?` placeholders, `INSERT ... ON CONFLICT ... DO NOTHING | DO UPDATE`, `RETURNING`, CASE
instead of the two-argument MAX, no engine-specific functions. What cannot be said
portably is a function here, picked by `conn.dialect` (the stream positions that events and
EDUs share: `next_positions`, `max_position`).

- sqlite: the connection is a `sqlite3.Connection` (subclass `SqliteConnection`, which adds
  only `dialect`), so the portable SQL is executed as written, with sqlite3's own
  statement cache: nothing runs between the store function and the driver.
- PostgreSQL: `PgConnection` (a psycopg 3 connection) turns each distinct SQL string into
  psycopg's form once (SQLAlchemy's `text()` compiled for the psycopg dialect with
  positional `%s` parameters, literal `%` escaped) and caches it; psycopg prepares
  statements it sees repeatedly on the server. A value PostgreSQL refuses as data (an
  integer beyond 64 bits, a NUL in text) raises `DataOutOfRange`, a ValueError, where
  sqlite3 raises OverflowError: both are the caller's bad input.

SQLAlchemy builds nothing in the hot path: statements are compiled once per process and
engine, and executed on the driver's connection (the profile that once moved the service
off SQLAlchemy found half the database thread in statement building and result handling).
"""
from __future__ import annotations

import re
import sqlite3

_PLAIN = re.compile(r"^[^:%'\"]*$")       # no literals, no colons, no percent signs


def read_only(fn):
    """Mark a store function that never writes: on PostgreSQL it may run on a reader
    connection of the pool, concurrently with the writer (see db.py)."""
    fn.read_only = True
    return fn


class SqliteConnection(sqlite3.Connection):
    dialect = "sqlite"


def to_psycopg(sql: str) -> str:
    """Portable `?` SQL in psycopg's paramstyle, as SQLAlchemy compiles it (see module doc)."""
    if _PLAIN.match(sql):       # nothing for the compiler to escape: the same result, cheaply
        return sql.replace("?", "%s")
    from sqlalchemy import text
    parts = sql.split("?")
    marked = parts[0] + "".join(f":_p{i}{p}" for i, p in enumerate(parts[1:]))
    return text(marked).compile(dialect=_psycopg_dialect()).string


_DIALECT = []


def _psycopg_dialect():
    if not _DIALECT:
        from sqlalchemy.dialects.postgresql import psycopg
        _DIALECT.append(psycopg.dialect(paramstyle="format"))
    return _DIALECT[0]


class DataOutOfRange(ValueError):
    """A value the database refuses as data (PostgreSQL's data exceptions, class 22)."""


def pg_connection_class():
    """`PgConnection`, built on first use (psycopg is imported only for PostgreSQL)."""
    if _PG:
        return _PG[0]
    import psycopg

    class PgConnection(psycopg.Connection):
        dialect = "postgresql"
        _cache: dict = {}

        def execute(self, query, params=None, **kw):
            sql = self._cache.get(query)
            if sql is None:
                sql = self._cache[query] = to_psycopg(query)
            try:
                return super().execute(sql, () if params is None else params, **kw)
            except psycopg.DataError as exc:
                raise DataOutOfRange(str(exc)) from exc

        def executemany(self, query, rows, returning: bool = False):
            sql = self._cache.get(query)
            if sql is None:
                sql = self._cache[query] = to_psycopg(query)
            cur = self.cursor()
            try:
                cur.executemany(sql, rows, returning=returning)
            except psycopg.DataError as exc:
                raise DataOutOfRange(str(exc)) from exc
            return cur

    _PG.append(PgConnection)
    return PgConnection


_PG: list = []


def insert_returning(conn, query: str, rows: list) -> list:
    """Run an INSERT ... RETURNING once per row, in order; each row's first result row (None
    where it inserted nothing, ON CONFLICT DO NOTHING). PostgreSQL: one round trip for all
    (psycopg's pipelined executemany); sqlite: a loop, each step in-process anyway."""
    if conn.dialect == "postgresql" and len(rows) > 1:
        cur = conn.executemany(query, rows, returning=True)
        out = [cur.fetchone()]
        while cur.nextset():
            out.append(cur.fetchone())
        return out
    return [conn.execute(query, r).fetchone() for r in rows]


# ---------------------------------------------------------------- stream positions
# Events (the `events` table's autoincrement key) and EDUs (store_edus) draw positions from
# one sequence: sqlite's sqlite_sequence row of `events`, PostgreSQL's sequence of
# events.stream. Both are only drawn by the writer (one at a time, see db.py), so positions
# are handed out, and committed, in increasing order.

def next_positions(conn, n: int) -> int:
    """Reserve n consecutive stream positions; returns the first."""
    if conn.dialect == "postgresql":
        last = conn.execute("SELECT setval(pg_get_serial_sequence('events', 'stream'),"
                            " GREATEST(nextval(pg_get_serial_sequence('events', 'stream')),"
                            " (SELECT COALESCE(MAX(stream), 0) + 1 FROM events)) + ? - 1)",
                            (n,)).fetchone()[0]
        return last - n + 1
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    top = conn.execute("SELECT COALESCE(MAX(stream), 0) FROM events").fetchone()[0]
    current = max(row[0] if row else 0, top)
    if row is None:
        conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?)", (current + n,))
    else:
        conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'events'", (current + n,))
    return current + 1


def max_position(conn) -> int:
    """The highest position handed out, to an event or an EDU."""
    if conn.dialect == "postgresql":
        return conn.execute(
            "SELECT GREATEST(COALESCE(pg_sequence_last_value(pg_get_serial_sequence("
            "'events', 'stream')::regclass), 0), (SELECT COALESCE(MAX(stream), 0) FROM events))"
        ).fetchone()[0]
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    top = conn.execute("SELECT COALESCE(MAX(stream), 0) FROM events").fetchone()[0]
    return max(row[0] if row else 0, top)


def set_min_position(conn, position: int) -> None:
    """Make every later position exceed `position` (copy-db: the source's high-water mark)."""
    if max_position(conn) >= position:
        return
    if conn.dialect == "postgresql":
        conn.execute("SELECT setval(pg_get_serial_sequence('events', 'stream'), ?)", (position,))
    elif conn.execute("SELECT 1 FROM sqlite_sequence WHERE name = 'events'").fetchone():
        conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'events'", (position,))
    else:
        conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?)", (position,))


def after_bulk_copy(conn, head: int) -> None:
    """After rows were copied in with their keys (fedstack copy-db): every autoincrement
    key continues after the copied ones, and stream positions after `head`, the source's
    high-water mark (EDU positions may lie beyond the last event's). sqlite advances
    sqlite_sequence on such inserts by itself; PostgreSQL's sequences must be set."""
    if conn.dialect == "postgresql":
        from services.transaction import schema
        for table in schema.metadata.sorted_tables:
            for col in table.primary_key.columns:
                if col.autoincrement is True:
                    conn.execute(f"SELECT setval(pg_get_serial_sequence('{table.name}', '{col.name}'),"
                                 f" COALESCE((SELECT MAX({col.name}) FROM {table.name}), 0) + 1, false)")
    set_min_position(conn, head)
