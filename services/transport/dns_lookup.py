"""DNS look-ups for server discovery: SRV and A/AAAA records, cached by their TTL.

One setting chooses the nameserver (`resolver`, "HOST:PORT"; FEDSTACK_RESOLVER). With it,
SRV and A/AAAA queries all go to that nameserver through dnspython. Without it ("", the
default) SRV queries go through dnspython to the system's nameservers (/etc/resolv.conf)
and addresses come from the system's own resolver (getaddrinfo: /etc/hosts, nsswitch),
which gives no TTL, so they are kept SYSTEM_TTL_S.

Invariants:
- An answer (a negative one too: NXDOMAIN or no record of that type) is kept until its
  TTL ends (negative: the SOA's, RFC 2308; NEGATIVE_TTL_S without one), so a destination
  contacted again within the TTL costs no query.
- A refresh that fails (timeout, SERVFAIL, no nameserver reachable) serves the stale
  answer and tries again STALE_RETRY_S later; with nothing stale it raises LookupFailed.
- Concurrent look-ups of one name and type share a single query.
"""
from __future__ import annotations

import asyncio
import socket
import time
from typing import NamedTuple

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

LIFETIME_S = 5.0          # one look-up, retries included
SYSTEM_TTL_S = 60.0       # addresses from getaddrinfo (no TTL known)
NEGATIVE_TTL_S = 60.0     # a negative answer without an SOA
STALE_RETRY_S = 30.0      # after a failed refresh, the stale answer is served this long


class LookupFailed(Exception):
    """No answer could be had (and nothing stale was kept)."""


class Srv(NamedTuple):
    priority: int
    weight: int
    port: int
    target: str           # without the trailing dot; "" for "." (service not offered)


def parse_nameserver(value: str) -> tuple[str, int]:
    """"HOST:PORT", "HOST" (port 53) or "[v6]:PORT" -> (host, port)."""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 53
    if value.count(":") == 1:
        host, port = value.split(":")
        return host, int(port)
    return value, 53


def _negative_ttl(response) -> float:
    for rrset in getattr(response, "authority", []) or []:
        if rrset.rdtype == dns.rdatatype.SOA:
            return float(min(rrset.ttl, rrset[0].minimum))
    return NEGATIVE_TTL_S


class DnsLookup:
    def __init__(self, nameserver: str = "", lifetime: float = LIFETIME_S):
        self.nameserver = nameserver
        self.lifetime = lifetime
        self.queries = 0                      # queries sent (a cache hit sends none)
        self._resolver = None
        self._cache: dict[tuple, tuple[float, object]] = {}
        self._pending: dict[tuple, asyncio.Future] = {}

    def _dns(self) -> dns.asyncresolver.Resolver | None:
        """The dnspython resolver, None when the system has no nameserver configured."""
        if self._resolver is None:
            if self.nameserver:
                r = dns.asyncresolver.Resolver(configure=False)
                host, port = parse_nameserver(self.nameserver)
                r.nameservers = [host]
                r.port = port
            else:
                try:
                    r = dns.asyncresolver.Resolver()
                except dns.resolver.NoResolverConfiguration:
                    return None
            r.lifetime = self.lifetime
            self._resolver = r
        return self._resolver

    async def srv(self, name: str) -> list[Srv]:
        """The SRV records of `name` ([] if it has none)."""
        return await self._cached(("SRV", name), lambda: self._query(name, "SRV"))

    async def addresses(self, host: str) -> list[str]:
        """IPv6 then IPv4 addresses of `host` ([] if it has none)."""
        if self.nameserver:
            return await self._cached(("ADDR", host), lambda: self._both(host))
        return await self._cached(("ADDR", host), lambda: self._system(host))

    async def _cached(self, key, load):
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        fut = self._pending.get(key)
        if fut is None:
            fut = asyncio.ensure_future(self._refresh(key, load, hit))
            self._pending[key] = fut
            fut.add_done_callback(lambda _f: self._pending.pop(key, None))
        return await asyncio.shield(fut)

    async def _refresh(self, key, load, stale):
        try:
            value, ttl = await load()
        except LookupFailed:
            if stale is None:
                raise
            self._cache[key] = (time.monotonic() + STALE_RETRY_S, stale[1])
            return stale[1]
        self._cache[key] = (time.monotonic() + ttl, value)
        return value

    async def _both(self, host: str):
        """AAAA and A together; one of them failing still gives the other's addresses
        (kept STALE_RETRY_S at most, so the failed half is asked again soon)."""
        results = await asyncio.gather(self._query(host, "AAAA"), self._query(host, "A"),
                                       return_exceptions=True)
        got = [r for r in results if not isinstance(r, BaseException)]
        if not got:
            raise results[0]
        ttl = min(t for _v, t in got) if len(got) == 2 else min(STALE_RETRY_S, got[0][1])
        return [ip for v, _t in got for ip in v], ttl

    async def _query(self, name: str, rdtype: str):
        """(records, ttl) for one query; LookupFailed when no answer could be had."""
        resolver = self._dns()
        if resolver is None:
            return [], NEGATIVE_TTL_S
        self.queries += 1
        try:
            answer = await resolver.resolve(name, rdtype, raise_on_no_answer=False,
                                            search=False)
        except dns.resolver.NXDOMAIN as exc:
            return [], _negative_ttl(exc.response(exc.qnames()[0]))
        except (dns.exception.DNSException, OSError) as exc:
            raise LookupFailed(f"{rdtype} {name}: {type(exc).__name__}: {exc}") from exc
        ttl = max(0.0, answer.expiration - time.time())
        if answer.rrset is None:
            return [], ttl
        if rdtype == "SRV":
            return [Srv(r.priority, r.weight, r.port, r.target.to_text(omit_final_dot=True))
                    for r in answer.rrset], ttl
        return [r.address for r in answer.rrset], ttl

    async def _system(self, host: str):
        self.queries += 1
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None,
                                                                 type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None)):
                return [], SYSTEM_TTL_S
            raise LookupFailed(f"{host}: {exc}") from exc
        except OSError as exc:
            raise LookupFailed(f"{host}: {exc}") from exc
        ips = []
        for family in (socket.AF_INET6, socket.AF_INET):
            ips += [i[4][0] for i in infos if i[0] == family and i[4][0] not in ips]
        return ips, SYSTEM_TTL_S
