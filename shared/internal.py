"""Internal HTTP between the layers: the shared secret and the typed-client base.

Invariants: every route under `/_internal/` answers 403 `M_FORBIDDEN` unless the request
carries the homeserver's internal secret; `/health` and public routes are unaffected.
`InternalClient.call` turns a non-2xx answer back into the `MatrixError` the callee raised,
so errors cross layers unchanged. Request bodies are passed on as received (an integer
beyond 64 bits included: the callee decides about it, the hop never fails on it).

The client is httpx: it lets tests swap the network for an in-process ASGI transport, so
two whole homeservers can run inside one test process. Connections are kept alive.
"""
from __future__ import annotations

import hmac

import httpx
import orjson

from shared.canonical import dumps
from shared.errors import MatrixError

SECRET_HEADER = "x-fedstack-secret"
INTERNAL_PREFIX = "/_internal/"


class InternalSecretMiddleware:
    """Pure ASGI middleware refusing `/_internal/` requests without the secret."""

    def __init__(self, app, secret: str):
        self.app = app
        self.secret = secret.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith(INTERNAL_PREFIX):
            given = b""
            for k, v in scope["headers"]:
                if k == SECRET_HEADER.encode():
                    given = v
                    break
            if not self.secret or not hmac.compare_digest(given, self.secret):
                body = orjson.dumps({"errcode": "M_FORBIDDEN",
                                     "error": "internal route: missing or wrong secret"})
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class InternalClient:
    """Typed clients in `shared/contracts/` derive from this; one per callee service.

    `base_url` may list several replicas separated by commas: requests go round-robin, and
    a request that could not connect is tried on the next replica (every internal route is
    safe to retry, see architecture.md)."""

    def __init__(self, base_url: str, secret: str, *, transport: httpx.AsyncBaseTransport | None = None,
                 timeout: float = 120.0):
        self.base_urls = [u.strip().rstrip("/") for u in base_url.split(",") if u.strip()]
        self.base_url = self.base_urls[0]
        self._clients = [httpx.AsyncClient(
            base_url=u, transport=transport, timeout=timeout,
            headers={SECRET_HEADER: secret, "content-type": "application/json"},
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32))
            for u in self.base_urls]
        self._next = 0

    async def aclose(self) -> None:
        for c in self._clients:
            await c.aclose()

    async def _send(self, method, path, content, params, headers) -> httpx.Response:
        n = len(self._clients)
        start = self._next
        self._next = (self._next + 1) % n
        for i in range(n):
            client = self._clients[(start + i) % n]
            try:
                return await client.request(method, path, content=content, params=params,
                                            headers=headers)
            except httpx.ConnectError:
                if i == n - 1:
                    raise
        raise AssertionError("unreachable")

    async def request(self, method: str, path: str, body=None, params=None,
                      headers: dict | None = None) -> tuple[int, object]:
        """Send one request; return (status, parsed JSON body or None)."""
        content = dumps(body) if body is not None else None   # any int, as received
        resp = await self._send(method, path, content, params, headers)
        data = None
        if resp.content:
            try:
                data = orjson.loads(resp.content)
            except orjson.JSONDecodeError:
                data = {"errcode": "M_UNKNOWN", "error": resp.text[:200]}
        return resp.status_code, data

    async def call(self, method: str, path: str, body=None, params=None):
        """Like `request`, but raise the callee's `MatrixError` on a non-2xx status."""
        status, data = await self.request(method, path, body, params)
        if status >= 300:
            data = data if isinstance(data, dict) else {}
            extra = {k: v for k, v in data.items() if k not in ("errcode", "error")}
            raise MatrixError(status, data.get("errcode", "M_UNKNOWN"),
                              data.get("error", f"internal call failed: {status}"), **extra)
        return data
