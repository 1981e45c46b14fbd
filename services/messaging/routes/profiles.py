"""Profiles and federation queries in the domain API.

- `PUT /v1/profile/{user_id}`: the homeserver tells the stack a user's profile (ours only).
- `GET /v1/profile/{user_id}`: ours from what we were told; a remote user's from that
  user's server (`/query/profile`), its answer reduced to string displayname/avatar_url;
  404 M_NOT_FOUND when there is none, 502 when the server cannot be asked.
- `POST /v1/query_handlers`: the URL that answers `/query/{query_type}` for a type the
  stack does not answer itself (see services/transport/routes/queries.py).
"""
from __future__ import annotations

from fastapi import APIRouter, Request

from shared.contracts import directory as d
from shared.contracts import messaging as c
from shared.errors import MatrixError, json_response
from shared.events import is_valid_federation_user_id, server_of

router = APIRouter(tags=["profiles"])
FIELDS = ("displayname", "avatar_url")


def _svc(request: Request):
    return request.app.state.svc


def profile_of(body) -> dict:
    """The string profile fields of a /query/profile answer (anything else dropped)."""
    body = body if isinstance(body, dict) else {}
    return {k: body[k] for k in FIELDS if isinstance(body.get(k), str)}


@router.put(c.PROFILE)
async def put_profile(user_id: str, body: d.Profile, request: Request):
    await _svc(request).tx.put_profile(user_id, body.model_dump())
    return json_response({})


@router.get(c.PROFILE, response_model=d.Profile)
async def get_profile(user_id: str, request: Request):
    s = _svc(request)
    if not is_valid_federation_user_id(user_id):
        raise MatrixError(400, "M_INVALID_PARAM", "invalid user ID")
    server = server_of(user_id)
    if server == request.app.state.settings.server_name:
        found = await s.tx.get_profile(user_id)
        if found is None:
            raise MatrixError(404, "M_NOT_FOUND", "no profile for that user")
        return json_response(found)
    resp = await s.tx.federation_request(server, "GET", "/_matrix/federation/v1/query/profile",
                                         query=[("user_id", user_id)])
    if resp.get("status") == 200:
        return json_response(profile_of(resp.get("body")))
    if resp.get("status") == 404:
        raise MatrixError(404, "M_NOT_FOUND", f"{server} has no profile for that user")
    raise MatrixError(502, "M_UNKNOWN", f"profile query to {server} failed: "
                      f"{resp.get('status')} {resp.get('error') or resp.get('body')}")


@router.post(c.QUERY_HANDLERS)
async def put_query_handler(body: d.QueryHandler, request: Request):
    await _svc(request).tx.put_query_handler(body.model_dump())
    return json_response({})
