"""Server names as the Matrix spec's grammar defines them (appendix "Server name").

`server_name = hostname [":" port]`; hostname is an IPv4 dotted quad, an IPv6 address in
brackets, or a DNS name of `[A-Za-z0-9.-]` (at most 255 characters); port 1-5 digits,
1-65535. Anything else (a path, userinfo, a scheme, spaces, an empty part) is not a server
name: `parse_server_name` raises InvalidServerName, never returns a guess.
"""
from __future__ import annotations

import ipaddress
import re

DEFAULT_PORT = 8448
_DNS_NAME = re.compile(r"[A-Za-z0-9.-]{1,255}")
_IPV4ISH = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}")
_IPV6CHARS = re.compile(r"[0-9A-Fa-f:.]{2,45}")


class InvalidServerName(ValueError):
    pass


def parse_server_name(name: str) -> tuple[str, int | None]:
    """(hostname, port or None). An IPv6 hostname is returned without its brackets."""
    if not isinstance(name, str):
        raise InvalidServerName("a server name is a string")
    if name.startswith("["):
        inside, sep, rest = name[1:].partition("]")
        if not sep or not _IPV6CHARS.fullmatch(inside):
            raise InvalidServerName(f"{name!r}: not a bracketed IPv6 address")
        try:
            ipaddress.IPv6Address(inside)
        except ValueError:
            raise InvalidServerName(f"{name!r}: not an IPv6 address") from None
        return inside, _port(name, rest)
    host, sep, port = name.partition(":")
    if not _DNS_NAME.fullmatch(host):
        raise InvalidServerName(f"{name!r}: not a server name (hostname[:port])")
    if _IPV4ISH.fullmatch(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise InvalidServerName(f"{name!r}: not an IPv4 address") from None
    return host, _port(name, sep + port)


def _port(name: str, rest: str) -> int | None:
    if not rest:
        return None
    digits = rest[1:]
    if rest[0] != ":" or not (1 <= len(digits) <= 5 and digits.isascii() and digits.isdigit()):
        raise InvalidServerName(f"{name!r}: bad port")
    port = int(digits)
    if not 1 <= port <= 65535:
        raise InvalidServerName(f"{name!r}: port {port} out of range")
    return port


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False
