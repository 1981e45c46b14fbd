"""Fixtures and options shared by every test directory.

Sections:
  1. Replaceable layers -- `--base-url`: run a service's contract tests against any
     implementation at a URL instead of the in-process app.
  3. Databases -- `--db-engines`: the engines (sqlite, postgresql) that tests asking for
     `db_engine` / `database_url` / `new_database_url` run on, each as a parameter.
  (others add their own sections below; keep each small.)
"""
from __future__ import annotations

import os

import pytest

from shared.settings import Settings


# ---------------------------------------------------------------------------
# 1. Replaceable layers
# ---------------------------------------------------------------------------

INPROCESS_ONLY = ("injects fake neighbours into the service (or restarts it); "
                  "runs only in-process, not against --base-url")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("fedstack").addoption(
        "--base-url", default=None, metavar="URL",
        help="run the selected service's contract tests against the implementation at URL "
             "(e.g. pytest tests/contract/transport --base-url https://127.0.0.1:8448). Its "
             "settings (server name, internal secret, TLS verification) are read from "
             "FEDSTACK_* variables as `fedstack serve` reads them; tests that must inject "
             "fakes are skipped.")
    parser.getgroup("fedstack").addoption(
        "--db-engines", default=os.environ.get("FEDSTACK_TEST_DB_ENGINES", "sqlite,postgresql"),
        metavar="LIST", help="database engines the transaction service's tests run on, each "
        "as a test parameter: sqlite, postgresql or both (default: $FEDSTACK_TEST_DB_ENGINES "
        "or sqlite,postgresql). postgresql starts one real server for the run (tests/postgres.py).")


@pytest.fixture(scope="session")
def base_url(request: pytest.FixtureRequest) -> str | None:
    """The URL of the implementation under test, or None for the in-process apps."""
    url = request.config.getoption("--base-url")
    return url.rstrip("/") if url else None


@pytest.fixture(scope="session")
def remote_settings(base_url) -> Settings | None:
    """With --base-url: the settings of the service under test, from FEDSTACK_* variables."""
    return Settings.from_env() if base_url else None


@pytest.fixture
def inprocess(base_url) -> None:
    """Request this (directly or through a fake) when a test builds or restarts the app
    itself; it is the only legitimate skip, and only with --base-url."""
    if base_url:
        pytest.skip(INPROCESS_ONLY)


# ---------------------------------------------------------------------------
# 2. Server discovery: a DNS server, a certificate authority, loopback addresses
# ---------------------------------------------------------------------------
# One DNS server per session (started only if a test asks for it; stopped at the end):
# fedstack is pointed at it with `resolver` (--resolver), since tests cannot take port
# 53 from the system resolver. Certificates come from `test_ca`, trusted through `ca_file`,
# so discovery tests run with TLS verification on.

@pytest.fixture(scope="session")
def dns_server():
    from tests.fakes.dns import DnsServer
    server = DnsServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory):
    from tests.fakes.ca import TestCA
    return TestCA(tmp_path_factory.mktemp("test-ca"))


@pytest.fixture(scope="session")
def loopback_net():
    from tests.fakes.sites import LoopbackNet
    return LoopbackNet()


# ---------------------------------------------------------------------------
# 3. Databases: sqlite files, and one real PostgreSQL server per run
# ---------------------------------------------------------------------------
# A test (or fixture) that asks for `db_engine`, `database_url` or `new_database_url` runs
# once per engine of --db-engines. sqlite: the default database in the data directory
# (database_url ""); postgresql: a fresh database on the session's server.

ENGINES = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "db_engine" in metafunc.fixturenames:
        if metafunc.config.getoption("--base-url"):
            # the service under test is another process: its engine is the one it was
            # started with (FEDSTACK_DATABASE_URL, as `fedstack serve` reads it), once
            url = Settings.from_env().database_url or ""
            engines = ["postgresql" if url.startswith("postgresql") else "sqlite"]
        else:
            engines = [e.strip() for e in metafunc.config.getoption("--db-engines").split(",")
                       if e.strip()]
        unknown = set(engines) - set(ENGINES)
        if unknown:
            raise pytest.UsageError(f"--db-engines: unknown {sorted(unknown)}; known {ENGINES}")
        metafunc.parametrize("db_engine", engines, indirect=True, scope="session")


@pytest.fixture(scope="session")
def postgres():
    """The run's PostgreSQL server (started on first use, stopped by PID at the end)."""
    from tests.postgres import PostgresServer
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def db_engine(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def new_database_url(db_engine, request):
    """A factory of fresh databases of this engine: each call returns a `database_url`
    setting ("" for sqlite: the data directory's own file)."""
    if db_engine == "sqlite":
        return lambda: ""
    return request.getfixturevalue("postgres").new_database


@pytest.fixture
def database_url(new_database_url) -> str:
    return new_database_url()
