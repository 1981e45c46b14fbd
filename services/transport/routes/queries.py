"""Federation queries (`GET /_matrix/federation/v1/query/{queryType}`), authenticated and
rate-limited like every other request.

- `profile` (`user_id`, optional `field` of displayname / avatar_url) and `directory`
  (`room_alias`: the room and the servers to join it through, ours first, then the
  alias's and the room's joined servers) are answered from what the homeserver told the stack (the transaction
  service's directory tables): 404 M_NOT_FOUND for a user or alias of ours we know nothing
  of, or of another server; 400 M_MISSING_PARAM / M_INVALID_PARAM for bad parameters.
- Any other type goes to the handler the homeserver registered for it (`GET url?<the
  query's parameters>&origin=<server>`, at most QUERY_HANDLER_TIMEOUT_S): its JSON object
  answer is passed through with its status; a handler that fails or times out is 502 /
  504 M_UNKNOWN; no handler registered, 404 M_UNRECOGNIZED.
"""
from __future__ import annotations

import asyncio
from urllib.parse import quote

import httpx
from fastapi import APIRouter, Request
from starlette.responses import Response

from shared.canonical import dumps
from shared.contracts import pdu as pdu_c
from shared.errors import MatrixError
from shared.events import server_of

FED = "/_matrix/federation/v1"
QUERY_HANDLER_TIMEOUT_S = 10.0
MAX_ANSWER_BYTES = 1 << 20
router = APIRouter(tags=["federation"])


def _answer(status: int, body) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json")


def _param(request: Request, name: str) -> str:
    value = request.query_params.get(name)
    if not value:
        raise MatrixError(400, "M_MISSING_PARAM", f"{name} is required")
    return value


def _ours(request: Request, ident: str, sigil: str) -> bool:
    name = request.app.state.svc.settings.server_name
    return ident.startswith(sigil) and ":" in ident and server_of(ident) == name


async def _profile(request: Request, svc) -> Response:
    user_id = _param(request, "user_id")
    field = request.query_params.get("field")
    if field is not None and field not in ("displayname", "avatar_url"):
        raise MatrixError(400, "M_INVALID_PARAM", "field must be displayname or avatar_url")
    found = await svc.transaction.get_profile(user_id) if _ours(request, user_id, "@") else None
    if found is None:
        raise MatrixError(404, "M_NOT_FOUND", "Profile was not found")
    return _answer(200, {field: found[field]} if field and field in found
                   else {} if field else found)


async def _directory(request: Request, svc) -> Response:
    alias = _param(request, "room_alias")
    found = await svc.transaction.get_alias(alias) if _ours(request, alias, "#") else None
    if found is None:
        raise MatrixError(404, "M_NOT_FOUND", "Room alias not found")
    status, data = await svc.pdu.request(
        "GET", pdu_c.ROOM_SERVERS.format(room_id=quote(found["room_id"], safe="")))
    in_room = data.get("servers", []) if status == 200 and isinstance(data, dict) else []
    servers = list(dict.fromkeys([svc.settings.server_name] + found["servers"] + sorted(in_room)))
    return _answer(200, {"room_id": found["room_id"], "servers": servers})


async def _handled(request: Request, svc, query_type: str, origin: str) -> Response:
    url = await svc.transaction.query_handler(query_type)
    if url is None:
        raise MatrixError(404, "M_UNRECOGNIZED", "Unrecognized request")
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "origin"] + [("origin", origin)]
    client = getattr(svc, "query_http", None)   # tests inject one; else a client per query
    try:
        if client is None:
            async with httpx.AsyncClient(timeout=QUERY_HANDLER_TIMEOUT_S) as own:
                resp = await asyncio.wait_for(own.get(url, params=params), QUERY_HANDLER_TIMEOUT_S)
        else:
            resp = await asyncio.wait_for(client.get(url, params=params), QUERY_HANDLER_TIMEOUT_S)
    except (httpx.TimeoutException, asyncio.TimeoutError):
        raise MatrixError(504, "M_UNKNOWN", "the query handler timed out")
    except httpx.HTTPError as exc:
        raise MatrixError(502, "M_UNKNOWN", f"the query handler failed: {type(exc).__name__}")
    try:
        body = resp.json() if len(resp.content) <= MAX_ANSWER_BYTES else None
    except ValueError:
        body = None
    if not isinstance(body, dict) or resp.status_code >= 500 or resp.status_code < 200:
        raise MatrixError(502, "M_UNKNOWN", f"the query handler answered {resp.status_code}")
    return _answer(resp.status_code, body)


@router.get(FED + "/query/{query_type}")
async def query(query_type: str, request: Request):
    svc = request.app.state.svc
    origin = await svc.authenticate(request, None)
    svc.origin_seen(origin)
    if query_type == "profile":
        return await _profile(request, svc)
    if query_type == "directory":
        return await _directory(request, svc)
    return await _handled(request, svc, query_type, origin)
