"""Building blocks for the contract tests: settings, waiting, signed PDUs, fake internal
services (small FastAPI apps behind the real typed clients) and a fake remote homeserver.

Fakes are apps rather than objects where the shape on the wire is part of the contract:
the service under test then talks to them through its real client code, and each fake
checks the internal secret and the request shapes of `shared/contracts/`.
"""
from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from pathlib import Path

import httpx
import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response

from fedstack.cli import prepare_data_dir
from shared.crypto import SigningKey, sign_json, verify_key_from_base64
from shared.events import compute_event_id, sign_event
from shared.room_versions import get_room_version
from shared.routing import new_app
from shared.settings import Settings
from shared.xmatrix import XMatrixError, parse_authorization, sign_request, verify_request

SECRET = "contract-test-secret"


def make_settings(data_dir: Path, server_name: str = "hs.test", **overrides) -> Settings:
    settings = Settings(server_name=server_name, data_dir=str(data_dir), internal_secret=SECRET,
                        **overrides)
    prepare_data_dir(settings)
    return settings


def unique(prefix: str = "") -> str:
    """Unique per call, so that tests also pass against a long-lived --base-url service."""
    return prefix + uuid.uuid4().hex[:12]


async def wait_until(predicate, timeout: float = 5.0, what: str = "condition",
                     interval: float = 0.01):
    """Poll `predicate` (sync or async) until it returns a truthy value; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def asgi_client(app, base_url: str = "http://fake", secret: str | None = SECRET) -> httpx.AsyncClient:
    headers = {"x-fedstack-secret": secret} if secret else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url,
                             headers=headers)


def fake_internal_app(title: str) -> FastAPI:
    """A fake internal service: the shared app setup, so it refuses a missing secret with
    403 and answers errors as Matrix JSON, like a real layer."""
    return new_app(title, SECRET)


# --------------------------------------------------------------------------- events

def make_pdu(room_id: str, key: SigningKey, *, sender: str = "@bob:remote.test",
             room_version: str = "10", body: str = "hi", depth: int = 5, **fields) -> tuple[dict, str]:
    """A well-formed, signed message PDU (auth is not the point here) and its event ID."""
    rv = get_room_version(room_version)
    ev = {"type": "m.room.message", "room_id": room_id, "sender": sender,
          "content": {"msgtype": "m.text", "body": body},
          "origin_server_ts": int(time.time() * 1000), "depth": depth,
          "prev_events": ["$" + "P" * 43], "auth_events": ["$" + "A" * 43],
          "hashes": {}, "signatures": {}, **fields}
    sign_event(ev, sender.split(":", 1)[1], key, rv)
    return ev, compute_event_id(ev, rv)


# --------------------------------------------------------------------------- fake remote

def key_response(server_name: str, key: SigningKey, valid_for_s: int = 3600) -> dict:
    body = {"server_name": server_name,
            "verify_keys": {key.key_id: {"key": key.public_key_base64}},
            "old_verify_keys": {},
            "valid_until_ts": int((time.time() + valid_for_s) * 1000)}
    return sign_json(body, server_name, key)


def raw_uri(scope) -> str:
    path = (scope.get("raw_path") or scope["path"].encode()).split(b"?", 1)[0].decode("latin-1")
    qs = scope.get("query_string") or b""
    return path + ("?" + qs.decode("latin-1") if qs else "")


class FakeRemote:
    """A remote homeserver for the transport tests, reachable through the transport's
    `federation_transports`. It has its own signing key, serves its key response, checks
    the X-Matrix signature of every request it gets (`peer_keys`: the keys it trusts), and
    is strict: a request no test scripted in `routes` is answered 500 and recorded in
    `unexpected` (the fixture asserts it stays empty)."""

    def __init__(self, server_name: str):
        self.server_name = server_name
        self.key = SigningKey.generate("remote")
        self.peer_keys: dict[str, dict[str, str]] = {}       # server -> key_id -> b64
        self.routes: dict[tuple[str, str], tuple[int, object]] = {}
        self.key_body: dict | None = None                     # overrides the key response
        self.requests: list[dict] = []
        self.unexpected: list[str] = []
        self.app = self._build()

    def sign(self, method: str, uri: str, destination: str, content=None) -> str:
        """An Authorization header value for a request from this server."""
        return sign_request(method, uri, self.server_name, destination, self.key, content)

    def _verify(self, request: Request, content) -> tuple[bool, str | None]:
        value = request.headers.get("authorization")
        if not value:
            return False, None
        try:
            auth = parse_authorization(value)
        except XMatrixError:
            return False, None
        b64 = self.peer_keys.get(auth["origin"], {}).get(auth["key"])
        ok = (b64 is not None and auth["destination"] == self.server_name and verify_request(
            request.method, raw_uri(request.scope), auth["origin"], self.server_name, content,
            auth["key"], auth["sig"], verify_key_from_base64(b64)))
        return ok, auth["origin"]

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.get("/_matrix/key/v2/server")
        async def keys():
            return self.key_body or key_response(self.server_name, self.key)

        @app.api_route("/{path:path}", methods=["GET", "PUT", "POST", "DELETE"])
        async def anything(path: str, request: Request):
            raw = await request.body()
            content = orjson.loads(raw) if raw else None
            ok, origin = self._verify(request, content)
            self.requests.append({"method": request.method, "path": "/" + path,
                                  "uri": raw_uri(request.scope), "body": content,
                                  "signature_ok": ok, "origin": origin,
                                  "host": request.headers.get("host")})
            answer = self.routes.get((request.method, "/" + path))
            if answer is None:
                self.unexpected.append(f"{request.method} /{path}")
                return Response(b'{"errcode":"M_UNKNOWN","error":"unexpected"}', 500,
                                media_type="application/json")
            status, body = answer
            return Response(orjson.dumps(body), status, media_type="application/json")
        return app


class DownTransport(httpx.AsyncBaseTransport):
    """A destination that never answers (connection refused)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused (fake)", request=request)
