"""Which servers are in a room: the room state the other layers ask about (the inbound EDU
checks, where ephemeral traffic goes), answered from the current state.

Invariant: `servers` are the servers with at least one member whose membership in the
room's current state is `join`; a room we do not know (or have no state of) is 404.
"""
from __future__ import annotations

from fastapi import APIRouter, Request

from services.pdu.rooms import joined_servers
from shared.contracts import pdu as c
from shared.errors import MatrixError, json_response

router = APIRouter(tags=["rooms"])


@router.get(c.ROOM_SERVERS, response_model=c.ServersResponse)
async def room_servers(room_id: str, request: Request):
    storage = request.app.state.svc.storage
    room = await storage.room(room_id)
    if room is None or room["current_state_group"] is None:
        raise MatrixError(404, "M_NOT_FOUND", "unknown room")
    state = await storage.state_map(room["current_state_group"])
    return json_response({"servers": sorted(await joined_servers(storage, state))})
