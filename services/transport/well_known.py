"""Fetching and caching `/.well-known/matrix/server` (spec step 3 of resolving server names).

`GET https://<hostname>/.well-known/matrix/server` (port 443), through the same connector
as every federation request: our resolver, the SSRF guard on the address connected to, TLS verified
for <hostname>.

Invariants:
- Redirects are followed (https only, at most MAX_REDIRECTS; a URL seen before is a loop
  and refused); the body is capped at MAX_BYTES; the whole fetch, redirects included, has
  TIMEOUT_S. A JSON object whose `m.server` is a valid server name (no path, userinfo or
  out-of-range port; not an IP literal the SSRF guard refuses) is a delegation; anything
  else is "no delegation" (spec: then go on to SRV), never a guess.
- A delegation is cached by the answer's Cache-Control max-age (or Expires): DEFAULT_CACHE_S
  without either, clamped to [well_known_min_cache_s (5 min), MAX_CACHE_S].
- A failure is cached with an exponential backoff (spec: errors cached "for up to an hour",
  backing off on repeated failures): well_known_min_cache_s (5 min, at least 1 s) after
  the first, doubling with each consecutive failure of the name, at most
  well_known_failure_cache_s (1 h). A failure to get any answer (network error,
  timeout, 5xx) keeps serving a previous delegation meanwhile (stale); a definite answer
  (4xx, invalid body) replaces it. Nothing invalid is ever cached as a delegation.
- Concurrent look-ups of one name share one fetch; callers' own deadlines do not cancel it.
"""
from __future__ import annotations

import asyncio
import email.utils
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import orjson

from services.transport.servername import InvalidServerName, is_ip_literal, parse_server_name

PATH = "/.well-known/matrix/server"
MAX_BYTES = 50 * 1024
MAX_REDIRECTS = 5
TIMEOUT_S = 5.0
DEFAULT_CACHE_S = 24 * 3600.0
MAX_CACHE_S = 48 * 3600.0
REDIRECTS = (301, 302, 303, 307, 308)


class Unreachable(Exception):
    """The getter got no HTTP answer (connection, TLS, timeout)."""


class TooLarge(Exception):
    """The answer was longer than the cap."""


class _Invalid(Exception):
    """A definite answer that is not a delegation."""


@dataclass
class Result:
    server: str | None          # the delegated server name, or None: no delegation
    note: str                   # what was found (for `check-federation` and logs)
    expires: float = 0.0        # monotonic
    failures: int = 0


def cache_period(headers: dict, min_s: float) -> float:
    """Seconds to keep a delegation, from Cache-Control max-age or Expires."""
    period = DEFAULT_CACHE_S
    directives = {}
    for part in headers.get("cache-control", "").split(","):
        k, _, v = part.partition("=")
        directives[k.strip().lower()] = v.strip().strip('"')
    if "no-store" in directives or "no-cache" in directives:
        period = 0.0
    elif "max-age" in directives:
        try:
            period = float(int(directives["max-age"]))
        except ValueError:
            pass
    elif "expires" in headers:
        try:
            period = email.utils.parsedate_to_datetime(headers["expires"]).timestamp() - time.time()
        except (TypeError, ValueError):
            period = 0.0
    return min(MAX_CACHE_S, max(min_s, period))


class WellKnownCache:
    def __init__(self, get, *, port: int = 443, min_cache_s: float = 300.0,
                 failure_cache_s: float = 3600.0, refuses_ip=lambda ip: False):
        """`get(host, port, path) -> (status, headers (lower-case keys), body)`, raising
        Unreachable or TooLarge."""
        self._get = get
        self.port = port
        self.min_cache_s = min_cache_s
        self.failure_cache_s = failure_cache_s
        self.refuses_ip = refuses_ip
        self.fetches = 0                           # fetches started (tests, check-federation)
        self._cache: dict[str, Result] = {}
        self._pending: dict[str, asyncio.Future] = {}

    async def lookup(self, hostname: str) -> Result:
        hit = self._cache.get(hostname)
        if hit is not None and hit.expires > time.monotonic():
            return hit
        fut = self._pending.get(hostname)
        if fut is None:
            fut = asyncio.ensure_future(self._refresh(hostname, hit))
            self._pending[hostname] = fut
            fut.add_done_callback(lambda _f: self._pending.pop(hostname, None))
        return await asyncio.shield(fut)

    async def _refresh(self, hostname: str, old: Result | None) -> Result:
        self.fetches += 1
        try:
            server, period = await self._fetch(hostname)
            result = Result(server, f"delegates to {server}", time.monotonic() + period)
        except (Unreachable, _Invalid) as exc:
            failures = (old.failures if old else 0) + 1
            first = max(1.0, self.min_cache_s)
            backoff = min(self.failure_cache_s, first * 2 ** min(failures - 1, 30))
            keep = old.server if old and isinstance(exc, Unreachable) else None
            note = f"no valid .well-known ({exc})" + (f"; still using {keep}" if keep else "")
            result = Result(keep, note, time.monotonic() + backoff, failures)
        self._cache[hostname] = result
        return result

    async def _fetch(self, hostname: str) -> tuple[str, float]:
        host = f"[{hostname}]" if ":" in hostname else hostname
        url = f"https://{host}" + ("" if self.port == 443 else f":{self.port}") + PATH
        seen = {url}
        try:
            async with asyncio.timeout(TIMEOUT_S):
                for _ in range(MAX_REDIRECTS + 1):
                    status, headers, body = await self._get_url(url)
                    if status not in REDIRECTS:
                        return self._parse(status, headers, body)
                    url = self._next(url, headers.get("location"), seen)
        except TimeoutError:
            raise Unreachable(f"timed out after {TIMEOUT_S}s") from None
        raise _Invalid(f"more than {MAX_REDIRECTS} redirects")

    async def _get_url(self, url: str):
        parts = urlsplit(url)
        try:
            port = parts.port or 443
        except ValueError:
            raise _Invalid(f"bad port in {url}") from None
        if parts.scheme != "https" or not parts.hostname or parts.username is not None:
            raise _Invalid(f"refusing to fetch {url}")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            return await self._get(parts.hostname, port, path)
        except TooLarge:
            raise _Invalid(f"answer larger than {MAX_BYTES} bytes") from None

    @staticmethod
    def _next(url: str, location: str | None, seen: set) -> str:
        if not location:
            raise _Invalid("redirect without a Location")
        nxt = urljoin(url, location)
        if nxt in seen:
            raise _Invalid(f"redirect loop at {nxt}")
        seen.add(nxt)
        return nxt

    def _parse(self, status: int, headers: dict, body: bytes) -> tuple[str, float]:
        if status >= 500:
            raise Unreachable(f"status {status}")
        if status != 200:
            raise _Invalid(f"status {status}")
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise _Invalid("not JSON") from None
        server = doc.get("m.server") if isinstance(doc, dict) else None
        if not isinstance(server, str):
            raise _Invalid("no m.server string")
        try:
            host, _port = parse_server_name(server)
        except InvalidServerName as exc:
            raise _Invalid(f"m.server: {exc}") from None
        if is_ip_literal(host) and self.refuses_ip(host):
            raise _Invalid(f"m.server {server} is a private address; refused")
        return server, cache_period(headers, self.min_cache_s)
