"""Route helpers shared by the services: raw JSON bodies documented in OpenAPI, the
common app setup (errors, secret, health).

Hot routes read the body with orjson instead of a pydantic model (a model per event costs
about 20%), yet their request shape still appears in the OpenAPI document via
`body_doc(Model)`.

Invariants: `read_json` never raises anything but 400 M_NOT_JSON / M_BAD_JSON for a bad
body (empty, not UTF-8, NaN, nesting too deep, 5000-digit numbers, lone surrogates...) and
keeps every integer exact; `BodyLimitMiddleware` answers 413 M_TOO_LARGE before any parsing.
"""
from __future__ import annotations

import orjson
from fastapi import FastAPI, Request
from starlette.convertors import Convertor, register_url_convertor

from shared.canonical import BadJSON, parse_json_body
from shared.errors import MatrixError, install_error_handlers
from shared.internal import InternalSecretMiddleware


class _AnyText(Convertor):
    """`{name:text}`: the rest of the path, any characters, newlines too (Starlette's
    `path` pattern stops at a newline, so a txnId holding one was answered 404)."""
    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value) -> str:
        return str(value)


register_url_convertor("text", _AnyText())     # a pattern type, the same for every app


def _inline_refs(schema: dict) -> dict:
    defs = schema.pop("$defs", {})

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node and node["$ref"].startswith("#/$defs/"):
                return walk(dict(defs[node["$ref"].split("/")[-1]]))
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node
    return walk(schema)


def body_doc(model) -> dict:
    """`openapi_extra` documenting a JSON request body of shape `model`."""
    schema = _inline_refs(model.model_json_schema())
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": schema}}}}


async def read_json(request: Request, *, require_object: bool = True):
    """Parse a JSON request body; 400 M_NOT_JSON / M_BAD_JSON instead of any exception.

    Strict and exact (`shared.canonical.parse_json_body`): integers keep every digit (orjson
    alone would turn those beyond 64 bits into floats, so a signature over the body could
    not be checked and canonical-JSON checks would see the wrong value); an empty body is
    not JSON."""
    raw = await request.body()
    if not raw:
        if require_object:
            raise MatrixError(400, "M_NOT_JSON", "request body is empty")
        return None
    try:
        data = parse_json_body(raw)
    except BadJSON as exc:
        raise MatrixError(400, exc.errcode, exc.message)
    if require_object and not isinstance(data, dict):
        raise MatrixError(400, "M_BAD_JSON", "request body must be a JSON object")
    return data


def new_app(title: str, secret: str | None, version: str = "0.1.0", **kwargs) -> FastAPI:
    """A FastAPI app with Matrix errors, `/health`, and the internal-secret guard."""
    app = FastAPI(title=title, version=version, **kwargs)
    app.router.redirect_slashes = False     # an unknown path is 404, never a redirect
    install_error_handlers(app)

    @app.get("/health", tags=["health"])
    async def health() -> dict:
        return {"status": "ok", "service": title}

    if secret is not None:
        app.add_middleware(InternalSecretMiddleware, secret=secret)
    return app


class BodyLimitMiddleware:
    """Pure ASGI middleware: request bodies over `max_bytes` get 413 M_TOO_LARGE before
    any handler parses them (declared Content-Length or counted while reading)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def _too_large(self, send):
        body = orjson.dumps({"errcode": "M_TOO_LARGE", "error": "Request body too large"})
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for k, v in scope["headers"]:
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    declared = self.max_bytes + 1
                if declared > self.max_bytes:
                    return await self._too_large(send)
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._too_large(send)
            chunks.append(chunk)
            if not msg.get("more_body"):
                break
        body = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()
        await self.app(scope, replay, send)
