"""`fedstack admin ...`: the operator's commands over the messaging API's admin routes.

    fedstack admin status | destinations | retry NAME | rooms | origins | subscriptions
    fedstack admin rotate-token --data-dir DIR

The API is found by `--api URL` or FEDSTACK_API_URL (default http://127.0.0.1:8008), its
token by `--token`, FEDSTACK_API_TOKEN, or the data directory's `api_token` file
(`--data-dir`, FEDSTACK_DATA_DIR). Tables are printed with rich; `--json` prints the API's
answer as it came, for scripts. An API error is printed as its errcode and message, with
exit status 1; an unreachable API likewise (status 2).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import quote

from shared.contracts import admin as c

DEFAULT_API = "http://127.0.0.1:8008"
COMMANDS = ("status", "destinations", "retry", "rooms", "origins", "subscriptions", "rotate-token")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=COMMANDS)
    p.add_argument("name", nargs="?", help="the destination (retry)")
    p.add_argument("--api", default=None, help=f"messaging API URL (FEDSTACK_API_URL, {DEFAULT_API})")
    p.add_argument("--token", default=None, help="API token (FEDSTACK_API_TOKEN, else the data dir's)")
    p.add_argument("--data-dir", default=None, help="data directory holding api_token (FEDSTACK_DATA_DIR)")
    p.add_argument("--json", action="store_true", help="print the API's JSON answer")


def _token(args) -> str:
    if args.token:
        return args.token
    if os.environ.get("FEDSTACK_API_TOKEN"):
        return os.environ["FEDSTACK_API_TOKEN"]
    p = Path(args.data_dir or os.environ.get("FEDSTACK_DATA_DIR") or "./data") / "api_token"
    return p.read_text().strip() if p.exists() else ""


class ApiError(Exception):
    def __init__(self, status: int, body):
        body = body if isinstance(body, dict) else {}
        super().__init__(f"{status} {body.get('errcode', 'M_UNKNOWN')}: {body.get('error', '')}")


async def call(args, method: str, path: str, *, transport=None):
    """One request to the admin API; the parsed answer, or ApiError."""
    import httpx
    base = (args.api or os.environ.get("FEDSTACK_API_URL") or DEFAULT_API).rstrip("/")
    token = _token(args)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=base, transport=transport, timeout=30.0) as client:
        r = await client.request(method, path, headers=headers)
    try:
        body = r.json()
    except ValueError:
        body = None
    if r.status_code >= 300:
        raise ApiError(r.status_code, body)
    return body


def _ago(ts, now) -> str:
    if not ts:
        return "never"
    return f"{_duration(now - ts)} ago"


def _duration(s) -> str:
    if s is None:
        return "-"
    s = max(0.0, float(s))
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def _retry_in(retry_at, now) -> str:
    if not retry_at or retry_at <= now:
        return "now"
    return f"in {_duration(retry_at - now)}"


def render(what: str, data, console) -> None:
    """Print one admin answer as rich tables."""
    from rich.table import Table
    now = time.time()
    if what == "status":
        t = Table(title=f"fedstack {data.get('server_name', '')}", show_header=False)
        for k, v in data.get("services", {}).items():
            t.add_row(f"service {k}", str(v))
        for k in ("destinations", "backing_off", "queued", "rooms", "subscriptions",
                  "max_subscription_lag", "stream_head", "error"):
            if k in data:
                t.add_row(k.replace("_", " "), str(data[k]))
        console.print(t)
    elif what == "destinations":
        t = Table(title="destinations")
        for col in ("destination", "queued", "oldest item", "last success", "failures",
                    "retry", "in flight"):
            t.add_column(col, justify="left" if col == "destination" else "right")
        for d in data["destinations"]:
            t.add_row(d["destination"], str(d["queued"]), _duration(d.get("oldest_age_s")),
                      _ago(d.get("last_success_ts"), now), str(d["failures"]),
                      _retry_in(d.get("retry_at"), now), str(d.get("in_flight", 0)))
        console.print(t)
    elif what == "rooms":
        t = Table(title="rooms")
        for col in ("room", "version", "extremities", "members per server"):
            t.add_column(col)
        for r in data["rooms"]:
            members = ", ".join(f"{s} {n}" for s, n in r["members"].items())
            t.add_row(r["room_id"], r["room_version"], str(len(r["extremities"])), members)
        console.print(t)
    elif what == "origins":
        t = Table(title="inbound origins")
        for col in ("origin", "requests", "transactions", "pdus", "refusals", "req/s (1 min)"):
            t.add_column(col)
        for o in data["origins"]:
            fmt = lambda d: ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "-"  # noqa: E731
            rate = o.get("requests_per_s")
            t.add_row(o["origin"], fmt(o["requests"]), fmt(o["transactions"]), fmt(o["pdus"]),
                      str(o["refusals"]), "-" if rate is None else f"{rate:.2f}")
        console.print(t)
    elif what == "subscriptions":
        t = Table(title=f"subscriptions (stream head {data['head']})")
        for col in ("subscription", "url", "room", "position", "lag", "last delivery"):
            t.add_column(col)
        for s in data["subscriptions"]:
            t.add_row(s["subscription_id"], s["url"], s.get("room_id") or "(all)",
                      str(s["position"]), str(s["lag"]), _ago(s.get("last_delivered_ts"), now))
        console.print(t)
    else:
        console.print(data)


PATHS = {"status": c.API_STATUS, "destinations": c.API_DESTINATIONS, "rooms": c.API_ROOMS,
         "origins": c.API_ORIGINS, "subscriptions": c.API_SUBSCRIPTIONS}


async def run_async(args, *, transport=None, out=None) -> int:
    from rich.console import Console
    console = Console(file=out or sys.stdout, width=160)
    try:
        if args.what == "rotate-token":
            from shared.settings import ensure_secret_file
            data_dir = args.data_dir or os.environ.get("FEDSTACK_DATA_DIR")
            if not data_dir:
                console.print("rotate-token needs --data-dir (or FEDSTACK_DATA_DIR)")
                return 1
            token = ensure_secret_file(data_dir, "api_token", replace_it=True)
            if args.json:
                console.print_json(json.dumps({"token": token}))
            else:
                console.print(token, markup=False, highlight=False)
            return 0
        if args.what == "retry":
            if not args.name:
                console.print("retry needs the destination's name")
                return 1
            data = await call(args, "POST", c.API_DESTINATION_RETRY.format(
                destination=quote(args.name, safe="")), transport=transport)
            if not args.json:
                console.print(f"{args.name}: backoff cleared, sending now")
                return 0
        else:
            data = await call(args, "GET", PATHS[args.what], transport=transport)
    except ApiError as exc:
        console.print(f"error: {exc}", markup=False)
        if "M_MISSING_TOKEN" in str(exc):
            console.print("give the API token: --token, FEDSTACK_API_TOKEN, or --data-dir "
                          "(its api_token file)", markup=False)
        return 1
    except OSError as exc:
        console.print(f"cannot reach the API: {exc}", markup=False)
        return 2
    except Exception as exc:  # noqa: BLE001 - httpx's connection errors
        if type(exc).__module__.startswith("httpx"):
            console.print(f"cannot reach the API: {type(exc).__name__}: {exc}", markup=False)
            return 2
        raise
    if args.json:
        (out or sys.stdout).write(json.dumps(data, indent=2) + "\n")
    else:
        render(args.what, data, console)
    return 0


def run(args) -> int:
    return asyncio.run(run_async(args))
