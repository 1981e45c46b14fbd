"""Contract of the transaction service's directory routes: what the homeserver told the
stack about its users' profiles, the handlers of federation queries it answers itself,
our room aliases and which rooms are published in the public room list.

Invariants (enforced by the transaction service, services/transaction/routes/directory.py):
- Profiles, aliases and published rooms are ours only: a user ID or alias of another
  server is 400 M_INVALID_PARAM, and nothing is stored.
- An alias names one room; putting an alias that names another room is 409 M_UNKNOWN
  (`M_ROOM_IN_USE` in the client-server API), the same room again is a no-op.
- Unknown entries are 404 M_NOT_FOUND.
"""
from __future__ import annotations

from typing import Literal
from urllib.parse import quote

from pydantic import BaseModel, Field

from shared.internal import InternalClient

PREFIX = "/_internal/transaction/v1"
PROFILE = PREFIX + "/profiles/{user_id}"
QUERY_HANDLERS = PREFIX + "/query_handlers"
QUERY_HANDLER = PREFIX + "/query_handlers/{query_type}"
ALIAS = PREFIX + "/aliases/{alias}"
ROOM_ALIASES = PREFIX + "/rooms/{room_id}/aliases"
VISIBILITY = PREFIX + "/rooms/{room_id}/visibility"
PUBLISHED = PREFIX + "/published_rooms"

# Query types the stack answers itself; every other one may have a registered handler.
BUILTIN_QUERIES = ("profile", "directory")


class Profile(BaseModel):
    displayname: str | None = Field(None, max_length=1000)
    avatar_url: str | None = Field(None, max_length=1000)


class QueryHandler(BaseModel):
    """`GET {url}?<the query's parameters>&origin=<server>` answers /query/{query_type}."""
    query_type: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._\-]+$")
    url: str = Field(min_length=1, max_length=2000, pattern=r"^https?://")


class AliasIn(BaseModel):
    room_id: str = Field(min_length=1, max_length=255)
    servers: list[str] = []


class Alias(BaseModel):
    room_id: str
    servers: list[str]


class Visibility(BaseModel):
    visibility: Literal["public", "private"]


class Published(BaseModel):
    room_ids: list[str]


def _q(v: str) -> str:
    return quote(v, safe="")


class DirectoryClient(InternalClient):
    async def put_profile(self, user_id: str, body: dict) -> dict:
        return await self.call("PUT", PROFILE.format(user_id=_q(user_id)), body)

    async def get_profile(self, user_id: str) -> dict | None:
        status, data = await self.request("GET", PROFILE.format(user_id=_q(user_id)))
        if status == 404:
            return None
        if status >= 300:
            await self.call("GET", PROFILE.format(user_id=_q(user_id)))
        return data

    async def put_query_handler(self, body: dict) -> dict:
        return await self.call("POST", QUERY_HANDLERS, body)

    async def query_handler(self, query_type: str) -> str | None:
        status, data = await self.request("GET", QUERY_HANDLER.format(query_type=_q(query_type)))
        if status == 404:
            return None
        if status >= 300:
            await self.call("GET", QUERY_HANDLER.format(query_type=_q(query_type)))
        return data["url"]

    async def put_alias(self, alias: str, body: dict) -> dict:
        return await self.call("PUT", ALIAS.format(alias=_q(alias)), body)

    async def delete_alias(self, alias: str) -> dict:
        return await self.call("DELETE", ALIAS.format(alias=_q(alias)))

    async def get_alias(self, alias: str) -> dict | None:
        status, data = await self.request("GET", ALIAS.format(alias=_q(alias)))
        if status == 404:
            return None
        if status >= 300:
            await self.call("GET", ALIAS.format(alias=_q(alias)))
        return data

    async def room_aliases(self, room_id: str) -> list[str]:
        return (await self.call("GET", ROOM_ALIASES.format(room_id=_q(room_id))))["aliases"]

    async def put_visibility(self, room_id: str, visibility: str) -> dict:
        return await self.call("PUT", VISIBILITY.format(room_id=_q(room_id)), {"visibility": visibility})

    async def get_visibility(self, room_id: str) -> str:
        return (await self.call("GET", VISIBILITY.format(room_id=_q(room_id))))["visibility"]

    async def published_rooms(self) -> list[str]:
        return (await self.call("GET", PUBLISHED))["room_ids"]
