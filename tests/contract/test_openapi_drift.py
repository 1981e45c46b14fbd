"""Each app still serves exactly the OpenAPI document checked in at `openapi/<service>.json`
(what a replacement implementation of the layer must serve)."""
from __future__ import annotations

import json

import pytest

from tools.export_openapi import SERVICES, document, path_of


def _differences(old: dict, new: dict) -> list[str]:
    """A short account of what changed: operations and component schemas."""
    out = []

    def ops(doc):
        return {f"{m.upper()} {p}": op for p, item in doc.get("paths", {}).items()
                for m, op in item.items()}
    before, after = ops(old), ops(new)
    out += [f"  + {k}" for k in sorted(after.keys() - before.keys())]
    out += [f"  - {k}" for k in sorted(before.keys() - after.keys())]
    out += [f"  ~ {k}" for k in sorted(before.keys() & after.keys()) if before[k] != after[k]]
    sb = old.get("components", {}).get("schemas", {})
    sa = new.get("components", {}).get("schemas", {})
    out += [f"  ~ schema {k}" for k in sorted(sa.keys() | sb.keys()) if sa.get(k) != sb.get(k)]
    rest = {k for k in old.keys() | new.keys() if k not in ("paths", "components") and old.get(k) != new.get(k)}
    out += [f"  ~ {k}" for k in sorted(rest)]
    return out


@pytest.mark.parametrize("service", SERVICES)
def test_app_matches_checked_in_openapi(service):
    path = path_of(service)
    fix = f"run `python -m tools.export_openapi` and commit openapi/{service}.json"
    assert path.exists(), f"openapi/{service}.json is missing: {fix}"
    checked_in = json.loads(path.read_text())
    current = document(service)
    if current != checked_in:
        changes = "\n".join(_differences(checked_in, current)) or "  (ordering or formatting)"
        pytest.fail(f"services/{service} no longer matches openapi/{service}.json; if the change "
                    f"is intended (routes change only by adding), {fix}.\nChanged:\n{changes}",
                    pytrace=False)


def test_internal_routes_are_documented_under_the_internal_prefix():
    """Every service documents its internal routes under /_internal/<service>/v1."""
    for service in SERVICES:
        doc = json.loads(path_of(service).read_text())
        internal = [p for p in doc["paths"] if p.startswith("/_internal/")]
        if service != "messaging":
            assert internal, service
        assert all(p.startswith(f"/_internal/{service}/v1/") for p in internal), (service, internal)
