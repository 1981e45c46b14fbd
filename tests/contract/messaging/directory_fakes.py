"""Fakes below the messaging service for its #14 routes (profiles, query handlers, aliases,
visibility, public rooms, hierarchy), added onto the conftest's `fake_pdu` / `fake_tx` apps.

- The transaction service's directory routes (shared/contracts/directory.py) in memory,
  enforcing that contract's invariants as the real service does: profiles and aliases are
  ours only (400 M_INVALID_PARAM), an alias naming another room is 409, unknown entries 404,
  built-in query types cannot get a handler (400). Every body is checked against its
  contract model (unknown keys included); each call is recorded in `calls` as
  (route name, path parameter, body).
- The pdu service's `POST public_rooms` (answer: `public_rooms_answer`, or `public_rooms_fail`)
  and `GET rooms/{room_id}/hierarchy` (answer: `hierarchies[room_id]`, 404 M_NOT_FOUND
  for a room not in it), recorded in `calls` too (the hierarchy with its query string).
- `federation_calls()`: the FederationRequest bodies messaging sent through the transaction
  service, each checked against that contract model.
"""
from __future__ import annotations

import orjson
from fastapi import Request

from shared.contracts import directory as d
from shared.contracts import pdu as pdu_c
from shared.contracts.transport import FederationRequest
from shared.errors import MatrixError
from tests.contract.messaging.conftest import contract_errors

OURS = "hs.test"


def _ours(ident: str, sigil: str) -> None:
    if not (ident.startswith(sigil) and ":" in ident and ident.split(":", 1)[1] == OURS):
        raise MatrixError(400, "M_INVALID_PARAM", f"{ident!r} is not one of this server's")


class FakeDirectory:
    def __init__(self, fake_pdu, fake_tx):
        self.fake_tx = fake_tx
        self.calls: list[tuple[str, str | None, object]] = []
        self.errors: list[str] = []
        self.profiles: dict[str, dict] = {}
        self.handlers: dict[str, str] = {}
        self.aliases: dict[str, dict] = {}
        self.published: set[str] = set()
        self.public_rooms_answer: dict = {"chunk": [], "total_room_count_estimate": 0}
        self.public_rooms_fail: tuple[int, str, str] | None = None
        self.hierarchies: dict[str, tuple[int, dict]] = {}
        self._tx_routes(fake_tx.app)
        self._pdu_routes(fake_pdu.app)

    def names(self) -> list[str]:
        return [name for name, _, _ in self.calls]

    async def _body(self, request: Request, model):
        body = orjson.loads(await request.body())
        self.errors += contract_errors(model, body)
        return body

    def _tx_routes(self, app) -> None:
        @app.put(d.PROFILE)
        async def put_profile(user_id: str, request: Request):
            body = await self._body(request, d.Profile)
            self.calls.append(("put_profile", user_id, body))
            _ours(user_id, "@")
            self.profiles[user_id] = {k: v for k, v in body.items() if v is not None}
            return {}

        @app.get(d.PROFILE)
        async def get_profile(user_id: str):
            self.calls.append(("get_profile", user_id, None))
            if user_id not in self.profiles:
                raise MatrixError(404, "M_NOT_FOUND", "no such profile")
            return self.profiles[user_id]

        @app.post(d.QUERY_HANDLERS)
        async def put_query_handler(request: Request):
            body = await self._body(request, d.QueryHandler)
            self.calls.append(("put_query_handler", None, body))
            if body["query_type"] in d.BUILTIN_QUERIES:
                raise MatrixError(400, "M_INVALID_PARAM", "answered by the stack")
            self.handlers[body["query_type"]] = body["url"]
            return {}

        @app.put(d.ALIAS)
        async def put_alias(alias: str, request: Request):
            body = await self._body(request, d.AliasIn)
            self.calls.append(("put_alias", alias, body))
            _ours(alias, "#")
            if alias in self.aliases and self.aliases[alias]["room_id"] != body["room_id"]:
                raise MatrixError(409, "M_UNKNOWN", "already names another room")
            self.aliases[alias] = {"room_id": body["room_id"], "servers": list(body.get("servers", []))}
            return {}

        @app.get(d.ALIAS)
        async def get_alias(alias: str):
            self.calls.append(("get_alias", alias, None))
            if alias not in self.aliases:
                raise MatrixError(404, "M_NOT_FOUND", "Room alias not found")
            return self.aliases[alias]

        @app.delete(d.ALIAS)
        async def delete_alias(alias: str):
            self.calls.append(("delete_alias", alias, None))
            _ours(alias, "#")
            if self.aliases.pop(alias, None) is None:
                raise MatrixError(404, "M_NOT_FOUND", "Room alias not found")
            return {}

        @app.put(d.VISIBILITY)
        async def put_visibility(room_id: str, request: Request):
            body = await self._body(request, d.Visibility)
            self.calls.append(("put_visibility", room_id, body))
            (self.published.add if body["visibility"] == "public" else self.published.discard)(room_id)
            return {}

        @app.get(d.VISIBILITY)
        async def get_visibility(room_id: str):
            self.calls.append(("get_visibility", room_id, None))
            return {"visibility": "public" if room_id in self.published else "private"}

    def _pdu_routes(self, app) -> None:
        @app.post(pdu_c.PUBLIC_ROOMS)
        async def public_rooms(request: Request):
            body = await self._body(request, pdu_c.PublicRoomsRequest)
            self.calls.append(("public_rooms", None, body))
            if self.public_rooms_fail:
                raise MatrixError(*self.public_rooms_fail)
            return self.public_rooms_answer

        @app.get(pdu_c.HIERARCHY)
        async def hierarchy(room_id: str, request: Request):
            self.calls.append(("hierarchy", room_id, list(request.query_params.multi_items())))
            if room_id not in self.hierarchies:
                raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
            status, body = self.hierarchies[room_id]
            if status != 200:
                raise MatrixError(status, body["errcode"], body["error"])
            return body

    def federation_calls(self) -> list[dict]:
        for call in self.fake_tx.federation_calls:
            self.errors += contract_errors(FederationRequest, call)
        return self.fake_tx.federation_calls


def answer(status: int, body=None, error: str | None = None) -> dict:
    """A FederationResponse as the transaction service gives it (status 0: no answer)."""
    return {"status": status, "body": body, "error": error}


NO_ANSWER = answer(0, error="connection refused (fake)")
