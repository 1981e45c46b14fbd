"""Operators' view of the rooms (see `shared.contracts.admin`): each room's version, its
forward extremities and how many joined members each server has in its current state.
An internal route (behind the internal secret); it walks every room we hold, so it is for
operators, not for per-event use."""
from __future__ import annotations

from collections import Counter

from fastapi import APIRouter, Request

from shared.contracts import admin as c
from shared.errors import json_response
from shared.events import server_of

router = APIRouter(tags=["admin"], include_in_schema=False)   # operator tooling


async def _members(storage, group) -> dict[str, int]:
    if group is None:
        return {}
    state = await storage.state_map(group)
    members = {k[1]: e for k, e in state.items() if k[0] == "m.room.member"}
    evs = await storage.events(list(members.values()))
    joined = Counter(server_of(u) for u, e in members.items()
                     if (evs.get(e) or {}).get("content", {}).get("membership") == "join")
    return dict(sorted(joined.items()))


@router.get(c.ROOMS)
async def rooms(request: Request):
    svc = request.app.state.svc
    out = []
    for room_id in sorted(await svc.tx.room_ids()):
        room = await svc.storage.room(room_id)
        if room is None:
            continue
        out.append({"room_id": room_id, "room_version": room["room_version"],
                    "extremities": room["extremities"],
                    "members": await _members(svc.storage, room["current_state_group"])})
    return json_response({"rooms": out})
