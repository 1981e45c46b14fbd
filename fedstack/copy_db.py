"""`fedstack copy-db --from URL --to URL`: move a stopped homeserver's transaction-service
database to another database (sqlite to PostgreSQL, or back), then check the copy.

Invariants:
- Neither database may be in use: both are locked as the transaction service locks them
  (a running service makes copy-db refuse, and a service cannot start during the copy).
- The source is first brought to this code's schema revision (as `fedstack migrate` would),
  the destination is created at it and must hold no rows: nothing is merged or overwritten.
- Every table of schema.py is copied with its keys, in one destination transaction (all or
  nothing); afterwards every autoincrement key and the stream position continue after the
  copied ones (sql.after_bulk_copy), so subscriptions and queues resume where they were.
- The check compares the row count of every table, and a sample of rows per table (the
  first, the last and some between, by primary key) value by value; any difference is
  reported and the exit status is 1.
"""
from __future__ import annotations

import sys

BATCH = 2000
SAMPLE = 25


def _value(column, v):
    """Values as the destination column takes them (sqlite may hold text in a BLOB column)."""
    from sqlalchemy import LargeBinary
    if v is None:
        return None
    if isinstance(column.type, LargeBinary):
        return v.encode() if isinstance(v, str) else bytes(v)
    return v


def _rows(conn, table, offset=None):
    from sqlalchemy import select
    q = select(table).order_by(*table.primary_key.columns)
    return conn.execute(q).yield_per(BATCH)


def copy(source: str, dest: str, out=sys.stdout) -> dict[str, int]:
    """Copy and check; returns the rows per table. Raises CopyError when the check fails."""
    from services.transaction import engines, migrate, schema, sql
    src_engine, dst_engine = engines.for_target(source), engines.for_target(dest)
    src_engine.acquire()
    try:
        dst_engine.acquire()
        try:
            migrate.ensure_current(source)
            migrate.ensure_current(dest)
            src, dst = migrate.sqlalchemy_engine(source), migrate.sqlalchemy_engine(dest)
            try:
                counts = _copy_tables(src, dst, schema, out)
                raw = src_engine.connect()
                try:
                    head = sql.max_position(raw)
                finally:
                    raw.close()
                raw = dst_engine.connect()
                try:
                    dst_engine.begin(raw)
                    sql.after_bulk_copy(raw, head)
                    dst_engine.commit(raw)
                finally:
                    raw.close()
                _check(src, dst, schema, counts)
            finally:
                src.dispose()
                dst.dispose()
        finally:
            dst_engine.release()
    finally:
        src_engine.release()
    return counts


class CopyError(RuntimeError):
    pass


def _copy_tables(src, dst, schema, out) -> dict[str, int]:
    from sqlalchemy import func, select
    counts = {}
    with src.connect() as s, dst.begin() as d:
        for table in schema.metadata.sorted_tables:
            if d.execute(select(func.count()).select_from(table)).scalar():
                raise CopyError(f"the destination's {table.name} is not empty: copy-db only "
                                "fills a new database")
        for table in schema.metadata.sorted_tables:
            cols = list(table.columns)
            n, batch = 0, []
            for row in _rows(s, table):
                batch.append({c.name: _value(c, v) for c, v in zip(cols, row)})
                if len(batch) >= BATCH:
                    d.execute(table.insert(), batch)
                    n += len(batch)
                    batch = []
            if batch:
                d.execute(table.insert(), batch)
                n += len(batch)
            counts[table.name] = n
            print(f"  {table.name}: {n} rows", file=out, flush=True)
    return counts


def _check(src, dst, schema, counts) -> None:
    from sqlalchemy import func, select, tuple_
    problems = []
    with src.connect() as s, dst.connect() as d:
        for table in schema.metadata.sorted_tables:
            a = s.execute(select(func.count()).select_from(table)).scalar()
            b = d.execute(select(func.count()).select_from(table)).scalar()
            if not a == b == counts[table.name]:
                problems.append(f"{table.name}: {a} rows in the source, {b} in the copy")
                continue
            pk = list(table.primary_key.columns)
            step = max(1, a // SAMPLE)
            keys = [tuple(r) for i, r in enumerate(s.execute(select(*pk).order_by(*pk)))
                    if i % step == 0 or i == a - 1]
            for key in keys:
                where = tuple_(*pk) == tuple_(*key) if len(pk) > 1 else pk[0] == key[0]
                one = s.execute(select(table).where(where)).one()
                two = d.execute(select(table).where(where)).one_or_none()
                norm = [_value(c, v) for c, v in zip(table.columns, one)]
                if two is None or norm != [_value(c, v) for c, v in zip(table.columns, two)]:
                    problems.append(f"{table.name}: row {key} differs in the copy")
    if problems:
        raise CopyError("; ".join(problems[:20]))


def main(source: str, dest: str) -> int:
    from services.transaction.engines import DatabaseInUse
    from services.transaction.migrate import DatabaseTooNew
    print(f"copying {_safe(source)} to {_safe(dest)}", flush=True)
    try:
        counts = copy(source, dest)
    except DatabaseInUse as exc:
        print(f"fedstack copy-db: {exc}: stop the homeserver first", file=sys.stderr, flush=True)
        return 1
    except (CopyError, DatabaseTooNew, ValueError) as exc:
        print(f"fedstack copy-db: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"copied and checked {sum(counts.values())} rows in {len(counts)} tables", flush=True)
    return 0


def _safe(url: str) -> str:
    from services.transaction.engines import _safe
    return _safe(url)
