"""The two database engines behind `Database` (db.py): how each connects, opens and ends a
transaction, and keeps a second transaction service off the same database.

Invariants: a connection handed to store functions executes portable SQL (see sql.py) and
has `dialect`; transactions are explicit (BEGIN ... COMMIT; the drivers start none of their
own); `errors` are the exceptions that mean the transaction itself failed.
"""
from __future__ import annotations

import fcntl
import os
import sqlite3
from pathlib import Path

from services.transaction import sql

LOCK_KEY = 0x66656473   # "feds": the advisory lock of the transaction service's database


class DatabaseInUse(RuntimeError):
    pass


def sqlite_url(path: str | Path) -> str:
    return f"sqlite:///{Path(path)}"


def psycopg_conninfo(url: str) -> str:
    """postgresql+psycopg://u@h:p/db -> the libpq URI psycopg takes."""
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest


def for_target(target: str | Path):
    """The engine of a database URL, or of a sqlite file's path."""
    target = str(target)
    if target.startswith("postgresql"):
        if not target.startswith(("postgresql+psycopg://", "postgresql://")):
            raise ValueError(f"unsupported PostgreSQL driver in {target.split('://')[0]!r}: "
                             "use postgresql+psycopg://")
        return PostgresEngine(target)
    if target.startswith("sqlite:"):
        if not target.startswith("sqlite:///") or len(target) == len("sqlite:///"):
            raise ValueError(f"a sqlite URL names a file: sqlite:///PATH, not {target!r}")
        return SqliteEngine(Path(target[len("sqlite:///"):]))
    if "://" in target:
        raise ValueError(f"unsupported database URL {target.split('://')[0]}://...")
    return SqliteEngine(Path(target))


class SqliteEngine:
    readers = 0                         # everything on the one writer thread
    errors = (sqlite3.Error,)

    def __init__(self, path: Path):
        self.path = path
        self.url = sqlite_url(path)
        self._lock_fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(str(self.path) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DatabaseInUse(f"{self.path} is already used by another transaction service")
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def connect(self):
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               factory=sql.SqliteConnection)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    def usable(self, conn):
        return conn

    @staticmethod
    def begin(conn) -> None:
        conn.execute("BEGIN IMMEDIATE")

    begin_read = begin

    @staticmethod
    def commit(conn) -> None:
        conn.execute("COMMIT")

    @staticmethod
    def rollback(conn) -> None:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass


class PostgresEngine:
    readers = 3

    def __init__(self, url: str):
        import psycopg
        self.url = url
        self.conninfo = psycopg_conninfo(url)
        self.errors = (psycopg.Error,)
        self._cls = sql.pg_connection_class()
        self._lock_conn = None

    def acquire(self) -> None:
        """A session advisory lock on a connection of its own, held until `release`."""
        import psycopg
        conn = psycopg.connect(self.conninfo, autocommit=True)
        if not conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]:
            conn.close()
            raise DatabaseInUse(f"{_safe(self.url)} is already used by another transaction service")
        self._lock_conn = conn

    def release(self) -> None:
        if self._lock_conn is not None:
            self._lock_conn.close()     # ends the session, and so its advisory lock
            self._lock_conn = None

    def connect(self):
        return self._cls.connect(self.conninfo, autocommit=True)

    def usable(self, conn):
        """`conn`, or a new connection if it was lost (the server restarted, say)."""
        if conn.closed or conn.broken:
            conn.close()
            return self.connect()
        return conn

    @staticmethod
    def begin(conn) -> None:
        conn.execute("BEGIN")

    @staticmethod
    def begin_read(conn) -> None:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    @staticmethod
    def commit(conn) -> None:
        """COMMIT, and an error where PostgreSQL would only warn or silently roll back: a
        call that ended its transaction itself, or left it failed."""
        import psycopg
        status = conn.info.transaction_status
        if status != psycopg.pq.TransactionStatus.INTRANS:
            raise psycopg.OperationalError(f"the call's transaction is {status.name} at its commit")
        conn.execute("COMMIT")

    @staticmethod
    def rollback(conn) -> None:
        import psycopg
        if conn.closed or conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            return
        try:
            conn.execute("ROLLBACK")
        except psycopg.Error:
            pass


def _safe(url: str) -> str:
    """The URL without its password."""
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    cred, host = rest.rsplit("@", 1)
    return f"{scheme}://{cred.split(':')[0]}@{host}"
