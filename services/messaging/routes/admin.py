"""The operator's routes on the messaging API: the homeserver's combined `/metrics`, and
admin views and actions (destinations, retry now, rooms, inbound origins, subscriptions).

Invariants:
- These routes are behind the API token like every domain API route (the app's token
  middleware refuses a request without it before any route runs); `require_operator` is
  the one dependency every route here takes, the place for any finer check.
- `/metrics` is one valid Prometheus exposition: this service's own series and those of
  the transport, transaction and pdu services, fetched from their internal `/metrics` at
  each scrape (`shared.metrics.merge_expositions`); a service that does not answer is left
  out, and `fedstack_service_up{service}` says so. `?scope=service`: its own series only.
- Inbound origin rates are computed from the counters over the last minute of calls
  (`OriginRates`); the first call has no rate yet (null).
"""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from prometheus_client.parser import text_string_to_metric_families
from starlette.responses import Response

from shared.contracts import admin as c
from shared.errors import json_response
from shared.metrics import CONTENT_TYPE, merge_expositions
from shared.settings import SUPERVISOR_STATE_FILE

RATE_WINDOW_S = 60.0
SERVICES = ("transport", "transaction", "pdu")


async def require_operator(request: Request) -> None:
    """Who may use these routes: whoever the app's API-token check let through (it runs
    first, for every route but the open ones); kept as a dependency so a finer check has
    one place to go."""


router = APIRouter(tags=["admin"], dependencies=[Depends(require_operator)])


def _svc(request: Request):
    return request.app.state.svc


async def combined_metrics(svc) -> str:
    """This service's exposition and the three others', merged (see the invariants)."""
    clients = {"transport": svc.transport, "transaction": svc.tx, "pdu": svc.pdu}

    async def fetch(name):
        try:
            status, body = await asyncio.wait_for(clients[name].raw("GET", c.METRICS), 5.0)
            return body if status == 200 else None
        except Exception:  # noqa: BLE001 - that service is down: left out, up=0
            return None
    bodies = await asyncio.gather(*(fetch(n) for n in SERVICES))
    up = svc.metrics.gauge("fedstack_service_up", "Whether a service answered this scrape "
                           "of the combined view", ["service"])
    for name, body in zip(SERVICES, bodies):
        up.labels(name).set(1 if body is not None else 0)
    up.labels("messaging").set(1)
    _supervisor_restarts(svc)
    own = await svc.metrics.render()
    return merge_expositions([own] + [b for b in bodies if b is not None])


def _supervisor_restarts(svc) -> None:
    """`fedstack up`'s restarts per process, from its state file (absent: not supervised)."""
    try:
        state = json.loads((Path(svc.data_dir) / SUPERVISOR_STATE_FILE).read_text())
    except (OSError, ValueError):
        return
    gauge = svc.metrics.gauge("fedstack_process_restarts", "Times fedstack up restarted a "
                              "process that exited (since fedstack up started)", ["instance"])
    for instance, info in state.items():
        if isinstance(info, dict) and isinstance(info.get("restarts"), int):
            gauge.labels(str(instance)).set(info["restarts"])


def samples(text: str, *names: str) -> list[tuple[str, dict, float]]:
    """(sample name, labels, value) of the families `names` in an exposition."""
    wanted = set(names)
    out = []
    for fam in text_string_to_metric_families(text):
        if fam.name in wanted or fam.name + "_total" in wanted:
            out += [(s.name, s.labels, s.value) for s in fam.samples]
    return out


class OriginRates:
    """Per-origin totals remembered over the last RATE_WINDOW_S, to give rates per second."""

    def __init__(self):
        self.history: list[tuple[float, dict]] = []

    def rates(self, now: float, totals: dict[str, float]) -> dict[str, float | None]:
        self.history = [(t, v) for t, v in self.history if now - t <= RATE_WINDOW_S]
        out: dict[str, float | None] = {k: None for k in totals}
        if self.history:
            t0, old = self.history[0]
            if now - t0 > 0:
                out = {k: max(0.0, v - old.get(k, 0.0)) / (now - t0) for k, v in totals.items()}
        self.history.append((now, totals))
        return out


@router.get(c.METRICS, include_in_schema=False)
async def metrics(request: Request, scope: str = "homeserver"):
    """The combined view; `?scope=service`: this service's own series only (for a
    Prometheus that scrapes each service itself, as the compose `monitoring` profile's)."""
    if scope == "service":
        return Response(await _svc(request).metrics.render(), media_type=CONTENT_TYPE)
    return Response(await combined_metrics(_svc(request)), media_type=CONTENT_TYPE)


@router.get(c.API_DESTINATIONS)
async def destinations(request: Request):
    """Every destination: queue depth, oldest item age, last success, failures, retry at."""
    return json_response(await _svc(request).tx.call("GET", c.DESTINATIONS))


@router.post(c.API_DESTINATION_RETRY)
async def retry(destination: str, request: Request):
    """Drop the destination's backoff and send its queue (or an empty transaction) now."""
    from urllib.parse import quote
    await _svc(request).tx.call("POST", c.DESTINATION_RETRY.format(destination=quote(destination, safe="")))
    return {}


@router.get(c.API_ROOMS)
async def rooms(request: Request):
    """Every room: version, forward extremities, joined members per server."""
    return json_response(await _svc(request).pdu.call("GET", c.ROOMS))


@router.get(c.API_SUBSCRIPTIONS)
async def subscriptions(request: Request):
    """Every subscription with its position and its lag behind the stream's head."""
    svc = _svc(request)
    view = await svc.tx.call("GET", c.SUBSCRIPTIONS)
    for s in view["subscriptions"]:
        s["last_delivered_ts"] = svc.delivery.last_delivered.get(s["subscription_id"])
    return json_response(view)


@router.get(c.API_ORIGINS)
async def origins(request: Request):
    """Every server that sent us federation traffic: requests, transactions and PDUs by
    outcome, refusals (unauthorized, rate-limited, refused transactions, rejected or
    dropped PDUs), and requests and PDUs per second over the last minute."""
    svc = _svc(request)
    text = await combined_metrics(svc)
    table: dict[str, dict] = {}

    def row(origin):
        return table.setdefault(origin, {"origin": origin, "requests": {}, "transactions": {},
                                         "pdus": {}})
    kinds = {"fedstack_federation_requests_total": "requests",
             "fedstack_inbound_transactions_total": "transactions",
             "fedstack_inbound_pdus_total": "pdus"}
    for name, labels, value in samples(text, *kinds):
        kind = kinds.get(name)
        if kind is None or "origin" not in labels:
            continue
        r = row(labels["origin"] or "(unauthenticated)")[kind]
        r[labels["outcome"]] = r.get(labels["outcome"], 0) + int(value)
    now = time.monotonic()
    rates = request.app.state.origin_rates
    req_rates = rates.rates(now, {o: float(sum(r["requests"].values()) + sum(r["transactions"].values()))
                                  for o, r in table.items()})
    for o, r in table.items():
        r["refusals"] = (r["requests"].get("unauthorized", 0) + r["requests"].get("rate_limited", 0)
                         + r["transactions"].get("refused", 0) + r["pdus"].get("rejected", 0)
                         + r["pdus"].get("dropped", 0) + r["pdus"].get("unstaged", 0))
        r["requests_per_s"] = req_rates.get(o)
    return json_response({"origins": sorted(table.values(), key=lambda r: r["origin"])})


@router.get(c.API_STATUS)
async def status(request: Request):
    """One look at the homeserver: which services answer, destinations (and how many are
    backing off), queued items, rooms, subscriptions and their largest lag."""
    svc = _svc(request)
    health = {}
    for name, client in (("transport", svc.transport), ("transaction", svc.tx), ("pdu", svc.pdu)):
        try:
            st, _ = await asyncio.wait_for(client.raw("GET", "/health"), 5.0)
            health[name] = "up" if st == 200 else f"status {st}"
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            health[name] = f"down ({type(exc).__name__})"
    health["messaging"] = "up"
    out = {"server_name": request.app.state.settings.server_name, "services": health}
    try:
        dests = (await svc.tx.call("GET", c.DESTINATIONS))["destinations"]
        subs = await svc.tx.call("GET", c.SUBSCRIPTIONS)
        now = time.time()
        out.update(destinations=len(dests),
                   backing_off=sum(1 for d in dests if (d["retry_at"] or 0) > now),
                   queued=sum(d["queued"] for d in dests),
                   subscriptions=len(subs["subscriptions"]),
                   max_subscription_lag=max((s["lag"] for s in subs["subscriptions"]), default=0),
                   stream_head=subs["head"])
        out["rooms"] = len(await svc.tx.room_ids())
    except Exception as exc:  # noqa: BLE001 - the services' own state is shown above
        out["error"] = f"{type(exc).__name__}: {exc}"
    return json_response(out)
