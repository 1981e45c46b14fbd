"""Every request this homeserver makes to another server: X-Matrix signed, over HTTPS.

Invariants:
- A destination is resolved as the spec says (`discovery.py`: IP literal, name:port,
  .well-known, SRV, name:8448); each request carries the Host header, SNI and certificate
  check of its route. The X-Matrix `destination` is always the server name itself.
- Every target of the route (SRV records in RFC 2782 order, each address of each) is tried
  in turn while connecting fails (refused, unreachable, TLS or certificate error, connect
  timeout); the first connection made carries the request, and its answer is the answer.
- No connection is made to an address the SSRF guard refuses (`addresses.py`: loopback,
  private, link-local... unless `allow_private_destinations` or `ip_range_allowlist`),
  checked on the address connected to, after .well-known and SRV. Redirects are not
  followed (a federation answer is not a redirect; following one would skip the guard).
- A failure to get an HTTP answer, or a request that cannot be made (a destination that is
  not a server name, a path or body no request can be made of), is reported as status 0
  with an error, never raised.
- Response bodies over `max_response_bytes` (settings) are refused as soon as their
  declared Content-Length says so, or cut off once that much was read; either is an error.
- Every request has a total deadline (the timeout), discovery included: a remote that
  hangs, or drips its answer a byte at a time, is given up on.
- The path is sent exactly as signed (no re-quoting), so the X-Matrix signature holds.

Requests go out with aiohttp (TLS, a pool per address and TLS name, response size caps;
more requests per CPU-second than httpx, and the transport process then loads no httpx;
internal hops use the smaller `shared.http1`). In-process tests hand in httpx transports
for their fake destinations; those destinations alone are reached through httpx, at
`https://host:port` as the name spells it (no discovery).
"""
from __future__ import annotations

import asyncio
from urllib.parse import urlencode

import aiohttp
import orjson
from yarl import URL

from services.transport import well_known as wk
from services.transport.addresses import AddressPolicy
from services.transport.discovery import Discovery, DiscoveryFailed, Route
from services.transport.dns_lookup import DnsLookup, LookupFailed
from services.transport.servername import InvalidServerName, is_ip_literal
from shared.canonical import dumps
from shared.crypto import SigningKey
from shared.tls import client_context
from shared.xmatrix import sign_request

MAX_RESPONSE_BYTES = 64 * 1024 * 1024
CONNECT_TIMEOUT_S = 10.0      # one address; the next target is tried after it


def split_server_name(server_name: str) -> tuple[str, int]:
    """host and port as a name spells them (8448 if none): the in-process tests' URLs."""
    if server_name.startswith("["):
        host, _, rest = server_name[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 8448
        return host, port
    host, sep, port = server_name.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return server_name, 8448


def _url(ip: str, port: int, uri: str) -> URL:
    host = f"[{ip}]" if ":" in ip else ip
    return URL(f"https://{host}:{port}{uri}", encoded=True)


class _Unreachable(Exception):
    pass


class FederationClient:
    def __init__(self, settings, key: SigningKey, *, transports: dict | None = None):
        self.server_name = settings.server_name
        self.key = key
        self.timeout = settings.federation_timeout_s
        self.max_response_bytes = getattr(settings, "max_response_bytes", MAX_RESPONSE_BYTES)
        self.verify_tls = settings.verify_tls
        self.ssl = client_context(settings.verify_tls, settings.ca_file)
        self.policy = AddressPolicy(settings.allow_private_destinations,
                                    settings.ip_range_allowlist)
        self.dns = DnsLookup(settings.resolver)
        self.well_known = wk.WellKnownCache(
            self._get_for_discovery, min_cache_s=settings.well_known_min_cache_s,
            failure_cache_s=settings.well_known_failure_cache_s, refuses_ip=self.policy.refuses)
        self.discovery = Discovery(self.dns, self.well_known)
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
                connector=aiohttp.TCPConnector(limit=200, ssl=self.ssl),
                timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S),
                skip_auto_headers=("User-Agent",))
        return self._session

    async def request(self, destination: str, method: str, path: str, *, query=(),
                      body=None, timeout_s=None, sign: bool = True) -> dict:
        """One request; returns {"status", "body", "error"} (status 0: no HTTP answer)."""
        if destination == self.server_name:
            return {"status": 0, "body": None, "error": "refusing to send to ourselves"}
        try:   # a name, path or body no request can be made of is an error, not an exception
            uri = path + ("?" + urlencode(list(query)) if query else "")
            headers = {}
            content = None
            if body is not None:
                content = dumps(body)   # orjson, or deeper than its 254 levels
                headers["content-type"] = "application/json"
            if sign:
                headers["authorization"] = sign_request(method, uri, self.server_name, destination,
                                                        self.key, body)
        except (ValueError, TypeError) as exc:   # incl. CanonicalJSONError, orjson's errors
            return {"status": 0, "body": None, "error": f"cannot make the request: {exc}"}
        timeout = timeout_s or self.timeout
        cap = self.max_response_bytes
        try:
            async with asyncio.timeout(timeout):
                if destination in self._transports:
                    host, port = split_server_name(destination)
                    hostpart = f"[{host}]" if ":" in host else host
                    status, data = await self._via_httpx(
                        destination, method, f"https://{hostpart}:{port}{uri}", content, headers,
                        timeout, cap)
                else:
                    route = await self.discovery.route(destination)
                    status, _h, data = await self.send(route, method, uri, content, headers, cap)
        except InvalidServerName as exc:
            return {"status": 0, "body": None, "error": f"not a server name: {exc}"}
        except _TooLarge:
            return {"status": 0, "body": None, "error": f"response too large (over {cap} bytes)"}
        except TimeoutError:
            return {"status": 0, "body": None, "error": f"timed out after {timeout}s"}
        except (DiscoveryFailed, _Unreachable) as exc:
            return {"status": 0, "body": None, "error": f"cannot reach {destination}: {exc}"}
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return {"status": 0, "body": None, "error": f"{type(exc).__name__}: {exc}"}
        try:
            parsed = orjson.loads(data) if data else None
        except orjson.JSONDecodeError:
            return {"status": status, "body": None, "error": "response is not JSON"}
        return {"status": status, "body": parsed, "error": None}

    async def send(self, route: Route, method: str, uri: str, content, headers: dict,
                   cap: int):
        """(status, headers, body) from the first target of `route` that can be connected
        to; _Unreachable (every attempt's error) if none can."""
        headers = {**headers, "Host": route.host_header}
        errors = []
        for host, port in route.targets:
            try:
                ips = [host] if is_ip_literal(host) else await self.dns.addresses(host)
            except LookupFailed as exc:
                errors.append(str(exc))
                continue
            if not ips:
                errors.append(f"{host} has no address")
            for ip in ips:
                if self.policy.refuses(ip):
                    errors.append(f"{host} is {ip}, a private address: refused")
                    continue
                try:
                    return await self._via_aiohttp(method, _url(ip, port, uri), content, headers,
                                                   cap, route.sni)
                except (aiohttp.ClientConnectorError, aiohttp.ServerTimeoutError) as exc:
                    errors.append(f"{ip}:{port}: {type(exc).__name__}: {exc}")
        raise _Unreachable("; ".join(errors))

    async def _get_for_discovery(self, host: str, port: int, path: str):
        """GET for `well_known.py`: https://host:port/path, Host and SNI `host`."""
        ip = is_ip_literal(host)
        hostpart = f"[{host}]" if ":" in host else host
        route = Route(host, hostpart if port == 443 else f"{hostpart}:{port}", host,
                      None if ip else host, ((host, port),))
        try:
            status, headers, data = await self.send(route, "GET", path, None, {}, wk.MAX_BYTES)
        except _TooLarge:
            raise wk.TooLarge() from None
        except (_Unreachable, aiohttp.ClientError, OSError, ValueError) as exc:
            raise wk.Unreachable(str(exc)) from exc
        return status, {k.lower(): v for k, v in headers.items()}, data

    async def _via_aiohttp(self, method, url, content, headers, cap, sni):
        async with self._session_for_loop().request(method, url, data=content, headers=headers,
                                                    server_hostname=sni,
                                                    allow_redirects=False) as resp:
            if resp.content_length is not None and resp.content_length > cap:
                raise _TooLarge()
            data = bytearray()
            async for chunk in resp.content.iter_chunked(65536):
                data += chunk
                if len(data) > cap:
                    raise _TooLarge()
            return resp.status, resp.headers, bytes(data)

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
