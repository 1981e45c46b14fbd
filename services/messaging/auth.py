"""Who may call the domain API: the holder of the homeserver's API token.

Invariants:
- Every request to the messaging API carries `Authorization: Bearer <api token>`, or is
  answered 401 `M_MISSING_TOKEN` (no token) / `M_UNKNOWN_TOKEN` (another one), before
  any route runs. Open without a token: `/health`, the API's own documentation (`/docs`,
  `/openapi.json`) and the dashboard's page and static files (`/dashboard...`, which
  then asks for the token and sends it with every data request).
- The token is `settings.api_token` (`FEDSTACK_API_TOKEN`) when set; otherwise the
  content of `<data_dir>/api_token`, created on first start like the internal secret and
  re-read when the file changes (`fedstack rotate-token` writes a new one: no restart).
- Tokens are compared in constant time.
"""
from __future__ import annotations

import hmac
import os
import time
from pathlib import Path

import orjson

from shared.settings import Settings, ensure_secret_file

API_TOKEN_FILE = "api_token"
OPEN_PATHS = ("/health", "/docs", "/docs/oauth2-redirect", "/openapi.json")
OPEN_PREFIXES = ("/dashboard",)


class TokenSource:
    """The current API token: the setting, or the data directory's file (re-read when its
    modification time changes, looked at no more than once a second)."""

    def __init__(self, settings: Settings):
        self.fixed = settings.api_token
        self.path = Path(settings.data_dir) / API_TOKEN_FILE
        self._value = b""
        self._mtime = None
        self._checked = 0.0
        if not self.fixed:
            ensure_secret_file(settings.data_dir, API_TOKEN_FILE)

    def current(self) -> bytes:
        if self.fixed:
            return self.fixed.encode()
        now = time.monotonic()
        if now - self._checked >= 1.0:
            self._checked = now
            try:
                mtime = os.stat(self.path).st_mtime_ns
                if mtime != self._mtime:
                    self._value, self._mtime = self.path.read_bytes().strip(), mtime
            except OSError:
                pass   # a file being replaced: keep the token we had
        return self._value


def _refuse(errcode: str, error: str) -> tuple[dict, dict]:
    return ({"type": "http.response.start", "status": 401,
             "headers": [(b"content-type", b"application/json"),
                         (b"www-authenticate", b'Bearer realm="fedstack"')]},
            {"type": "http.response.body", "body": orjson.dumps({"errcode": errcode, "error": error})})


class ApiTokenMiddleware:
    """Pure ASGI middleware enforcing the module's invariants."""

    def __init__(self, app, tokens: TokenSource):
        self.app = app
        self.tokens = tokens

    @classmethod
    def openapi_responses(cls, path: str) -> dict[str, str]:
        """What the app's OpenAPI document lists for `path` (shared.api_doc)."""
        if _is_open(path):
            return {}
        return {"401": "No API token (M_MISSING_TOKEN) or another one (M_UNKNOWN_TOKEN): "
                       "send Authorization: Bearer <api token>"}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not _is_open(scope["path"]):
            given = _bearer(scope["headers"])
            if given is None:
                start, body = _refuse("M_MISSING_TOKEN", "an API token is required "
                                      "(Authorization: Bearer <token>)")
            elif not hmac.compare_digest(given, self.tokens.current() or b"\0"):
                start, body = _refuse("M_UNKNOWN_TOKEN", "unknown API token")
            else:
                return await self.app(scope, receive, send)
            await send(start)
            await send(body)
            return
        await self.app(scope, receive, send)


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def _bearer(headers) -> bytes | None:
    for k, v in headers:
        if k == b"authorization":
            scheme, _, token = v.partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" and token.strip() else None
    return None


# --------------------------------------------------------------------------- callbacks

SIGNATURE_HEADER = "x-fedstack-signature"


def callback_signature(hs_token: str, body: bytes, timestamp: int) -> str:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256 over "<t>." + body, keyed by the hs_token>`:
    a receiver recomputes it to know the body is ours and unaltered, and may refuse old
    timestamps to refuse replays."""
    mac = hmac.new(hs_token.encode(), str(timestamp).encode() + b"." + body, "sha256")
    return f"t={timestamp},v1={mac.hexdigest()}"


def callback_headers(hs_token: str | None, body: bytes) -> dict[str, str]:
    """Headers of one callback POST: JSON, and (for subscriptions with a token: all made
    since tokens exist) the bearer token and the signature of the body."""
    headers = {"content-type": "application/json"}
    if hs_token:
        headers["authorization"] = f"Bearer {hs_token}"
        headers[SIGNATURE_HEADER] = callback_signature(hs_token, body, int(time.time()))
    return headers
