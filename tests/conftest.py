"""Fixtures and options shared by every test directory.

Sections:
  1. Replaceable layers -- `--base-url`: run a service's contract tests against any
     implementation at a URL instead of the in-process app.
  (others add their own sections below; keep each small.)
"""
from __future__ import annotations

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
