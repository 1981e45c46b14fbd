"""Every end-to-end test runs on each database engine of --db-engines (a test parameter):
the homeservers it starts (tests.processes.start_homeserver, tests.harness.InProcessHomeserver)
keep their transaction service's database in their data directory (sqlite) or in a fresh
database on the run's PostgreSQL server. Module-scoped fixtures that start homeservers ask
for `database_for` themselves (they are set up before the autouse fixture below)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests import harness, processes


@pytest.fixture(scope="session")
def database_for(new_database_url):
    """data_dir -> its database_url: a fresh one per data directory, the same one again
    for the same directory (a homeserver restarted on its data)."""
    urls: dict[str, str] = {}

    def get(data_dir) -> str:
        key = str(Path(data_dir).resolve())
        if key not in urls:
            urls[key] = new_database_url()
        return urls[key]
    return get


@pytest.fixture(autouse=True)
def _each_engine(database_for, monkeypatch):
    monkeypatch.setattr(processes, "database_for", database_for)
    monkeypatch.setattr(harness, "database_for", database_for)
