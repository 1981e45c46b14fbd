"""Room aliases and the room directory in the domain API.

Invariants:
- Aliases are ours only (400 otherwise, from the transaction service); an alias naming
  another room is 409 (`PUT`), an unknown one 404. A remote alias is resolved by its
  server's `/query/directory` (404 passed on, other failures 502); of the servers it
  lists only server names are kept (none: the alias's server).
- `POST /v1/rooms` with `room_alias_name` checks the alias is free before the room is
  made (400 M_ROOM_IN_USE), then stores it and sets `m.room.canonical_alias`; with
  `visibility: public` the room is published in our public room list.
- Joining by alias joins the room it names, through the servers the alias lists after
  any the caller gave.
- Visibility (`PUT` and `GET`) of a room we do not know is 404 M_NOT_FOUND, as in the
  client-server API (never "private" for a room that does not exist).
- `GET /v1/public_rooms`: ours (no `server`, or our name) from the pdu service, a remote
  server's through its `publicRooms` (POST when a search term is given), answer passed on
  reduced to PublicRoomsResponse: object entries only, string batch tokens, and a
  `total_room_count_estimate` that is a non-negative integer (else the entries' count).
"""
from __future__ import annotations

from fastapi import APIRouter, Query, Request

from shared.contracts import directory as d
from shared.contracts import messaging as c
from shared.contracts import pdu as pdu_c
from shared.errors import MatrixError, json_response
from shared.events import is_valid_server_name, server_of

router = APIRouter(tags=["directory"])
FED = "/_matrix/federation/v1"


def _svc(request: Request):
    return request.app.state.svc


def _alias_server(alias: str) -> str:
    if (not isinstance(alias, str) or not alias.startswith("#") or ":" not in alias or len(alias) > 255
            or not is_valid_server_name(server_of(alias))):
        raise MatrixError(400, "M_INVALID_PARAM", "not a room alias")
    return server_of(alias)


async def resolve_alias(svc, server_name: str, alias: str) -> dict:
    """{room_id, servers} of an alias, ours or another server's (see module doc)."""
    server = _alias_server(alias)
    if server == server_name:
        found = await svc.tx.get_alias(alias)
        if found is None:
            raise MatrixError(404, "M_NOT_FOUND", "Room alias not found")
        return {"room_id": found["room_id"],
                "servers": list(dict.fromkeys([server_name] + found["servers"]))}
    resp = await svc.tx.federation_request(server, "GET", FED + "/query/directory",
                                           query=[("room_alias", alias)])
    body = resp.get("body")
    if resp.get("status") == 404:
        raise MatrixError(404, "M_NOT_FOUND", "Room alias not found")
    if (resp.get("status") != 200 or not isinstance(body, dict) or not isinstance(body.get("room_id"), str)
            or not body["room_id"].startswith("!")):
        raise MatrixError(502, "M_UNKNOWN", f"alias query to {server} failed: {resp.get('status')}")
    servers = body.get("servers") if isinstance(body.get("servers"), list) else []
    return {"room_id": body["room_id"], "servers": [s for s in servers if is_valid_server_name(s)] or [server]}


async def create_room(svc, server_name: str, body) -> dict:
    """POST /v1/rooms: the room, its alias (free first) and its visibility."""
    alias = None
    if body.room_alias_name is not None:
        alias = f"#{body.room_alias_name}:{server_name}"
        if await svc.tx.get_alias(alias) is not None:
            raise MatrixError(400, "M_ROOM_IN_USE", "Room alias already taken")
    made = await svc.pdu.create_room(body.model_dump(include=set(pdu_c.CreateRoom.model_fields)))
    room_id = made["room_id"]
    if alias is not None:
        await svc.tx.put_alias(alias, {"room_id": room_id, "servers": [server_name]})
        await svc.pdu.send(room_id, {"sender": body.creator, "type": "m.room.canonical_alias",
                                     "content": {"alias": alias}, "state_key": ""})
    if body.visibility == "public":
        await svc.tx.put_visibility(room_id, "public")
    return made


async def join_target(svc, server_name: str, room_id_or_alias: str, servers: list[str]) -> tuple[str, list[str]]:
    if not room_id_or_alias.startswith("#"):
        return room_id_or_alias, servers
    found = await resolve_alias(svc, server_name, room_id_or_alias)
    return found["room_id"], list(dict.fromkeys(list(servers) + found["servers"]))


@router.put(c.DIRECTORY)
async def put_alias(room_alias: str, body: d.AliasIn, request: Request):
    s = _svc(request)
    _alias_server(room_alias)
    if await s.pdu.room_servers(body.room_id) is None:
        raise MatrixError(404, "M_NOT_FOUND", "unknown room")
    await s.tx.put_alias(room_alias, {"room_id": body.room_id,
                                      "servers": [request.app.state.settings.server_name]})
    return json_response({})


@router.delete(c.DIRECTORY)
async def delete_alias(room_alias: str, request: Request):
    _alias_server(room_alias)
    await _svc(request).tx.delete_alias(room_alias)
    return json_response({})


@router.get(c.DIRECTORY, response_model=d.Alias)
async def get_alias(room_alias: str, request: Request):
    return json_response(await resolve_alias(_svc(request), request.app.state.settings.server_name,
                                             room_alias))


async def _known_room(s, room_id: str) -> None:
    if await s.pdu.room_servers(room_id) is None:
        raise MatrixError(404, "M_NOT_FOUND", "unknown room")


@router.put(c.VISIBILITY)
async def put_visibility(room_id: str, body: d.Visibility, request: Request):
    s = _svc(request)
    await _known_room(s, room_id)
    await s.tx.put_visibility(room_id, body.visibility)
    return json_response({})


@router.get(c.VISIBILITY, response_model=d.Visibility)
async def get_visibility(room_id: str, request: Request):
    s = _svc(request)
    await _known_room(s, room_id)
    return json_response({"visibility": await s.tx.get_visibility(room_id)})


@router.get(c.PUBLIC_ROOMS, response_model=pdu_c.PublicRoomsResponse)
async def list_public_rooms(request: Request, server: str | None = None,
                            limit: int | None = Query(None, ge=1), since: str | None = None,
                            search: str | None = None):
    s = _svc(request)
    ours = request.app.state.settings.server_name
    if server not in (None, "") and not is_valid_server_name(server):
        raise MatrixError(400, "M_INVALID_PARAM", "server is not a server name")
    if server in (None, "", ours):
        body = {"limit": limit, "since": since}
        if search:
            body["filter"] = {"generic_search_term": search}
        return json_response(await s.pdu.public_rooms(body))
    if search:
        resp = await s.tx.federation_request(server, "POST", FED + "/publicRooms", body={
            k: v for k, v in (("limit", limit), ("since", since),
                              ("filter", {"generic_search_term": search})) if v is not None})
    else:
        resp = await s.tx.federation_request(server, "GET", FED + "/publicRooms", query=[
            (k, str(v)) for k, v in (("limit", limit), ("since", since)) if v is not None])
    body = resp.get("body")
    if resp.get("status") != 200 or not isinstance(body, dict) or not isinstance(body.get("chunk"), list):
        raise MatrixError(502, "M_UNKNOWN", f"publicRooms at {server} failed: {resp.get('status')}")
    chunk = [r for r in body["chunk"] if isinstance(r, dict)]
    estimate = body.get("total_room_count_estimate")
    if type(estimate) is not int or estimate < 0:   # a bool or a negative is no count
        estimate = len(chunk)
    return json_response({"chunk": chunk, "total_room_count_estimate": estimate,
                          **{k: body[k] for k in ("next_batch", "prev_batch") if isinstance(body.get(k), str)}})
