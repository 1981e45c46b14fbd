"""Which servers are in a room, and which share a room with a user: the room state the
other layers ask about (the inbound EDU checks, where typing, receipts, presence and
device-list updates go), answered from the current state.

Invariants: a room's `servers` are the servers with at least one member whose membership
in the room's current state is `join` and that the room's server ACL allows (a denied
server's typing and receipts are dropped, and none of ours go to it); a room we do not know
(or have no state of) is 404.
A user's servers are the union of the servers of every room where the user is joined
(walking every room we hold: O(rooms), from cached state maps).
"""
from __future__ import annotations

from fastapi import APIRouter, Request

from services.pdu.rooms import joined_servers
from shared.contracts import pdu as c
from shared.errors import MatrixError, json_response

router = APIRouter(tags=["rooms"])


async def _current_state(storage, room_id: str) -> dict | None:
    room = await storage.room(room_id)
    if room is None or room["current_state_group"] is None:
        return None
    return await storage.state_map(room["current_state_group"])


async def _servers(svc, state: dict) -> set[str]:
    return await svc.acls.filter(state, await joined_servers(svc.storage, state))


async def _is_joined(storage, state: dict, user_id: str) -> bool:
    eid = state.get(("m.room.member", user_id))
    if eid is None:
        return False
    ev = (await storage.events([eid])).get(eid)
    return ev is not None and (ev.get("content") or {}).get("membership") == "join"


@router.get(c.ROOM_SERVERS, response_model=c.ServersResponse)
async def room_servers(room_id: str, request: Request, user_id: str | None = None):
    svc = request.app.state.svc
    storage = svc.storage
    state = await _current_state(storage, room_id)
    if state is None:
        raise MatrixError(404, "M_NOT_FOUND", "unknown room")
    out = {"servers": sorted(await _servers(svc, state))}
    if user_id is not None:
        out["user_joined"] = await _is_joined(storage, state, user_id)
    return json_response(out)


@router.get(c.USER_SERVERS, response_model=c.UserServersResponse)
async def user_servers(user_id: str, request: Request):
    svc = request.app.state.svc
    servers: set[str] = set()
    for room_id in await svc.tx.room_ids():
        state = await _current_state(svc.storage, room_id)
        if state is not None and await _is_joined(svc.storage, state, user_id):
            servers |= await _servers(svc, state)
    return json_response({"servers": sorted(servers)})
