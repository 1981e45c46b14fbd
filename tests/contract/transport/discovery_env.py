"""What the discovery tests share: a FederationClient pointed at the session's DNS server
and trusting the test CA (TLS verification on), and sites it starts and stops."""
from __future__ import annotations

from services.transport.outbound import FederationClient
from shared.crypto import SigningKey
from shared.settings import Settings
from tests.fakes.sites import Listener, Site

US = "us.fedstack.test"
VERSION = "/_matrix/federation/v1/version"
WELL_KNOWN = "/.well-known/matrix/server"


class Env:
    def __init__(self, dns, ca, net, tmp_path):
        self.dns, self.ca, self.net, self.tmp = dns, ca, net, tmp_path
        self._started: list = []
        self._clients: list[FederationClient] = []

    def settings(self, **overrides) -> Settings:
        values = dict(server_name=US, data_dir=str(self.tmp), resolver=self.dns.address,
                      ca_file=self.ca.bundle, verify_tls=True, allow_private_destinations=False,
                      ip_range_allowlist=self.net.allowlist, federation_timeout_s=15)
        values.update(overrides)
        return Settings(**values)

    def client(self, **overrides) -> FederationClient:
        c = FederationClient(self.settings(**overrides), SigningKey.generate())
        self._clients.append(c)
        return c

    async def site(self, ip: str, port: int, *cert_names: str, label: str = "") -> Site:
        s = await Site(self.ca, ip, port, *cert_names, label=label).start()
        self._started.append(s)
        return s

    async def well_known(self, name: str, m_server, headers=None) -> Site:
        """A .well-known site for `name` (its A record, port 443, a certificate for it)."""
        ip = self.net.ip()
        self.dns.add(name, "A", ip)
        site = await self.site(ip, 443, name, label="well-known")
        body = m_server if isinstance(m_server, (bytes, dict)) else {"m.server": m_server}
        site.routes[WELL_KNOWN] = (200, headers or {}, body)
        return site

    async def listener(self, ip: str, port: int = 0) -> Listener:
        s = await Listener(ip, port).start()
        self._started.append(s)
        return s

    async def close(self) -> None:
        for c in self._clients:
            await c.aclose()
        for s in self._started:
            await s.stop()


async def get(client: FederationClient, destination: str, sign: bool = False) -> dict:
    return await client.request(destination, "GET", VERSION, sign=sign)
