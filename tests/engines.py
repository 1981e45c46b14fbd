"""Whole homeservers on each database engine, for the directories whose conftest takes this
(tests/e2e, tests/crash): every test there runs on each engine of --db-engines (a test
parameter): the homeservers it starts (tests.processes.start_homeserver, tests.harness.InProcessHomeserver)
keep their transaction service's database in their data directory (sqlite) or in a fresh
database on the run's PostgreSQL server. Module-scoped fixtures that start homeservers ask
for `database_for` themselves (they are set up before the autouse fixture below). A module
that starts no homeserver through those two (only a transport, or `fedstack up` in a
subprocess with its own settings) runs once, on the first engine: a second run would
test the same thing."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests import harness, processes


_STARTERS = ("InProcessHomeserver", "start_homeserver")


def _is_fixture(v) -> bool:
    return type(v).__name__ == "FixtureFunctionDefinition" or hasattr(v, "_pytestfixturefunction")


def _starts_homeservers(module) -> bool:
    """The module, or one it takes fixtures from, imports a homeserver starter."""
    modules = {module} | {sys.modules.get(getattr(v, "__module__", None) or "")
                          for v in vars(module).values() if _is_fixture(v)}
    return any(m is not None and any(n in vars(m) for n in _STARTERS) for m in modules)


def run_once_unless_homeservers(config, items, directory: Path) -> None:
    """pytest_collection_modifyitems of `directory`'s conftest: its modules that start no
    homeserver keep only their first-engine items (see the module doc)."""
    first = config.getoption("--db-engines").split(",")[0].strip()
    keep, drop = [], []
    for item in items:
        spec = getattr(item, "callspec", None)
        engine = spec.params.get("db_engine") if spec is not None else None
        here = Path(str(item.fspath)).parent == directory
        if here and engine not in (None, first) and not _starts_homeservers(item.module):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


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
