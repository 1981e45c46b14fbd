"""Internal HTTP between the layers: the shared secret and the typed-client base.

Invariants: every route under `/_internal/` answers 403 `M_FORBIDDEN` unless the request
carries the homeserver's internal secret; `/health` and public routes are unaffected.
`InternalClient.call` turns a non-2xx answer back into the `MatrixError` the callee raised,
so errors cross layers unchanged; a callee that cannot be reached, or gives no whole answer,
raises `shared.errors.LayerUnavailable` (every app answers it 503), never a bare
ConnectionError or OSError (that was a 500). Request bodies are passed on as received (an integer
beyond 64 bits included: the callee decides about it, the hop never fails on it).

Internal hops between processes use `shared.http1`, a minimal keep-alive HTTP/1.1 client:
httpx costs 3-4x aiohttp's CPU per request (architecture.md), and aiohttp 3-5x http1's
(`bench/hop.py`); at one event in flight an event crosses seven internal hops. When a test
hands in an httpx transport (an in-process ASGI app), httpx is used instead, so two whole
homeservers can run inside one test process. Service processes never import httpx (4-8 MB).
"""
from __future__ import annotations

import hmac
from urllib.parse import urlencode

import orjson

from shared.canonical import dumps
from shared.errors import LayerUnavailable, MatrixError
from shared.logs import HEADER as REQUEST_ID_HEADER
from shared.logs import request_id

SECRET_HEADER = "x-fedstack-secret"
INTERNAL_PREFIX = "/_internal/"


class InternalSecretMiddleware:
    """Pure ASGI middleware refusing `/_internal/` requests without the secret."""

    def __init__(self, app, secret: str):
        self.app = app
        self.secret = secret.encode()

    @classmethod
    def openapi_responses(cls, path: str) -> dict[str, str]:
        """What the app's OpenAPI document lists for `path` (shared.api_doc)."""
        if path.startswith(INTERNAL_PREFIX):
            return {"403": f"The internal secret ({SECRET_HEADER} header) is missing or "
                           "wrong (M_FORBIDDEN)"}
        return {}

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

    def __init__(self, base_url: str, secret: str, *, transport=None,
                 timeout: float = 120.0, headers: dict | None = None):
        self.base_urls = [u.strip().rstrip("/") for u in base_url.split(",") if u.strip()]
        self.base_url = self.base_urls[0]
        self._headers = {SECRET_HEADER: secret, "content-type": "application/json", **(headers or {})}
        self._timeout = timeout
        self._clients = None
        if transport is not None:     # an in-process app (tests): httpx, imported only then
            import httpx
            self._clients = [httpx.AsyncClient(base_url=u, transport=transport, timeout=timeout,
                                               headers=self._headers) for u in self.base_urls]
        self._pools = None        # Http1Pool per replica, made inside the running loop
        self._next = 0

    async def aclose(self) -> None:
        for c in self._clients or []:
            await c.aclose()
        for p in self._pools or []:
            await p.aclose()

    async def _one(self, i: int, method, path, content, params, headers) -> tuple[int, bytes]:
        if self._clients is not None:
            import httpx
            try:
                r = await self._clients[i].request(method, path, content=content, params=params,
                                                   headers=headers)
            except httpx.ConnectError as exc:
                raise ConnectionError(str(exc)) from exc
            except httpx.TransportError as exc:     # reached, but no whole answer
                raise OSError(f"{type(exc).__name__}: {exc}") from exc
            return r.status_code, r.content
        if self._pools is None:
            from shared.http1 import Http1Pool
            self._pools = [Http1Pool(u, timeout=self._timeout, headers=self._headers)
                           for u in self.base_urls]
        if params:
            path += "?" + urlencode([(k, str(v)) for k, v in
                                     (params.items() if isinstance(params, dict) else params)])
        return await self._pools[i].request(method, path, content, headers)

    async def _send(self, method, path, content, params, headers) -> tuple[int, bytes]:
        rid = request_id.get()
        if rid:         # the request id travels on every internal hop (shared.logs)
            headers = {**headers, REQUEST_ID_HEADER: rid} if headers else {REQUEST_ID_HEADER: rid}
        n = len(self.base_urls)
        start = self._next
        self._next = (self._next + 1) % n
        failure: OSError | None = None
        for i in range(n):
            try:
                return await self._one((start + i) % n, method, path, content, params, headers)
            except ConnectionError as exc:   # never reached the replica: the next one may take it
                failure = exc
            except OSError as exc:   # reached, no whole answer (timeout included): not resent
                raise LayerUnavailable(method, path, exc) from exc
        raise LayerUnavailable(method, path, failure) from failure

    async def request(self, method: str, path: str, body=None, params=None,
                      headers: dict | None = None) -> tuple[int, object]:
        """Send one request; return (status, parsed JSON body or None)."""
        content = dumps(body) if body is not None else None   # any int, as received
        status, raw = await self._send(method, path, content, params, headers)
        data = None
        if raw:
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError:
                data = {"errcode": "M_UNKNOWN", "error": raw[:200].decode("utf-8", "replace")}
        return status, data

    async def raw(self, method: str, path: str) -> tuple[int, bytes]:
        """(status, body bytes) of one request whose answer is not JSON (`/metrics`)."""
        return await self._send(method, path, None, None, None)

    async def call(self, method: str, path: str, body=None, params=None):
        """Like `request`, but raise the callee's `MatrixError` on a non-2xx status."""
        status, data = await self.request(method, path, body, params)
        if status >= 300:
            data = data if isinstance(data, dict) else {}
            extra = {k: v for k, v in data.items() if k not in ("errcode", "error")}
            raise MatrixError(status, data.get("errcode", "M_UNKNOWN"),
                              data.get("error", f"internal call failed: {status}"), **extra)
        return data
