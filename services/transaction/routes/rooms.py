"""The rooms we hold: the list the pdu service walks for "every server sharing a room
with a user" (presence, device lists)."""
from __future__ import annotations

from fastapi import APIRouter, Request

from services.transaction import store_events as se
from shared.contracts import transaction as c
from shared.errors import json_response

router = APIRouter(tags=["rooms"])


@router.get(c.ROOMS, response_model=c.RoomList)
async def room_ids(request: Request):
    """Every room with a current state (joined once, whatever the membership now)."""
    return json_response({"rooms": await request.app.state.svc.db.run(se.room_ids)})
