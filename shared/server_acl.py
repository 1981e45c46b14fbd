"""Room server ACLs (`m.room.server_acl`): which servers may take part in a room.

A pure matcher, built once from an ACL event's content and asked `allows(server_name)`.

Invariants (spec, m.room.server_acl and the glob-style matching appendix):
- Applied in order: an IP-literal server name (IPv4, or IPv6 in brackets) is denied when
  `allow_ip_literals` is `false` (any other value, or none, means true); then a name
  matching a `deny` entry is denied; then one matching an `allow` entry is allowed;
  anything else is denied. A missing or non-list `allow` is the empty list (deny all).
- The port of the server name is never considered: `evil.com:8448` is `evil.com`.
- Entries are globs: `*` any run of characters (also none), `?` exactly one; every
  other character is literal. Matching is of the whole name and case-insensitive (DNS
  names are). Entries that are not strings are ignored, as Synapse does.
- `allows` is memoised per server name (bounded), so the answer for a given origin
  costs one dict look-up after the first; a ServerAcl is immutable apart from that memo.
"""
from __future__ import annotations

import ipaddress

ACL_EVENT = "m.room.server_acl"
MEMO_MAX = 1024


def strip_port(server_name: str) -> str:
    """The host part of a server name: `[::1]:8448` -> `[::1]`, `a.b:80` -> `a.b`."""
    if server_name.startswith("["):
        end = server_name.find("]")
        return server_name[:end + 1] if end != -1 else server_name
    host, sep, port = server_name.rpartition(":")
    return host if sep and port.isdigit() else server_name


def is_ip_literal(host: str) -> bool:
    """An IPv4 address, or an IPv6 address in brackets (the server-name grammar)."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def glob_matches(glob: str, name: str) -> bool:
    """Whole-name glob match (`*`, `?`), both already lower-cased. Linear backtracking to
    the last `*` only (O(len(glob) * len(name)) at worst): a hostile ACL of many stars
    cannot make a regex engine backtrack exponentially."""
    g = n = 0
    star, mark = -1, 0
    while n < len(name):
        if g < len(glob) and (glob[g] == "?" or glob[g] == name[n]):
            g, n = g + 1, n + 1
        elif g < len(glob) and glob[g] == "*":
            star, mark = g, n
            g += 1
        elif star != -1:
            g, mark = star + 1, mark + 1
            n = mark
        else:
            return False
    while g < len(glob) and glob[g] == "*":
        g += 1
    return g == len(glob)


class _Entries:
    """The string entries of an allow or deny list: literal names in a set, globs apart."""

    def __init__(self, entries):
        entries = entries if isinstance(entries, list) else []
        names = [e.lower() for e in entries if isinstance(e, str)]
        self.literal = {e for e in names if "*" not in e and "?" not in e}
        self.globs = list(dict.fromkeys(e for e in names if e not in self.literal))

    def match(self, host: str) -> bool:
        return host in self.literal or any(glob_matches(g, host) for g in self.globs)


class ServerAcl:
    def __init__(self, content: dict):
        content = content if isinstance(content, dict) else {}
        self.allow_ip_literals = content.get("allow_ip_literals") is not False
        self._allow = _Entries(content.get("allow"))
        self._deny = _Entries(content.get("deny"))
        self._memo: dict[str, bool] = {}

    def allows(self, server_name: str) -> bool:
        hit = self._memo.get(server_name)
        if hit is None:
            hit = self._decide(strip_port(server_name).lower())
            if len(self._memo) >= MEMO_MAX:
                self._memo.clear()
            self._memo[server_name] = hit
        return hit

    def _decide(self, host: str) -> bool:
        if not self.allow_ip_literals and is_ip_literal(host):
            return False
        if self._deny.match(host):
            return False
        return self._allow.match(host)
