"""Resolving server names, each branch of the spec's steps 1-4 against a real DNS server
(the session's, on loopback) and HTTPS sites with certificates of the test CA, TLS
verification on. Each test asserts the address connected to (the site at that address got
the request), the Host header, the SNI, and the certificate name checked: the route's
`tls_name`, and a certificate for another name is refused (no request reaches the site).
"""
from __future__ import annotations

import random
import socket

import pytest

from services.transport.discovery import order_srv
from services.transport.dns_lookup import Srv
from tests.contract.transport.discovery_env import US, VERSION, WELL_KNOWN, Env, get

pytestmark = pytest.mark.usefixtures("inprocess")

OK, WRONG = "right certificate", "wrong certificate"


@pytest.fixture
async def env(dns_server, test_ca, loopback_net, tmp_path):
    e = Env(dns_server, test_ca, loopback_net, tmp_path)
    yield e
    await e.close()


async def check(env: Env, destination: str, site, cert: str, *, host: str, sni, tls_name: str):
    """Request `destination`; with the right certificate the site answers with Host and
    SNI as expected, with the wrong one it is refused and the site sees no request."""
    client = env.client()
    route = await client.discovery.route(destination)
    assert route.tls_name == tls_name and route.host_header == host and route.sni == sni
    resp = await get(client, destination)
    if cert == OK:
        assert resp["status"] == 200, resp
        assert resp["body"] == {"site": site.label}
        [req] = site.requests
        assert (req["host"], req["sni"], req["path"]) == (host, sni, VERSION)
    else:
        assert resp["status"] == 0 and "certificate" in resp["error"].lower(), resp
        assert site.requests == []
        assert site.handshakes and set(site.handshakes) == {sni}
    return resp


def free_port(ip: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET) as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ 1. IP literals

@pytest.mark.parametrize("cert", [OK, WRONG])
async def test_ipv4_literal_with_port(env, cert):
    ip, other = env.net.ip(), env.net.ip()
    site = await env.site(ip, 9448, ip if cert == OK else other)
    await check(env, f"{ip}:9448", site, cert, host=f"{ip}:9448", sni=None, tls_name=ip)


@pytest.mark.parametrize("cert", [OK, WRONG])
async def test_ipv4_literal_without_port_is_8448(env, cert):
    ip = env.net.ip()
    site = await env.site(ip, 8448, ip if cert == OK else env.net.name("other"))
    await check(env, ip, site, cert, host=ip, sni=None, tls_name=ip)


@pytest.mark.parametrize("cert", [OK, WRONG])
async def test_ipv6_literal_with_port(env, cert):
    port = free_port("::1")
    site = await env.site("::1", port, "::1" if cert == OK else "::2")
    await check(env, f"[::1]:{port}", site, cert, host=f"[::1]:{port}", sni=None, tls_name="::1")


# ------------------------------------------------------------------ 2. name:port

@pytest.mark.parametrize("cert", [OK, WRONG])
async def test_hostname_with_port_uses_its_address_no_well_known(env, cert):
    name, ip = env.net.name("p"), env.net.ip()
    env.dns.add(name, "A", ip)
    wk = await env.well_known(name, "never.fedstack.test:1")    # must not be asked
    env.dns.add(name, "A", ip)
    site = await env.site(ip, 9448, name if cert == OK else env.net.name("other"))
    await check(env, f"{name}:9448", site, cert, host=f"{name}:9448", sni=name, tls_name=name)
    assert wk.requests == [] and env.dns.count("_matrix-fed._tcp." + name, "SRV") == 0


# ------------------------------------------------------------------ 3. .well-known

def assert_well_known_asked(wk, name):
    assert [(r["host"], r["sni"], r["path"]) for r in wk.requests] == [(name, name, WELL_KNOWN)]


@pytest.mark.parametrize("cert", [OK, WRONG])
async def test_well_known_to_ip_literal(env, cert):
    name, ip = env.net.name("w-ip"), env.net.ip()
    wk = await env.well_known(name, f"{ip}:9448")
    site = await env.site(ip, 9448, ip if cert == OK else name)
    await check(env, name, site, cert, host=f"{ip}:9448", sni=None, tls_name=ip)
    assert_well_known_asked(wk, name)


@pytest.mark.parametrize("cert", [OK, WRONG])
async def test_well_known_to_host_and_port(env, cert):
    name, deleg, ip = env.net.name("w-hp"), env.net.name("deleg"), env.net.ip()
    wk = await env.well_known(name, f"{deleg}:9448")
    env.dns.add(deleg, "A", ip)
    site = await env.site(ip, 9448, deleg if cert == OK else name)
    await check(env, name, site, cert, host=f"{deleg}:9448", sni=deleg, tls_name=deleg)
    assert_well_known_asked(wk, name)
    assert env.dns.count("_matrix-fed._tcp." + deleg, "SRV") == 0


@pytest.mark.parametrize("srv", ["_matrix-fed._tcp.", "_matrix._tcp."])
@pytest.mark.parametrize("cert", [OK, WRONG])
async def test_well_known_to_host_with_srv(env, cert, srv):
    """The certificate must be the delegated name's, not the SRV target's."""
    name, deleg, target, ip = (env.net.name("w-srv"), env.net.name("deleg"),
                               env.net.name("target"), env.net.ip())
    wk = await env.well_known(name, deleg)
    env.dns.add(srv + deleg, "SRV", f"10 5 9448 {target}.")
    env.dns.add(target, "A", ip)
    site = await env.site(ip, 9448, deleg if cert == OK else target)
    await check(env, name, site, cert, host=deleg, sni=deleg, tls_name=deleg)
    assert_well_known_asked(wk, name)


@pytest.mark.parametrize("cert", [OK, WRONG])
async def test_well_known_to_host_without_srv_is_8448(env, cert):
    name, deleg, ip = env.net.name("w-8448"), env.net.name("deleg"), env.net.ip()
    wk = await env.well_known(name, deleg)
    env.dns.add(deleg, "A", ip)
    site = await env.site(ip, 8448, deleg if cert == OK else name)
    await check(env, name, site, cert, host=deleg, sni=deleg, tls_name=deleg)
    assert_well_known_asked(wk, name)
    assert env.dns.count("_matrix-fed._tcp." + deleg, "SRV") == 1
    assert env.dns.count("_matrix._tcp." + deleg, "SRV") == 1


async def test_x_matrix_destination_stays_the_server_name(env):
    name, deleg, ip = env.net.name("w-xm"), env.net.name("deleg"), env.net.ip()
    await env.well_known(name, f"{deleg}:9448")
    env.dns.add(deleg, "A", ip)
    site = await env.site(ip, 9448, deleg)
    resp = await get(env.client(), name, sign=True)
    assert resp["status"] == 200
    auth = site.requests[0]["authorization"]
    assert f'destination="{name}"' in auth and f'origin="{US}"' in auth


async def test_well_known_with_a_wrong_certificate_is_not_a_delegation(env):
    name, deleg, ip_d = env.net.name("w-bad"), env.net.name("deleg"), env.net.ip()
    ip = env.net.ip()
    env.dns.add(name, "A", ip)
    wk = await env.site(ip, 443, env.net.name("other"))
    wk.routes[WELL_KNOWN] = (200, {}, {"m.server": f"{deleg}:9448"})
    env.dns.add(deleg, "A", ip_d)
    delegated = await env.site(ip_d, 9448, deleg)
    fallback = await env.site(ip, 8448, name, label="fallback")
    resp = await get(env.client(), name)
    assert resp["body"] == {"site": "fallback"}, resp
    assert wk.requests == [] and delegated.requests == []


# ------------------------------------------------------------------ 4. no .well-known

@pytest.mark.parametrize("srv", ["_matrix-fed._tcp.", "_matrix._tcp."])
@pytest.mark.parametrize("cert", [OK, WRONG])
async def test_no_well_known_srv(env, cert, srv):
    name, target, ip_n, ip = (env.net.name("srv"), env.net.name("target"), env.net.ip(),
                              env.net.ip())
    env.dns.add(name, "A", ip_n)                 # nothing listens on its 443: no .well-known
    env.dns.add(srv + name, "SRV", f"10 5 9448 {target}.")
    env.dns.add(target, "A", ip)
    site = await env.site(ip, 9448, name if cert == OK else target)
    await check(env, name, site, cert, host=name, sni=name, tls_name=name)
    if srv == "_matrix._tcp.":
        assert env.dns.count("_matrix-fed._tcp." + name, "SRV") == 1


@pytest.mark.parametrize("cert", [OK, WRONG])
async def test_no_well_known_no_srv_is_8448(env, cert):
    name, ip = env.net.name("plain"), env.net.ip()
    env.dns.add(name, "A", ip)
    wk = await env.site(ip, 443, name)                # answers 404: no delegation
    wk.routes[WELL_KNOWN] = (404, {}, {"errcode": "M_NOT_FOUND", "error": "no"})
    site = await env.site(ip, 8448, name if cert == OK else env.net.name("other"))
    await check(env, name, site, cert, host=name, sni=name, tls_name=name)
    assert len(wk.requests) == 1


async def test_matrix_fed_srv_is_preferred_to_the_deprecated_one(env):
    name, t1, t2, ip1, ip2 = (env.net.name("both"), env.net.name("t"), env.net.name("t"),
                              env.net.ip(), env.net.ip())
    env.dns.add("_matrix-fed._tcp." + name, "SRV", f"10 5 9448 {t1}.")
    env.dns.add("_matrix._tcp." + name, "SRV", f"10 5 9448 {t2}.")
    env.dns.add(t1, "A", ip1)
    env.dns.add(t2, "A", ip2)
    new = await env.site(ip1, 9448, name, label="new")
    old = await env.site(ip2, 9448, name, label="old")
    resp = await get(env.client(), name)
    assert resp["body"] == {"site": "new"} and old.requests == [] and new.requests


async def test_every_srv_target_is_tried_in_priority_order(env):
    """Priority 1 refuses connections, priority 2 presents a wrong certificate, priority
    3 answers: the request lands there; with all three down, the error names each."""
    name = env.net.name("many")
    ips = [env.net.ip() for _ in range(3)]
    targets = [env.net.name(f"t{i}") for i in range(3)]
    for t, ip in zip(targets, ips):
        env.dns.add(t, "A", ip)
    env.dns.add("_matrix-fed._tcp." + name, "SRV",
                *[f"{p} 0 9448 {t}." for p, t in zip((3, 1, 2), (targets[2], targets[0], targets[1]))])
    wrong = await env.site(ips[1], 9448, targets[1], label="wrong")
    good = await env.site(ips[2], 9448, name, label="good")
    client = env.client()
    resp = await get(client, name)
    assert resp["body"] == {"site": "good"}, resp
    assert wrong.handshakes == [name] and wrong.requests == []
    await good.stop()
    client.well_known._cache.clear()
    resp = await get(env.client(), name)
    assert resp["status"] == 0
    for ip in ips:
        assert f"{ip}:9448" in resp["error"]


async def test_srv_service_not_available_is_not_a_fallback_to_8448(env):
    name, ip = env.net.name("dot"), env.net.ip()
    env.dns.add(name, "A", ip)
    env.dns.add("_matrix-fed._tcp." + name, "SRV", "0 0 0 .")
    site = await env.site(ip, 8448, name)
    resp = await get(env.client(), name)
    assert resp["status"] == 0 and "not available" in resp["error"]
    assert site.requests == []


# ------------------------------------------------------------------ RFC 2782 order

def test_srv_order_priority_then_weight():
    recs = [Srv(20, 0, 1, "c"), Srv(10, 90, 1, "a"), Srv(10, 10, 1, "b"), Srv(30, 5, 1, "d")]
    rng = random.Random(7)
    firsts = {"a": 0, "b": 0}
    for _ in range(2000):
        order = order_srv(recs, rng)
        assert [r.target for r in order][2:] == ["c", "d"]
        assert {r.target for r in order[:2]} == {"a", "b"}
        firsts[order[0].target] += 1
    assert 0.85 < firsts["a"] / 2000 < 0.95          # weight 90 against 10


def test_srv_weight_zero_is_chosen_rarely():
    recs = [Srv(1, 0, 1, "zero"), Srv(1, 50, 1, "fifty")]
    rng = random.Random(3)
    zero_first = sum(order_srv(recs, rng)[0].target == "zero" for _ in range(2000))
    assert 0 < zero_first < 100                      # 1 in 51
