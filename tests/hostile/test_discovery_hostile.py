"""Catalogue: hostile discovery. A .well-known of 10 MB (declared or chunked), redirect
loops and chains, an `m.server` with a path, userinfo, an out-of-range port or a private
address, SRV and A records pointing at loopback or private addresses: refused, no
connection made to where they point, and nothing cached as a delegation."""
from __future__ import annotations

import time

import pytest
from aiohttp import web

from services.transport.addresses import AddressPolicy
from services.transport.well_known import MAX_REDIRECTS, PATH
from tests.contract.transport.discovery_env import Env, get


@pytest.fixture
async def env(dns_server, test_ca, loopback_net, tmp_path):
    e = Env(dns_server, test_ca, loopback_net, tmp_path)
    yield e
    await e.close()


async def decoy(env: Env):
    """A delegated name and a listener at its address: it must get no connection."""
    deleg, ip = env.net.name("decoy"), env.net.ip()
    env.dns.add(deleg, "A", ip)
    return deleg, await env.listener(ip, 9448)


async def assert_not_delegated(env: Env, client, name: str, listener):
    resp = await get(client, name)
    assert resp["status"] == 0, resp                 # nothing at name:8448 either
    assert listener.connections == 0, "a request was made where a hostile answer pointed"
    entry = client.well_known._cache[name]
    assert entry.server is None, "a hostile .well-known was cached as a delegation"
    return entry


def _huge_body(deleg: str) -> bytes:
    return b'{"m.server": "' + deleg.encode() + b':9448", "pad": "' + b"x" * (10 * 2 ** 20) + b'"}'


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_ten_megabyte_well_known_is_refused(env, framing):
    deleg, listener = await decoy(env)
    name = env.net.name("huge")
    body = _huge_body(deleg)

    async def chunked(request):
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        try:
            for i in range(0, len(body), 65536):
                await resp.write(body[i:i + 65536])
        except (ConnectionError, RuntimeError):
            pass                                  # the client stopped reading: expected
        return resp
    wk = await env.well_known(name, body if framing == "content-length" else b"")
    if framing == "chunked":
        wk.routes[PATH] = (200, {}, chunked)
    client = env.client()
    t0 = time.monotonic()
    entry = await assert_not_delegated(env, client, name, listener)
    assert "larger than" in entry.note and time.monotonic() - t0 < 5


@pytest.mark.parametrize("shape", ["self", "two-step", "chain"])
async def test_redirect_loops_and_long_chains_are_refused(env, shape):
    deleg, listener = await decoy(env)
    name = env.net.name("loop")
    wk = await env.well_known(name, f"{deleg}:9448")
    if shape == "self":
        wk.routes[PATH] = (302, {"Location": PATH}, b"")
    elif shape == "two-step":
        wk.routes[PATH] = (301, {"Location": f"https://{name}/a"}, b"")
        wk.routes["/a"] = (307, {"Location": PATH}, b"")
    else:
        hops = [PATH] + [f"/r{i}" for i in range(1, MAX_REDIRECTS + 2)]
        for here, there in zip(hops, hops[1:]):
            wk.routes[here] = (302, {"Location": there}, b"")
        wk.routes[hops[-1]] = (200, {}, {"m.server": f"{deleg}:9448"})
    client = env.client()
    entry = await assert_not_delegated(env, client, name, listener)
    assert ("loop" if shape != "chain" else "redirects") in entry.note
    assert len(wk.requests) <= MAX_REDIRECTS + 1


async def test_a_few_redirects_are_followed(env):
    """(So the refusals above are about loops and length, not redirects as such.)"""
    name, deleg, ip = env.net.name("redir"), env.net.name("deleg"), env.net.ip()
    wk = await env.well_known(name, f"{deleg}:9448")
    wk.routes[PATH] = (302, {"Location": "/moved"}, b"")
    wk.routes["/moved"] = (200, {}, {"m.server": f"{deleg}:9448"})
    env.dns.add(deleg, "A", ip)
    await env.site(ip, 9448, deleg, label="target")
    resp = await get(env.client(), name)
    assert resp["body"] == {"site": "target"}, resp


@pytest.mark.parametrize("bad", ["{d}:9448/path", "{d}/_matrix", "user@{d}:9448",
                                 "https://{d}:9448", "{d}:99999", "{d}:0", "{d}:", " {d}",
                                 "10.1.2.3:9448", "127.0.0.1:{lp}", "[::ffff:127.0.0.1]:{lp}"])
async def test_invalid_or_private_m_server_is_refused(env, bad):
    deleg, listener = await decoy(env)
    loop_listener = await env.listener("127.0.0.1")
    name = env.net.name("bad")
    await env.well_known(name, bad.format(d=deleg, lp=loop_listener.port))
    client = env.client()
    await assert_not_delegated(env, client, name, listener)
    assert loop_listener.connections == 0


@pytest.mark.parametrize("record", ["SRV to loopback", "SRV to private", "A to loopback"])
async def test_dns_pointing_at_private_addresses_is_refused(env, record):
    name, target = env.net.name("lo"), env.net.name("t")
    listener = await env.listener("127.0.0.1")
    if record == "A to loopback":
        env.dns.add(name, "A", "127.0.0.1")
        destination = f"{name}:{listener.port}"
    else:
        env.dns.add("_matrix-fed._tcp." + name, "SRV", f"10 5 {listener.port} {target}.")
        env.dns.add(target, "A", "127.0.0.1" if record == "SRV to loopback" else "10.20.30.40")
        destination = name
    client = env.client()
    resp = await get(client, destination)
    assert resp["status"] == 0 and "private address: refused" in resp["error"], resp
    assert listener.connections == 0
    entry = client.well_known._cache.get(name)
    assert entry is None or entry.server is None


async def test_private_addresses_are_contacted_when_allowed(env):
    """The same SRV to loopback with allow_private_destinations: contacted (no TLS there),
    so the refusals above are the guard's doing."""
    name, target = env.net.name("lo-ok"), env.net.name("t")
    listener = await env.listener("127.0.0.1")
    env.dns.add("_matrix-fed._tcp." + name, "SRV", f"10 5 {listener.port} {target}.")
    env.dns.add(target, "A", "127.0.0.1")
    resp = await get(env.client(allow_private_destinations=True), name)
    assert resp["status"] == 0
    assert listener.connections == 1


def test_address_policy():
    strict = AddressPolicy(False, "127.5.0.0/16")
    for ip in ("127.0.0.1", "10.0.0.1", "192.168.1.1", "172.16.0.1", "169.254.1.1", "100.64.0.1",
               "0.0.0.0", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
               "224.0.0.1"):
        assert strict.refuses(ip), ip
    for ip in ("8.8.8.8", "2001:4860:4860::8888", "127.5.3.4"):
        assert not strict.refuses(ip), ip
    assert not AddressPolicy(True).refuses("127.0.0.1")
