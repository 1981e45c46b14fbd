"""Write each service's OpenAPI document to `openapi/<service>.json`.

    python -m tools.export_openapi           # (re)write the four documents
    python -m tools.export_openapi --check   # exit 1, listing the stale ones, if any differ

The documents are checked in so that a replacement implementation of a layer knows exactly
what to serve (architecture.md); `tests/contract/test_openapi_drift.py` fails when an app
no longer matches its document. The apps are built with throwaway settings and their
lifespans are not run: the routes and shapes do not depend on configuration.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from shared.settings import Settings

SERVICES = ("transport", "transaction", "pdu", "messaging")
OUT_DIR = Path(__file__).resolve().parent.parent / "openapi"


def path_of(service: str) -> Path:
    return OUT_DIR / f"{service}.json"


def document(service: str) -> dict:
    """The service's current OpenAPI document, as plain JSON values."""
    module = importlib.import_module(f"services.{service}.app")
    app = module.create_app(Settings(server_name="openapi.invalid", internal_secret="openapi"))
    return json.loads(json.dumps(app.openapi()))


def render(doc: dict) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def stale(service: str) -> bool:
    p = path_of(service)
    return not p.exists() or json.loads(p.read_text()) != document(service)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale documents")
    parser.add_argument("services", nargs="*", metavar="SERVICE",
                        help=f"some of {', '.join(SERVICES)} (default: all)")
    args = parser.parse_args(argv)
    unknown = set(args.services) - set(SERVICES)
    if unknown:
        parser.error(f"unknown services: {', '.join(sorted(unknown))}")
    args.services = args.services or list(SERVICES)
    if args.check:
        bad = [s for s in args.services if stale(s)]
        for s in bad:
            print(f"stale: {path_of(s)}")
        return 1 if bad else 0
    OUT_DIR.mkdir(exist_ok=True)
    for s in args.services:
        text = render(document(s))
        p = path_of(s)
        changed = not p.exists() or p.read_text() != text
        p.write_text(text)
        print(f"{'wrote' if changed else 'unchanged'}: {p.relative_to(OUT_DIR.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
