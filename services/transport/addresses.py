"""Which IP addresses outbound federation may connect to (the SSRF guard).

Invariants:
- Checked on the address actually connected to, after .well-known and SRV were followed
  and names were resolved, so neither a delegation nor a DNS answer can point a request
  at an internal service.
- Refused unless `allow_private_destinations`: loopback, private, link-local, CGNAT
  (100.64/10), multicast, reserved and unspecified addresses, and IPv4-mapped IPv6 forms
  of them. `ip_range_allowlist` (comma-separated networks, like Synapse's
  ip_range_whitelist) lets chosen ranges through all the same.
"""
from __future__ import annotations

import ipaddress

_EXTRA_REFUSED = [ipaddress.ip_network(n) for n in (
    "100.64.0.0/10", "192.0.0.0/24", "198.18.0.0/15", "64:ff9b::/96", "fec0::/10")]


def ip_of(host: str):
    """The IP address `host` spells (brackets allowed for IPv6), or None for a DNS name."""
    try:
        return ipaddress.ip_address(host.strip("[]") if host.startswith("[") else host)
    except ValueError:
        return None


def is_private(addr) -> bool:
    if isinstance(addr, str):
        addr = ipaddress.ip_address(addr)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return (addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_reserved
            or addr.is_multicast or addr.is_unspecified
            or any(addr in net for net in _EXTRA_REFUSED if net.version == addr.version))


class AddressPolicy:
    def __init__(self, allow_private: bool, allowlist: str = ""):
        self.allow_private = allow_private
        self.allowlist = [ipaddress.ip_network(n.strip(), strict=False)
                          for n in allowlist.split(",") if n.strip()]

    def refuses(self, ip: str) -> bool:
        """True if a connection to `ip` must not be made."""
        if self.allow_private:
            return False
        addr = ipaddress.ip_address(ip)
        if any(addr.version == net.version and addr in net for net in self.allowlist):
            return False
        return is_private(addr)
