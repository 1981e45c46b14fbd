"""The domain API's knocking: a local user knocks on a room (see the pdu service's
membership.knock); the room's admins see the knock as a membership event through their
subscriptions and answer it with an invite or a kick."""
from __future__ import annotations

from fastapi import APIRouter, Request

from shared.contracts import messaging as c

router = APIRouter(tags=["rooms"])


@router.post(c.KNOCK)
async def knock(room_id: str, body: c.KnockRequest, request: Request) -> dict:
    return await request.app.state.svc.pdu.knock(room_id, body.model_dump())
