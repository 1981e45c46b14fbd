"""Edges of server discovery not covered by test_discovery.py, against the session's DNS
server and HTTPS sites of the test CA, TLS verification on:

- an IPv6 literal without a port (`[::1]`) is contacted on [::1]:8448, Host `[::1]`, no
  SNI, a certificate valid for the IP (one for another address is refused);
- a .well-known server that takes the connection and never answers (at the TCP level, or
  after the TLS handshake and the request) is given up on after well_known.TIMEOUT_S:
  resolution goes on to SRV or to :8448, and the failure is cached as a failure;
- the 50 KiB cap of a .well-known body, exactly at its edge (declared length or chunked);
- a name with only an AAAA record (::1) and an explicit port is reached over IPv6; with
  AAAA and A both, IPv6 first and IPv4 when IPv6 takes no connection;
- a certificate from a CA the client was not given (a second TestCA) is refused, for a
  federation request and for a .well-known, with the test CA as ca_file or no ca_file.
"""
from __future__ import annotations

import asyncio
import errno
import socket
import ssl
import time

import orjson
import pytest
from aiohttp import web

from services.transport import well_known as wk
from tests.contract.transport.discovery_env import VERSION, WELL_KNOWN, Env, get
from tests.contract.transport.test_discovery import OK, WRONG, check, free_port
from tests.fakes.ca import TestCA
from tests.fakes.sites import Site

pytestmark = pytest.mark.usefixtures("inprocess")


@pytest.fixture
async def env(dns_server, test_ca, loopback_net, tmp_path):
    e = Env(dns_server, test_ca, loopback_net, tmp_path)
    yield e
    await e.close()


# ------------------------------------------------------------------ 1. [::1] is [::1]:8448

async def site_when_free(env: Env, ip: str, port: int, *names: str, wait_s: float = 60) -> Site:
    """A site on a fixed port that another test run may hold for a moment: wait for it."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return await env.site(ip, port, *names)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


@pytest.mark.parametrize("cert", [OK, WRONG])
async def test_ipv6_literal_without_port_is_8448(env, cert):
    """(::1 is the one IPv6 loopback address, so port 8448 is bound there directly.)"""
    site = await site_when_free(env, "::1", 8448, "::1" if cert == OK else "::2")
    await check(env, "[::1]", site, cert, host="[::1]", sni=None, tls_name="::1")
    assert site.handshakes == [None]                     # no SNI for an IP literal


# ------------------------------------------------------------------ 2. .well-known timeout

class Hang:
    """Takes connections on ip:port and never answers: `tls` False -- not even the TLS
    handshake; True -- the handshake (certificate for `name`) and the request are read,
    then nothing. Counts connections."""

    def __init__(self, ca: TestCA, ip: str, port: int, name: str, tls: bool):
        self.ca, self.ip, self.port, self.name, self.tls = ca, ip, port, name, tls
        self.connections = 0
        self.requests: list[bytes] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._server = None

    async def start(self) -> "Hang":
        ctx = None
        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self.ca.issue(self.name))

        async def on_conn(reader, writer):
            self.connections += 1
            self._writers.append(writer)
            if self.tls:
                self.requests.append(await reader.readuntil(b"\r\n\r\n"))
            await asyncio.Event().wait()        # never answers; cancelled by stop()
        self._server = await asyncio.start_server(on_conn, self.ip, self.port, ssl=ctx,
                                                  reuse_address=True)
        return self

    async def stop(self) -> None:
        self._server.close()
        for w in self._writers:
            w.transport.abort()
        await self._server.wait_closed()


@pytest.mark.parametrize("hang", ["tcp", "http"])
@pytest.mark.parametrize("fallback", ["srv", "8448"])
async def test_well_known_that_never_answers_falls_through_within_its_timeout(
        env, hang, fallback):
    client = env.client()                              # federation timeout 15 s > 5 s
    name, ip = env.net.name("hang"), env.net.ip()
    env.dns.add(name, "A", ip)
    hanging = Hang(env.ca, ip, 443, name, tls=hang == "http")
    await hanging.start()
    try:
        if fallback == "srv":
            target, ip_t = env.net.name("target"), env.net.ip()
            env.dns.add("_matrix-fed._tcp." + name, "SRV", f"10 5 9448 {target}.")
            env.dns.add(target, "A", ip_t)
            site = await env.site(ip_t, 9448, name, label="fallback")
        else:
            site = await env.site(ip, 8448, name, label="fallback")
        t0 = time.monotonic()
        resp = await get(client, name)
        elapsed = time.monotonic() - t0
        assert resp["body"] == {"site": "fallback"}, resp
        assert wk.TIMEOUT_S - 0.5 <= elapsed < wk.TIMEOUT_S + 5, elapsed
        assert hanging.connections == 1
        if hang == "http":
            assert hanging.requests[0].startswith(f"GET {WELL_KNOWN} HTTP/1.1".encode())
        [req] = site.requests
        assert (req["host"], req["sni"], req["path"]) == (name, name, VERSION)

        entry = client.well_known._cache[name]           # cached as a failure
        assert entry.server is None and entry.failures == 1
        assert f"timed out after {wk.TIMEOUT_S}s" in entry.note, entry.note
        left = entry.expires - time.monotonic()
        assert 290 < left <= 300, left                  # the first backoff: 5 minutes
        t1 = time.monotonic()
        assert (await get(client, name))["body"] == {"site": "fallback"}
        assert time.monotonic() - t1 < 2, "the failed .well-known was asked again"
        assert hanging.connections == 1 and client.well_known.fetches == 1
    finally:
        await hanging.stop()


# ------------------------------------------------------------------ 3. the 50 KiB cap

def body_of_size(m_server: str, size: int) -> bytes:
    """A JSON object with `m.server` and a padding string, exactly `size` bytes."""
    empty = orjson.dumps({"m.server": m_server, "pad": ""})
    body = orjson.dumps({"m.server": m_server, "pad": "x" * (size - len(empty))})
    assert len(body) == size
    return body


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("size", [wk.MAX_BYTES - 1, wk.MAX_BYTES, wk.MAX_BYTES + 1])
async def test_well_known_body_at_the_50_kib_cap(env, size, framing):
    assert wk.MAX_BYTES == 50 * 1024
    name, deleg, ip_d = env.net.name("cap"), env.net.name("deleg"), env.net.ip()
    body = body_of_size(f"{deleg}:9448", size)
    site = await env.well_known(name, body)
    if framing == "chunked":
        async def chunked(request):
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            try:
                for i in range(0, len(body), 4096):
                    await resp.write(body[i:i + 4096])
            except (ConnectionError, RuntimeError):
                pass                                      # the client stopped reading
            return resp
        site.routes[WELL_KNOWN] = (200, {}, chunked)
    env.dns.add(deleg, "A", ip_d)
    delegated = await env.site(ip_d, 9448, deleg, label="delegated")
    fallback = await env.site(site.ip, 8448, name, label="fallback")
    client = env.client()
    resp = await get(client, name)
    entry = client.well_known._cache[name]
    assert len(site.requests) == 1
    if size <= wk.MAX_BYTES:
        assert resp["body"] == {"site": "delegated"}, resp
        assert entry.server == f"{deleg}:9448"
        assert fallback.requests == []
    else:
        assert resp["body"] == {"site": "fallback"}, resp
        assert entry.server is None, "an over-long .well-known was cached as a delegation"
        assert f"larger than {wk.MAX_BYTES} bytes" in entry.note, entry.note
        assert delegated.requests == [] and delegated.handshakes == []


# ------------------------------------------------------------------ 4. AAAA

def port_free_on(*ips: str) -> int:
    for _ in range(50):
        port = free_port(ips[0])
        try:
            for ip in ips[1:]:
                with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET) as s:
                    s.bind((ip, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no port free on all of {ips}")


@pytest.mark.parametrize("cert", [OK, WRONG])
async def test_name_with_only_an_aaaa_record_and_a_port_is_reached_over_ipv6(env, cert):
    name = env.net.name("v6only")
    env.dns.add(name, "AAAA", "::1")
    port = free_port("::1")
    site = await env.site("::1", port, name if cert == OK else env.net.name("other"))
    await check(env, f"{name}:{port}", site, cert, host=f"{name}:{port}", sni=name,
                tls_name=name)
    assert env.dns.count(name, "AAAA") == 1


@pytest.mark.parametrize("listening", ["both", "ipv4 only", "ipv6 only"])
async def test_name_with_aaaa_and_a_records(env, listening):
    """IPv6 first (dns_lookup: "IPv6 then IPv4"); an address that takes no connection
    is passed over for the next."""
    name, ip = env.net.name("dual"), env.net.ip()
    env.dns.add(name, "AAAA", "::1")
    env.dns.add(name, "A", ip)
    port = port_free_on("::1", ip)
    v6 = await env.site("::1", port, name, label="v6") if listening != "ipv4 only" else None
    v4 = await env.site(ip, port, name, label="v4") if listening != "ipv6 only" else None
    resp = await get(env.client(), f"{name}:{port}")
    expected = "v4" if listening == "ipv4 only" else "v6"
    assert resp["body"] == {"site": expected}, resp
    landed = v6 if expected == "v6" else v4
    [req] = landed.requests
    assert (req["host"], req["sni"]) == (f"{name}:{port}", name)
    if v4 is not None and expected == "v6":
        assert v4.requests == [] and v4.handshakes == []


# ------------------------------------------------------------------ 5. an untrusted CA

@pytest.fixture(scope="module")
def other_ca(tmp_path_factory):
    """A second CA, made like the test CA, that no client here is given."""
    return TestCA(tmp_path_factory.mktemp("other-ca"))


async def untrusted_site(env: Env, ca: TestCA, ip: str, port: int, name: str) -> Site:
    site = await Site(ca, ip, port, name, label="untrusted").start()
    env._started.append(site)
    return site


@pytest.mark.parametrize("ca_file", ["test CA", "none (system CAs)"])
async def test_certificate_from_an_untrusted_ca_is_refused(env, other_ca, ca_file):
    name, ip = env.net.name("untrusted"), env.net.ip()
    env.dns.add(name, "A", ip)
    site = await untrusted_site(env, other_ca, ip, 9448, name)    # right name, wrong CA
    client = env.client(**({} if ca_file == "test CA" else {"ca_file": ""}))
    assert client.verify_tls
    resp = await get(client, f"{name}:9448")
    assert resp["status"] == 0, resp
    assert "certificate verify failed" in resp["error"], resp
    assert site.requests == [] and site.handshakes == [name]

    # the same site is accepted by a client given that CA: the refusal was the CA's
    trusting = env.client(ca_file=other_ca.bundle)
    assert (await get(trusting, f"{name}:9448"))["body"] == {"site": "untrusted"}


async def test_well_known_from_an_untrusted_ca_is_not_a_delegation(env, other_ca):
    name, deleg, ip, ip_d = (env.net.name("wk-untrusted"), env.net.name("deleg"),
                             env.net.ip(), env.net.ip())
    env.dns.add(name, "A", ip)
    wk_site = await untrusted_site(env, other_ca, ip, 443, name)
    wk_site.routes[WELL_KNOWN] = (200, {}, {"m.server": f"{deleg}:9448"})
    env.dns.add(deleg, "A", ip_d)
    delegated = await env.site(ip_d, 9448, deleg, label="delegated")
    fallback = await env.site(ip, 8448, name, label="fallback")
    client = env.client()
    resp = await get(client, name)
    assert resp["body"] == {"site": "fallback"}, resp
    assert wk_site.requests == [] and delegated.requests == []
    entry = client.well_known._cache[name]
    assert entry.server is None and "certificate verify failed" in entry.note, entry.note
