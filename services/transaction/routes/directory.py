"""Profiles, query handlers, aliases and published rooms (shared/contracts/directory.py,
whose invariants these routes enforce; storage: store_directory.py)."""
from __future__ import annotations

from fastapi import APIRouter, Request

from services.transaction import store_directory as sd
from shared.contracts import directory as c
from shared.errors import MatrixError, json_response
from shared.events import is_valid_user_id, server_of

router = APIRouter(tags=["directory"])


def _svc(request: Request):
    return request.app.state.svc


def _ours(request: Request, user_or_alias: str, sigil: str) -> None:
    name = _svc(request).settings.server_name
    ok = (isinstance(user_or_alias, str) and user_or_alias.startswith(sigil) and ":" in user_or_alias
          and server_of(user_or_alias) == name and len(user_or_alias) <= 255)
    if sigil == "@":
        ok = ok and is_valid_user_id(user_or_alias)
    if not ok:
        raise MatrixError(400, "M_INVALID_PARAM", f"{user_or_alias!r} is not one of this server's")


@router.put(c.PROFILE)
async def put_profile(user_id: str, body: c.Profile, request: Request):
    _ours(request, user_id, "@")
    await _svc(request).db.run(sd.put_profile, user_id, body.displayname, body.avatar_url)
    return json_response({})


@router.get(c.PROFILE, response_model=c.Profile)
async def get_profile(user_id: str, request: Request):
    found = await _svc(request).db.run(sd.get_profile, user_id)
    if found is None:
        raise MatrixError(404, "M_NOT_FOUND", "no such profile")
    return json_response(found)


@router.post(c.QUERY_HANDLERS)
async def put_query_handler(body: c.QueryHandler, request: Request):
    if body.query_type in c.BUILTIN_QUERIES:
        raise MatrixError(400, "M_INVALID_PARAM", f"{body.query_type} queries are answered by the stack")
    await _svc(request).db.run(sd.put_query_handler, body.query_type, body.url)
    return json_response({})


@router.get(c.QUERY_HANDLER, response_model=c.QueryHandler)
async def get_query_handler(query_type: str, request: Request):
    url = await _svc(request).db.run(sd.get_query_handler, query_type)
    if url is None:
        raise MatrixError(404, "M_NOT_FOUND", "no handler for that query type")
    return json_response({"query_type": query_type, "url": url})


@router.put(c.ALIAS)
async def put_alias(alias: str, body: c.AliasIn, request: Request):
    _ours(request, alias, "#")
    if not body.room_id.startswith("!"):
        raise MatrixError(400, "M_INVALID_PARAM", "room_id is not a room ID")
    taken = await _svc(request).db.run(sd.put_alias, alias, body.room_id, body.servers)
    if taken is not None:
        raise MatrixError(409, "M_UNKNOWN", f"{alias} already names another room")
    return json_response({})


@router.get(c.ALIAS, response_model=c.Alias)
async def get_alias(alias: str, request: Request):
    found = await _svc(request).db.run(sd.get_alias, alias)
    if found is None:
        raise MatrixError(404, "M_NOT_FOUND", "Room alias not found")
    return json_response(found)


@router.delete(c.ALIAS)
async def delete_alias(alias: str, request: Request):
    _ours(request, alias, "#")
    if not await _svc(request).db.run(sd.delete_alias, alias):
        raise MatrixError(404, "M_NOT_FOUND", "Room alias not found")
    return json_response({})


@router.get(c.ROOM_ALIASES)
async def room_aliases(room_id: str, request: Request):
    return json_response({"aliases": await _svc(request).db.run(sd.room_aliases, room_id)})


@router.put(c.VISIBILITY)
async def put_visibility(room_id: str, body: c.Visibility, request: Request):
    await _svc(request).db.run(sd.put_visibility, room_id, body.visibility)
    return json_response({})


@router.get(c.VISIBILITY, response_model=c.Visibility)
async def get_visibility(room_id: str, request: Request):
    return json_response({"visibility": await _svc(request).db.run(sd.get_visibility, room_id)})


@router.get(c.PUBLISHED, response_model=c.Published)
async def published(request: Request):
    return json_response({"room_ids": await _svc(request).db.run(sd.published_rooms)})
