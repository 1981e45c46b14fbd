"""Caching of discovery: .well-known by its cache headers (clamped), failures with a
doubling backoff, DNS answers by their TTL, stale answers while a refresh fails; and a
destination contacted again within those makes no DNS query and no .well-known fetch."""
from __future__ import annotations

import asyncio
import email.utils
import time

import pytest

from services.transport.well_known import DEFAULT_CACHE_S, MAX_CACHE_S, cache_period
from tests.contract.transport.discovery_env import Env, get

pytestmark = pytest.mark.usefixtures("inprocess")


@pytest.fixture
async def env(dns_server, test_ca, loopback_net, tmp_path):
    e = Env(dns_server, test_ca, loopback_net, tmp_path)
    yield e
    await e.close()


async def delegated(env: Env, headers: dict, label: str = "deleg"):
    """name -> .well-known (with `headers`) -> deleg:9448 -> a site. (name, wk, site)"""
    name, deleg, ip = env.net.name("c"), env.net.name("deleg"), env.net.ip()
    wk = await env.well_known(name, f"{deleg}:9448", headers=headers)
    env.dns.add(deleg, "A", ip)
    site = await env.site(ip, 9448, deleg, label=label)
    return name, wk, site


def dns_total(env: Env) -> int:
    return sum(env.dns.queries.values())


async def test_max_age_2_is_refetched_after_2s_not_before(env):
    client = env.client(well_known_min_cache_s=0)
    name, wk, site = await delegated(env, {"Cache-Control": "public, max-age=2"})
    assert (await get(client, name))["status"] == 200
    assert len(wk.requests) == 1
    queries = dns_total(env)
    t0 = time.monotonic()
    for _ in range(3):
        assert (await get(client, name))["status"] == 200
    assert len(wk.requests) == 1, "refetched within max-age"
    assert dns_total(env) == queries, "a second request made a DNS look-up"
    await asyncio.sleep(max(0.0, 1.5 - (time.monotonic() - t0)))
    assert (await get(client, name))["status"] == 200 and len(wk.requests) == 1
    await asyncio.sleep(max(0.0, 2.2 - (time.monotonic() - t0)))
    assert (await get(client, name))["status"] == 200
    assert len(wk.requests) == 2, "not refetched after max-age"
    assert len(site.requests) == 6


async def test_short_max_age_is_raised_to_the_minimum(env):
    client = env.client()                                  # minimum 5 minutes
    name, wk, _site = await delegated(env, {"Cache-Control": "max-age=2"})
    await get(client, name)
    left = client.well_known._cache[name].expires - time.monotonic()
    assert 290 < left <= 300


async def test_failure_is_cached_with_a_doubling_backoff(env):
    client = env.client(well_known_min_cache_s=1.0, well_known_failure_cache_s=3.0)
    name, ip = env.net.name("f"), env.net.ip()
    env.dns.add(name, "A", ip)
    wk = await env.site(ip, 443, name)
    wk.routes["/.well-known/matrix/server"] = (404, {}, {"errcode": "M_NOT_FOUND", "error": ""})
    fallback = await env.site(ip, 8448, name, label="fallback")
    t0 = time.monotonic()
    assert (await get(client, name))["body"] == {"site": "fallback"}
    assert (await get(client, name))["status"] == 200
    assert len(wk.requests) == 1, "a failure was refetched within its backoff"
    await asyncio.sleep(max(0.0, 1.2 - (time.monotonic() - t0)))
    t1 = time.monotonic()
    await get(client, name)
    assert len(wk.requests) == 2
    await asyncio.sleep(max(0.0, 1.2 - (time.monotonic() - t1)))   # backoff is now 2 s
    await get(client, name)
    assert len(wk.requests) == 2, "the backoff did not double"
    await asyncio.sleep(max(0.0, 2.2 - (time.monotonic() - t1)))
    await get(client, name)
    assert len(wk.requests) == 3
    left = client.well_known._cache[name].expires - time.monotonic()
    assert 2.5 < left <= 3.0, "the backoff (4 s) is not capped at well_known_failure_cache_s"
    assert len(fallback.requests) == 5


async def test_failure_backoff_by_default_5_minutes_doubling_up_to_an_hour(env):
    """(Each backoff is ended by hand, not waited for.)"""
    client = env.client()
    name, ip = env.net.name("f1h"), env.net.ip()
    env.dns.add(name, "A", ip)                    # nothing on 443: no answer at all
    periods = []
    for _ in range(6):
        await get(client, name)
        entry = client.well_known._cache[name]
        periods.append(round(entry.expires - time.monotonic(), -1))
        entry.expires = 0.0
    assert periods == [300, 600, 1200, 2400, 3600, 3600]
    assert client.well_known.fetches == 6


async def test_stale_delegation_is_used_while_the_refresh_fails(env):
    client = env.client(well_known_min_cache_s=0, well_known_failure_cache_s=30)
    name, wk, site = await delegated(env, {"Cache-Control": "max-age=1"})
    assert (await get(client, name))["status"] == 200
    await wk.stop()                                        # the .well-known goes away
    await asyncio.sleep(1.2)
    for _ in range(3):
        resp = await get(client, name)
        assert resp["body"] == {"site": "deleg"}, resp
    assert client.well_known.fetches == 2, "refetched on every request while failing"
    assert len(site.requests) == 4


async def test_srv_ttl_is_honoured(env):
    client = env.client()
    name, ip_n = env.net.name("ttl"), env.net.ip()
    env.dns.add(name, "A", ip_n)
    t1, t2, ip1, ip2 = env.net.name("t"), env.net.name("t"), env.net.ip(), env.net.ip()
    env.dns.add(t1, "A", ip1)
    env.dns.add(t2, "A", ip2)
    env.dns.add("_matrix-fed._tcp." + name, "SRV", f"10 5 9448 {t1}.", ttl=2)
    s1 = await env.site(ip1, 9448, name, label="one")
    s2 = await env.site(ip2, 9448, name, label="two")
    t0 = time.monotonic()
    assert (await get(client, name))["body"] == {"site": "one"}
    env.dns.add("_matrix-fed._tcp." + name, "SRV", f"10 5 9448 {t2}.", ttl=2)
    assert (await get(client, name))["body"] == {"site": "one"}, "SRV TTL not honoured"
    assert env.dns.count("_matrix-fed._tcp." + name, "SRV") == 1
    await asyncio.sleep(max(0.0, 2.2 - (time.monotonic() - t0)))
    assert (await get(client, name))["body"] == {"site": "two"}, "SRV kept past its TTL"
    assert env.dns.count("_matrix-fed._tcp." + name, "SRV") == 2
    assert len(s1.requests) == 2 and len(s2.requests) == 1


async def test_stale_address_is_used_while_dns_fails(env):
    client = env.client()
    name, ip = env.net.name("sf"), env.net.ip()
    env.dns.add(name, "A", ip, ttl=1)
    site = await env.site(ip, 9448, name)
    assert (await get(client, f"{name}:9448"))["status"] == 200
    env.dns.fail(name)
    try:
        await asyncio.sleep(1.2)
        resp = await get(client, f"{name}:9448")
        assert resp["status"] == 200, resp
        asked = env.dns.count(name, "A") + env.dns.count(name, "AAAA")
        assert asked >= 3, "no refresh was tried"   # it was (and failed): stale used
    finally:
        env.dns.fail(name, False)
    assert len(site.requests) == 2


def test_cache_period_headers():
    assert cache_period({}, 300) == DEFAULT_CACHE_S
    assert cache_period({"cache-control": "max-age=3600"}, 300) == 3600
    assert cache_period({"cache-control": "max-age=10"}, 300) == 300
    assert cache_period({"cache-control": "max-age=99999999"}, 300) == MAX_CACHE_S
    assert cache_period({"cache-control": "no-store"}, 300) == 300
    in_2h = email.utils.formatdate(time.time() + 7200, usegmt=True)
    assert 7190 < cache_period({"expires": in_2h}, 300) <= 7200
    assert cache_period({"expires": "garbage"}, 300) == 300
