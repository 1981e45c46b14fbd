"""Resolving server names: where to connect for a destination, and as whom.

The spec's steps ("Resolving server names"), in order:
1. IP literal, with or without port: that IP, the port or 8448. Host: the server name as
   written; the certificate must be valid for the IP (no SNI).
2. DNS name with a port: its A/AAAA addresses. Host `name:port`; certificate and SNI: name.
3. Otherwise `/.well-known/matrix/server` (`well_known.py`). A delegation `dhost[:dport]`:
   an IP literal as in 1 (Host: the delegated name as written); `dhost:dport` as in 2; else
   SRV `_matrix-fed._tcp.dhost`, then the deprecated `_matrix._tcp.dhost`, else
   `dhost:8448`, with Host, SNI and certificate name `dhost` (never the SRV target).
4. No delegation: SRV `_matrix-fed._tcp.name`, then `_matrix._tcp.name`, then
   `name:8448`; Host, SNI and certificate name always `name`.

Invariants:
- A Route only says where to try (targets, in order: SRV by RFC 2782 priority and weight)
  and what to present (Host, SNI, certificate name); which addresses may be connected to
  is decided per address by the caller (`addresses.AddressPolicy`).
- SRV answers are cached by their TTL (`dns_lookup.py`), .well-known by its cache headers;
  a destination contacted again within those makes no DNS query and no .well-known fetch.
- An SRV record set naming only "." (service decidedly not available, RFC 2782) makes
  the destination unreachable; it does not fall through to port 8448.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from services.transport.dns_lookup import DnsLookup, LookupFailed, Srv
from services.transport.servername import DEFAULT_PORT, is_ip_literal, parse_server_name
from services.transport.well_known import WellKnownCache

SRV_SERVICES = ("_matrix-fed._tcp.", "_matrix._tcp.")


class DiscoveryFailed(Exception):
    """No route: `steps` are those taken before the failure (check-federation prints them)."""

    def __init__(self, message: str, steps: tuple[str, ...] = ()):
        super().__init__(message)
        self.steps = steps


@dataclass(frozen=True)
class Route:
    server_name: str
    host_header: str                         # the Host header every request carries
    tls_name: str                            # the name (or IP) the certificate must match
    sni: str | None                          # None for an IP: no SNI is sent
    targets: tuple[tuple[str, int], ...]     # (host or IP, port), in the order to try
    steps: tuple[str, ...] = field(default=(), compare=False)   # how it was found


def order_srv(records: list[Srv], rng: random.Random | None = None) -> list[Srv]:
    """RFC 2782 order: ascending priority; within a priority, a weighted random draw
    (weight-0 records first in the running sum, so they are chosen least often)."""
    rng = rng or random.SystemRandom()
    out: list[Srv] = []
    for prio in sorted({r.priority for r in records}):
        group = sorted((r for r in records if r.priority == prio), key=lambda r: r.weight != 0)
        while group:
            total = sum(r.weight for r in group)
            pick = rng.randint(0, total)
            running = 0
            for i, r in enumerate(group):
                running += r.weight
                if running >= pick:
                    out.append(group.pop(i))
                    break
    return out


def direct_route(server_name: str, written: str, steps: tuple = ()) -> Route | None:
    """Steps 1 and 2 (3.1 and 3.2 for a delegated name `written`): no look-up needed. The
    Host header is the name as written (`ip[:port]`, or `host:port`)."""
    host, port = parse_server_name(written)
    if is_ip_literal(host):
        return Route(server_name, written, host, None, ((host, port or DEFAULT_PORT),), steps)
    if port is not None:
        return Route(server_name, written, host, host, ((host, port),), steps)
    return None


class Discovery:
    DIRECT_CACHE = 10_000       # IP-literal and name:port routes kept (they never change)

    def __init__(self, dns: DnsLookup, well_known: WellKnownCache):
        self.dns = dns
        self.well_known = well_known
        self._direct: dict[str, Route] = {}

    async def route(self, server_name: str) -> Route:
        """The Route for `server_name`; InvalidServerName or DiscoveryFailed if none."""
        found = self._direct.get(server_name)
        if found is not None:
            return found
        found = direct_route(server_name, server_name)
        if found is not None:
            if len(self._direct) < self.DIRECT_CACHE:
                self._direct[server_name] = found
            return found
        host, _ = parse_server_name(server_name)
        wk = await self.well_known.lookup(host)
        steps = (f".well-known of {host}: {wk.note}",)
        if wk.server is not None:
            found = direct_route(server_name, wk.server, steps)
            if found is not None:
                return found
            return await self._srv_route(server_name, parse_server_name(wk.server)[0], steps)
        return await self._srv_route(server_name, host, steps)

    async def _srv_route(self, server_name: str, host: str, steps: tuple) -> Route:
        for service in SRV_SERVICES:
            try:
                records = await self.dns.srv(service + host)
            except LookupFailed as exc:
                raise DiscoveryFailed(f"SRV look-up failed: {exc}", steps) from exc
            if not records:
                steps += (f"SRV {service}{host}: none",)
                continue
            usable = [r for r in records if r.target not in (".", "")]
            if not usable:
                raise DiscoveryFailed(f"SRV {service}{host}: service not available (\".\")",
                                      steps)
            ordered = order_srv(usable)
            steps += (f"SRV {service}{host}: " + ", ".join(
                f"{r.target}:{r.port} (priority {r.priority}, weight {r.weight})"
                for r in ordered),)
            return Route(server_name, host, host, host,
                         tuple((r.target, r.port) for r in ordered), steps)
        steps += (f"no SRV: {host}:{DEFAULT_PORT}",)
        return Route(server_name, host, host, host, ((host, DEFAULT_PORT),), steps)
