"""Fixtures for interop tests against a real Synapse (tests/interop/synapse_peer.py).

Sections:
  1. Synapse peer  -- one Synapse for the whole session.
  (others add their own sections below; keep each small.)
"""

from __future__ import annotations

import atexit
from collections.abc import Iterator

import pytest

from tests.interop.synapse_peer import SynapsePeer


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
    atexit.register(peer.stop)
    try:
        yield peer
    finally:
        peer.stop()
        atexit.unregister(peer.stop)
