"""Every request this homeserver makes to another server: X-Matrix signed, over HTTPS.

Invariants:
- Destinations are named `host[:port]`; an IP literal or a name with a port is contacted
  directly (no .well-known or SRV look-up: spec rules 1 and 2); a bare name uses port 8448.
- Requests to loopback, private or link-local addresses are refused unless
  `allow_private_destinations` is set.
- A failure to get an HTTP answer, or a request that cannot be made (a destination, path
  or body no request can be made of), is reported as status 0 with an error, never raised.
- Response bodies over `max_response_bytes` (settings) are refused as soon as their
  declared Content-Length says so, or cut off once that much was read; either is an error.
- Every request has a total deadline (the timeout): a remote that hangs, or drips its
  answer a byte at a time, is given up on.
- The path is sent exactly as signed (no re-quoting), so the X-Matrix signature holds.

Requests go out with aiohttp (TLS, a pool per destination, response size caps; more
requests per CPU-second than httpx, and the transport process then loads no httpx; internal
hops use the smaller `shared.http1`). In-process tests hand in httpx transports for their
fake destinations; those destinations alone are reached through httpx.
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlencode

import aiohttp
import orjson
from yarl import URL

from shared.crypto import SigningKey
from shared.xmatrix import sign_request

MAX_RESPONSE_BYTES = 64 * 1024 * 1024


def split_server_name(server_name: str) -> tuple[str, int]:
    if server_name.startswith("["):
        host, _, rest = server_name[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 8448
        return host, port
    host, sep, port = server_name.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return server_name, 8448


def _is_private(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    return addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_reserved \
        or addr.is_multicast or addr.is_unspecified


class FederationClient:
    def __init__(self, settings, key: SigningKey, *, transports: dict | None = None):
        self.server_name = settings.server_name
        self.key = key
        self.allow_private = settings.allow_private_destinations
        self.timeout = settings.federation_timeout_s
        self.max_response_bytes = getattr(settings, "max_response_bytes", MAX_RESPONSE_BYTES)
        self.verify_tls = settings.verify_tls
        # `transports` maps a server name to an httpx transport (in-process tests only).
        self._transports = transports or {}
        self._session: aiohttp.ClientSession | None = None   # made inside the running loop
        self._per_dest: dict = {}                            # httpx clients (tests)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
        for c in self._per_dest.values():
            await c.aclose()

    def _session_for_loop(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=200, ssl=None if self.verify_tls else False),
                skip_auto_headers=("User-Agent",))
        return self._session

    async def _check_destination(self, destination: str) -> str | None:
        if self.allow_private or destination in self._transports:
            return None
        host, port = split_server_name(destination)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            return f"cannot resolve {host}: {exc}"
        if any(_is_private(info[4][0]) for info in infos):
            return f"{destination} resolves to a private address; refused"
        return None

    async def request(self, destination: str, method: str, path: str, *, query=(),
                      body=None, timeout_s=None, sign: bool = True) -> dict:
        """One request; returns {"status", "body", "error"} (status 0: no HTTP answer)."""
        if destination == self.server_name:
            return {"status": 0, "body": None, "error": "refusing to send to ourselves"}
        try:   # a name, path or body no request can be made of is an error, not an exception
            refused = await self._check_destination(destination)
            if refused:
                return {"status": 0, "body": None, "error": refused}
            uri = path + ("?" + urlencode(list(query)) if query else "")
            headers = {}
            content = None
            if body is not None:
                content = orjson.dumps(body)
                headers["content-type"] = "application/json"
            if sign:
                headers["authorization"] = sign_request(method, uri, self.server_name, destination,
                                                        self.key, body)
            host, port = split_server_name(destination)
        except (ValueError, TypeError) as exc:   # incl. CanonicalJSONError, orjson's errors
            return {"status": 0, "body": None, "error": f"cannot make the request: {exc}"}
        hostpart = f"[{host}]" if ":" in host else host
        url = f"https://{hostpart}:{port}{uri}"
        timeout = timeout_s or self.timeout
        cap = self.max_response_bytes
        too_large = {"status": 0, "body": None, "error": f"response too large (over {cap} bytes)"}
        try:
            async with asyncio.timeout(timeout):
                if destination in self._transports:
                    status, data = await self._via_httpx(destination, method, url, content, headers,
                                                         timeout, cap)
                else:
                    status, data = await self._via_aiohttp(method, url, content, headers, cap)
        except _TooLarge:
            return too_large
        except TimeoutError:
            return {"status": 0, "body": None, "error": f"timed out after {timeout}s"}
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return {"status": 0, "body": None, "error": f"{type(exc).__name__}: {exc}"}
        try:
            parsed = orjson.loads(data) if data else None
        except orjson.JSONDecodeError:
            return {"status": status, "body": None, "error": "response is not JSON"}
        return {"status": status, "body": parsed, "error": None}

    async def _via_aiohttp(self, method, url, content, headers, cap) -> tuple[int, bytes]:
        async with self._session_for_loop().request(method, URL(url, encoded=True), data=content,
                                                    headers=headers) as resp:
            if resp.content_length is not None and resp.content_length > cap:
                raise _TooLarge()
            data = bytearray()
            async for chunk in resp.content.iter_chunked(65536):
                data += chunk
                if len(data) > cap:
                    raise _TooLarge()
            return resp.status, bytes(data)

    async def _via_httpx(self, destination, method, url, content, headers, timeout, cap):
        import httpx
        client = self._per_dest.get(destination)
        if client is None:
            client = self._per_dest[destination] = httpx.AsyncClient(
                transport=self._transports.get(destination), timeout=self.timeout)
        try:
            async with client.stream(method, url, content=content, headers=headers,
                                     timeout=timeout) as resp:
                data = bytearray()
                async for chunk in resp.aiter_bytes():
                    data += chunk
                    if len(data) > cap:
                        raise _TooLarge()
                return resp.status_code, bytes(data)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise OSError(f"{type(exc).__name__}: {exc}") from exc

    async def fetch_server_keys(self, server_name: str) -> dict:
        resp = await self.request(server_name, "GET", "/_matrix/key/v2/server", sign=False,
                                  timeout_s=10)
        if resp["status"] != 200:
            raise RuntimeError(f"key fetch from {server_name} failed: {resp['status']} {resp['error']}")
        return resp["body"]


class _TooLarge(Exception):
    pass
