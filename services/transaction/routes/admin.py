"""Operators' views of the outbound queues and subscriptions, and "retry this destination
now" (see `shared.contracts.admin`). Internal routes: behind the internal secret."""
from __future__ import annotations

from fastapi import APIRouter, Request

from services.transaction import store_stats
from shared.contracts import admin as c
from shared.errors import json_response

router = APIRouter(tags=["admin"], include_in_schema=False)   # operator tooling, not the layer contract


async def destinations_view(svc) -> list[dict]:
    """The stored queues and backoffs, with what the sender knows in memory."""
    rows = await svc.db.run(store_stats.destinations)
    for row in rows:
        live = svc.sender.state(row["destination"])
        row.update(in_flight=live["in_flight"], oldest_age_s=live["oldest_age_s"] if row["queued"] else None,
                   last_success_ts=live["last_success_ts"])
        if live["retry_at"] is not None:    # a 429's wait is kept in memory only
            row["retry_at"] = live["retry_at"]
    return rows


@router.get(c.DESTINATIONS)
async def destinations(request: Request):
    return json_response({"destinations": await destinations_view(request.app.state.svc)})


@router.post(c.DESTINATION_RETRY)
async def retry(destination: str, request: Request):
    await request.app.state.svc.sender.retry_now(destination)
    return {}


@router.get(c.SUBSCRIPTIONS)
async def subscriptions(request: Request):
    return json_response(await request.app.state.svc.db.run(store_stats.subscriptions))
