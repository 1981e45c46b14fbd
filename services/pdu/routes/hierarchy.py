"""Spaces and jump-to-date: the federation `/hierarchy/{roomId}` and
`/timestamp_to_event/{roomId}` (forwarded by transport with the verified origin) and the
internal hierarchy route of the domain API. Logic and invariants: services/pdu/hierarchy.py."""
from __future__ import annotations

from fastapi import APIRouter, Query, Request

from services.pdu.hierarchy import hierarchy, timestamp_to_event
from shared.contracts import pdu as c
from shared.errors import MatrixError, json_response

router = APIRouter()
F = c.FEDERATION


def _origin(request: Request) -> str:
    o = request.headers.get(c.ORIGIN_HEADER)
    if not o:
        raise MatrixError(401, "M_UNAUTHORIZED", "no authenticated origin")
    return o


def _flag(value: str | None) -> bool:
    if value in (None, "false"):
        return False
    if value == "true":
        return True
    raise MatrixError(400, "M_INVALID_PARAM", "suggested_only must be true or false")


@router.get(c.HIERARCHY, tags=["rooms"])
async def internal_hierarchy(room_id: str, request: Request, suggested_only: str | None = None):
    s = request.app.state.svc
    return json_response(await hierarchy(s.storage, s.acls, None, room_id, _flag(suggested_only)))


@router.get(F + "/v1/hierarchy/{room_id}", tags=["federation"])
async def fed_hierarchy(room_id: str, request: Request, suggested_only: str | None = None):
    s = request.app.state.svc
    return json_response(await hierarchy(s.storage, s.acls, _origin(request), room_id,
                                         _flag(suggested_only)))


@router.get(F + "/v1/timestamp_to_event/{room_id}", tags=["federation"])
async def fed_timestamp_to_event(room_id: str, request: Request, ts: str = Query(...),
                                 dir: str = Query(...)):
    s = request.app.state.svc
    origin = _origin(request)
    room = await s.federation._room(room_id, origin)        # 404 unknown, 403 ACL
    await s.federation._check_origin_in_room(origin, room)  # 403 no member
    if not ts.isdigit():
        raise MatrixError(400, "M_INVALID_PARAM", "ts must be a non-negative integer")
    return json_response(await timestamp_to_event(s.tx, room_id, int(ts), dir))
