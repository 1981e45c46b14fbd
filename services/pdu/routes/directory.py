"""The public room list: the federation `publicRooms` (GET with limit/since, POST with a
filter; forwarded by transport with the verified origin) and the internal route the domain
API lists our own rooms through. Logic and invariants: services/pdu/directory.py."""
from __future__ import annotations

from fastapi import APIRouter, Query, Request

from services.pdu.directory import public_rooms
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


async def _list(request: Request, origin, limit, since, term):
    s = request.app.state.svc
    return json_response(await public_rooms(s.storage, s.tx, s.acls, origin, limit, since, term))


@router.post(c.PUBLIC_ROOMS, tags=["rooms"], response_model=c.PublicRoomsResponse)
async def internal_public_rooms(body: c.PublicRoomsRequest, request: Request):
    term = (body.filter or {}).get("generic_search_term")
    return await _list(request, None, body.limit, body.since, term)


@router.get(F + "/v1/publicRooms", tags=["federation"])
async def fed_public_rooms(request: Request, limit: int | None = Query(None), since: str | None = None):
    return await _list(request, _origin(request), limit, since, None)


@router.post(F + "/v1/publicRooms", tags=["federation"])
async def fed_public_rooms_filtered(request: Request):
    body = await read_json(request)
    if not isinstance(body, dict):
        raise MatrixError(400, "M_BAD_JSON", "body must be an object")
    flt = body.get("filter")
    term = flt.get("generic_search_term") if isinstance(flt, dict) else None
    if term is not None and not isinstance(term, str):
        raise MatrixError(400, "M_BAD_JSON", "filter.generic_search_term must be a string")
    since = body.get("since")
    if since is not None and not isinstance(since, str):
        raise MatrixError(400, "M_BAD_JSON", "since must be a string")
    return await _list(request, _origin(request), body.get("limit"), since, term)
