"""A real PostgreSQL server for tests: Debian's binaries, a cluster in a temporary directory,
run as an unprivileged system user on a free loopback port, stopped by its PID.

Invariants:
- One server per test run (the session fixture `postgres` in tests/conftest.py); each test
  that needs a database gets a fresh one (`new_database`: CREATE DATABASE), so tests never
  see each other's rows.
- The server runs as `fedstack-pg` (created with useradd when missing): PostgreSQL refuses
  to run as root. It listens on 127.0.0.1 only, with trust authentication (loopback, a
  throw-away cluster) and the C locale (byte order, as sqlite sorts).
- fsync is off: durability across a power cut is not what these tests check, and each
  CREATE DATABASE would otherwise cost a flush of the template's files.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

USER = "fedstack-pg"


def pg_bin() -> Path:
    """The newest /usr/lib/postgresql/*/bin, installing Debian's `postgresql` if absent."""
    def found():
        dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
        return Path(dirs[-1]) if dirs and os.path.exists(dirs[-1] + "/initdb") else None
    if found() is None:
        subprocess.run(["apt-get", "update", "-qq"], check=False, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postgresql"],
                       check=True, timeout=900, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    path = found()
    assert path, "PostgreSQL could not be installed"
    return path


def _user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        USER], check=True)
        return pwd.getpwnam(USER)


class PostgresServer:
    def __init__(self):
        self.dir: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The server's `postgres` database (for administration)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self, fsync: bool = False) -> "PostgresServer":
        """`fsync`: on for measurements (the bench), off for tests (see the invariants)."""
        from fedstack.cli import free_port
        bin_dir, user = pg_bin(), _user()
        self.dir = Path(tempfile.mkdtemp(prefix="fedstack-pg-", dir="/dev/shm"
                                         if os.access("/dev/shm", os.W_OK) else None))
        os.chown(self.dir, user.pw_uid, user.pw_gid)
        data = self.dir / "data"
        as_user = dict(user=user.pw_uid, group=user.pw_gid, extra_groups=[],
                       cwd=str(self.dir))
        subprocess.run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                        "-E", "UTF8", "--locale=C", "--no-sync"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **as_user)
        self.port = free_port()
        log = open(self.dir / "server.log", "ab")
        self.proc = subprocess.Popen(
            [str(bin_dir / "postgres"), "-D", str(data), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}",
             "-c", f"fsync={'on' if fsync else 'off'}",
             "-c", f"full_page_writes={'on' if fsync else 'off'}", "-c", "max_connections=300",
             "-c", "shared_buffers=64MB"],
            stdout=log, stderr=subprocess.STDOUT, **as_user)
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 30.0) -> None:
        import psycopg
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {(self.dir / 'server.log').read_text()[-2000:]}")
            try:
                psycopg.connect(self._dsn("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _dsn(self, dbname: str) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def new_database(self) -> str:
        """A fresh, empty database; its SQLAlchemy URL."""
        return create_database(self.url)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)     # "fast" shutdown: disconnect clients
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


def create_database(server_url: str) -> str:
    """CREATE DATABASE on the server of `server_url` (a database URL to connect to);
    returns the new database's URL."""
    import psycopg
    base, _, _ = server_url.rpartition("/")
    name = "t_" + uuid.uuid4().hex[:16]
    with psycopg.connect(base.replace("postgresql+psycopg://", "postgresql://") + "/postgres",
                         autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{base}/{name}"
