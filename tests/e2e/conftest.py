"""Every test here runs on each database engine of --db-engines: see tests/engines.py."""
from __future__ import annotations

from pathlib import Path

from tests.engines import _each_engine, database_for, run_once_unless_homeservers  # noqa: F401


def pytest_collection_modifyitems(config, items):
    run_once_unless_homeservers(config, items, Path(__file__).parent)
