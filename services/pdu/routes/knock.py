"""Knocking (room versions 7+): a local user's knock (internal), and the make_knock /
send_knock requests other servers make of rooms we hold (forwarded by transport with the
verified origin). The logic is in membership.py (knocker) and federation.py (resident)."""
from __future__ import annotations

from fastapi import APIRouter, Query, Request

from shared.contracts import pdu as c
from shared.errors import MatrixError, json_response
from shared.routing import read_json

router = APIRouter()
F = c.FEDERATION


def _origin(request: Request) -> str:
    o = request.headers.get(c.ORIGIN_HEADER)
    if not o:
        raise MatrixError(401, "M_UNAUTHORIZED", "no authenticated origin")
    return o


@router.post(c.KNOCK, tags=["rooms"], response_model=c.EventIdResponse)
async def knock(room_id: str, body: c.Knock, request: Request):
    eid = await request.app.state.svc.membership.knock(room_id, body.user_id, body.servers, body.reason)
    return {"event_id": eid}


@router.get(F + "/v1/make_knock/{room_id}/{user_id}", tags=["federation"])
async def fed_make_knock(room_id: str, user_id: str, request: Request, ver: list[str] = Query(...)):
    return json_response(await request.app.state.svc.federation.make_membership(
        _origin(request), room_id, user_id, "knock", ver))


@router.put(F + "/v1/send_knock/{room_id}/{event_id}", tags=["federation"])
async def fed_send_knock(room_id: str, event_id: str, request: Request):
    body = await read_json(request)
    return json_response(await request.app.state.svc.federation.send_membership(
        _origin(request), room_id, event_id, body, "knock"))
