"""Fixtures for interop tests against a real Synapse (tests/interop/synapse_peer.py).

Sections:
  1. Synapse peer  -- one Synapse for the whole session.
  2. fedstack      -- one fedstack homeserver (sqlite) and the callback receiver.
  3. Engines       -- `fedstack_on_engine`: that homeserver on each --db-engines engine.
  (others add their own sections below; keep each small.)
"""

from __future__ import annotations

import atexit
from collections.abc import Iterator

import pytest

from tests.interop.synapse_peer import SynapsePeer


def _stopped_at_end(peer):
    """Yield `peer` (a fixture's value), then stop it by its PID; also at interpreter exit,
    should the session die before the fixture is torn down."""
    atexit.register(peer.stop)
    try:
        yield peer
    finally:
        peer.stop()
        atexit.unregister(peer.stop)


# ---------------------------------------------------------------------------
# 1. Synapse peer
# ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SynapsePeer]:
    """One Synapse (default room version 12) for the whole test session.

    Stopped by PID at session end, and via atexit should the session die early.
    Its log: `synapse.log_path`; `synapse.grep_log(...)`.
    """
    peer = SynapsePeer.start(tmp_path_factory.mktemp("synapse"))
    yield from _stopped_at_end(peer)


# ---------------------------------------------------------------------------
# 2. fedstack homeserver + callbacks, federating with the Synapse peer
# ---------------------------------------------------------------------------

from tests.interop.fedstack_peer import FedstackPeer  # noqa: E402
from tests.processes import CallbackServer, start_homeserver  # noqa: E402


@pytest.fixture(scope="session")
def callbacks() -> Iterator[CallbackServer]:
    """One callback receiver for every subscription of the session."""
    cb = CallbackServer().start()
    try:
        yield cb
    finally:
        cb.stop()


@pytest.fixture(scope="session")
def fedstack(tmp_path_factory: pytest.TempPathFactory, synapse: SynapsePeer,
             callbacks: CallbackServer) -> Iterator[FedstackPeer]:
    """One fedstack homeserver (four processes, HTTPS federation on loopback) for the
    whole session, next to the `synapse` peer. Tests that stop it must start it again."""
    peer = FedstackPeer.start(tmp_path_factory.mktemp("fedstack"), callbacks)
    yield from _stopped_at_end(peer)


# ---------------------------------------------------------------------------
# 3. The same fedstack on each database engine
# ---------------------------------------------------------------------------
# `fedstack_on_engine`: a parameter over --db-engines. sqlite is the session's `fedstack`
# above; postgresql is a second homeserver whose transaction service keeps its database on
# the run's PostgreSQL server, started once for the session. The core interop tests (joins
# and messages both ways) take it, so they run on both engines without a copy.

@pytest.fixture(scope="session")
def fedstack_on_engine(db_engine: str, request: pytest.FixtureRequest,
                       tmp_path_factory: pytest.TempPathFactory,
                       callbacks: CallbackServer) -> Iterator[FedstackPeer]:
    if db_engine == "sqlite":
        yield request.getfixturevalue("fedstack")
        return
    url = request.getfixturevalue("postgres").new_database()
    peer = FedstackPeer(start_homeserver(tmp_path_factory.mktemp("fedstack-pg"),
                                         database_url=url), callbacks)
    assert peer.hs.settings.database_url.startswith("postgresql")
    yield from _stopped_at_end(peer)
