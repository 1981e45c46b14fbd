"""Received EDUs: what the inbound checks accepted and dropped (observability)."""
from __future__ import annotations

from fastapi import APIRouter, Request

from shared.contracts import transaction as c

router = APIRouter(tags=["inbound"])


@router.get(c.EDU_STATS, response_model=c.EduStats)
async def edu_stats(request: Request):
    """EDUs stored since start, and those dropped by reason (each also logged)."""
    return request.app.state.svc.edu_checker.stats()
