"""Spaces in the domain API: `GET /v1/rooms/{room_id}/hierarchy` (suggested_only, via).

A room we hold is answered from our state (the pdu service, as our own view: every child
we hold is listed); any other is asked of the servers in `via` (then the room ID's
server), in turn, through `/_matrix/federation/v1/hierarchy`: the first 200 answer with a
`room` object is passed on (its `children` objects and `inaccessible_children` strings
only; a field that is no list is empty); a 404 from all of them is 404 M_NOT_FOUND, else 502.
"""
from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Query, Request

from shared.contracts import messaging as c
from shared.errors import MatrixError, json_response
from shared.events import is_valid_server_name, server_of

router = APIRouter(tags=["spaces"])
FED = "/_matrix/federation/v1"


def _items(value, kind) -> list:
    """The entries of type `kind` of a remote's list; anything but a list is no entries."""
    return [x for x in value if isinstance(x, kind)] if isinstance(value, list) else []


@router.get(c.HIERARCHY)
async def hierarchy(room_id: str, request: Request, suggested_only: bool = False,
                    via: list[str] = Query([])):
    s = request.app.state.svc
    status, body = await s.pdu.hierarchy(room_id, suggested_only)
    if status == 200:
        return json_response(body)
    if status != 404:
        raise MatrixError(502, "M_UNKNOWN", f"hierarchy failed: {status}")
    ours = request.app.state.settings.server_name
    servers = [v for v in dict.fromkeys(via + ([server_of(room_id)] if ":" in room_id else []))
               if is_valid_server_name(v)]   # nothing to ask of a name that is none
    errors = []
    for server in [v for v in servers if v and v != ours]:
        resp = await s.tx.federation_request(
            server, "GET", f"{FED}/hierarchy/{quote(room_id, safe='')}",
            query=[("suggested_only", "true" if suggested_only else "false")])
        got = resp.get("body")
        if resp.get("status") == 200 and isinstance(got, dict) and isinstance(got.get("room"), dict):
            return json_response({"room": got["room"],
                                  "children": _items(got.get("children"), dict),
                                  "inaccessible_children": _items(got.get("inaccessible_children"), str)})
        errors.append(resp.get("status"))
    if errors and any(e != 404 for e in errors):
        raise MatrixError(502, "M_UNKNOWN", f"hierarchy failed at every server: {errors}")
    raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
