"""`fedstack check-federation`, step by step, against servers of the test domain (DNS
server, test CA, loopback addresses of tests/conftest.py; the peers are tests/fakes Sites
serving what each test writes): a name given as an IP literal or with a port (no
.well-known, no SRV asked), one delegated by .well-known onward to an SRV record, a name
that cannot be resolved (not a name, SERVFAIL), a key server whose answer is not for the
name or not self-signed, and `--no-verify-tls`. Each run is the real CLI in a subprocess;
what the peers saw (Host, SNI) is checked as well as what it printed and its exit status."""
from __future__ import annotations

import pytest

from fedstack.cli import free_port
from shared.crypto import SigningKey, sign_json
from tests.contract.helpers import key_response
from tests.e2e.test_being_found import _check_federation
from tests.fakes.sites import Site

KEYS = "/_matrix/key/v2/server"
WELL_KNOWN = "/.well-known/matrix/server"


def serve_keys(site: Site, server_name: str, body: dict | None = None) -> None:
    site.routes[KEYS] = (200, {}, body or key_response(server_name, SigningKey.generate()))


def common(dns_server, test_ca) -> tuple[str, ...]:
    return ("--resolver", dns_server.address, "--ca-file", test_ca.bundle,
            "--allow-private-destinations")


@pytest.mark.parametrize("kind", ["ipv4", "ipv6", "name:port"])
async def test_an_ip_literal_or_explicit_port_asks_no_well_known_and_no_srv(
        kind, dns_server, test_ca, loopback_net):
    if kind == "ipv6":
        ip = "::1"
        port = free_port(ip)
        name, host, tls_name, sni, target = f"[::1]:{port}", f"[::1]:{port}", ip, None, ip
    elif kind == "ipv4":
        ip = loopback_net.ip()
        port = free_port(ip)
        name = host = f"{ip}:{port}"
        tls_name, sni, target = ip, None, ip
    else:
        ip, hostname = loopback_net.ip(), loopback_net.name("direct")
        port = free_port(ip)
        dns_server.add(hostname, "A", ip)
        name = host = f"{hostname}:{port}"
        tls_name = sni = target = hostname
    site = await Site(test_ca, ip, port, tls_name).start()
    serve_keys(site, name)
    try:
        code, out = await _check_federation(name, *common(dns_server, test_ca))
    finally:
        await site.stop()
    assert code == 0, out
    for expected in ("IP literal or explicit port: no .well-known, no SRV",
                     f"Host header: {host}; certificate must be valid for: {tls_name}; "
                     f"SNI: {sni or '(none: an IP address)'}",
                     f"target {target}:{port}: addresses {ip}",
                     f"{ip}:{port}: TLS verified for {tls_name}",
                     "key server: OK", "RESULT: OK"):
        assert expected in out, out
    assert ".well-known of" not in out and "SRV _matrix" not in out, out
    bare = name.rsplit(":", 1)[0]
    assert dns_server.count("_matrix-fed._tcp." + bare, "SRV") == 0
    assert dns_server.count("_matrix._tcp." + bare, "SRV") == 0
    assert [r["host"] for r in site.requests] == [host], site.requests   # the key request
    assert set(site.handshakes) == {sni}, site.handshakes


async def test_a_name_delegated_by_well_known_onward_to_srv(dns_server, test_ca, loopback_net):
    """.well-known of NAME says `dhost` (no port): SRV _matrix-fed._tcp.dhost names
    target:port; Host, SNI and the certificate are dhost's, never the SRV target's, and
    the key server there answers for NAME."""
    name, dhost, target = (loopback_net.name(x) for x in ("deleg", "dhost", "dtarget"))
    wk_ip, fed_ip = loopback_net.ip(), loopback_net.ip()
    port = free_port(fed_ip)
    dns_server.add(name, "A", wk_ip)
    dns_server.add(target, "A", fed_ip)
    dns_server.add("_matrix-fed._tcp." + dhost, "SRV", f"10 0 {port} {target}.")
    wk = await Site(test_ca, wk_ip, 443, name).start()
    wk.routes[WELL_KNOWN] = (200, {}, {"m.server": dhost})
    fed = await Site(test_ca, fed_ip, port, dhost).start()
    serve_keys(fed, name)
    try:
        code, out = await _check_federation(name, *common(dns_server, test_ca))
    finally:
        await wk.stop()
        await fed.stop()
    assert code == 0, out
    for expected in (f".well-known of {name}: delegates to {dhost}",
                     f"SRV _matrix-fed._tcp.{dhost}: {target}:{port} (priority 10, weight 0)",
                     f"Host header: {dhost}; certificate must be valid for: {dhost}; SNI: {dhost}",
                     f"target {target}:{port}: addresses {fed_ip}",
                     f"{fed_ip}:{port}: TLS verified for {dhost}",
                     "key server: OK", "RESULT: OK"):
        assert expected in out, out
    assert [r["path"] for r in wk.requests] == [WELL_KNOWN], wk.requests
    assert [(r["host"], r["sni"], r["path"]) for r in fed.requests] == [(dhost, dhost, KEYS)]
    assert set(fed.handshakes) == {dhost}, fed.handshakes
    assert dns_server.count("_matrix-fed._tcp." + name, "SRV") == 0   # delegated: not asked


async def test_a_name_that_cannot_be_resolved(dns_server, test_ca, loopback_net):
    code, out = await _check_federation("not a name!", *common(dns_server, test_ca))
    assert code == 1, out
    assert "cannot resolve: 'not a name!': not a server name" in out, out
    assert "Host header" not in out and "RESULT: FAILED" in out, out

    # SRV answered SERVFAIL: no route at all (not a fall-through to port 8448)
    name = loopback_net.name("servfail")
    dns_server.fail("_matrix-fed._tcp." + name)
    try:
        code, out = await _check_federation(name, *common(dns_server, test_ca))
    finally:
        dns_server.fail("_matrix-fed._tcp." + name, False)
    assert code == 1, out
    assert f".well-known of {name}: no valid .well-known" in out, out
    assert "cannot resolve: SRV look-up failed" in out, out
    assert "Host header" not in out and "8448" not in out and "RESULT: FAILED" in out, out

    # SRV "." (RFC 2782: decidedly not available): no route either
    name = loopback_net.name("nosrv")
    dns_server.add("_matrix-fed._tcp." + name, "SRV", "0 0 0 .")
    code, out = await _check_federation(name, *common(dns_server, test_ca))
    assert code == 1, out
    assert (f"cannot resolve: SRV _matrix-fed._tcp.{name}: service not available" in out), out
    assert "Host header" not in out and "RESULT: FAILED" in out, out

    # the SRV target's own address look-up fails: that target is reported, nothing reached
    name, target = loopback_net.name("badtarget"), loopback_net.name("servfail-target")
    dns_server.add("_matrix-fed._tcp." + name, "SRV", f"10 0 8448 {target}.")
    dns_server.fail(target)
    try:
        code, out = await _check_federation(name, *common(dns_server, test_ca))
    finally:
        dns_server.fail(target, False)
    assert code == 1, out
    assert f"target {target}:8448: look-up failed" in out, out
    assert "TLS verified" not in out and "RESULT: FAILED" in out, out


@pytest.mark.parametrize("answer", ["for another name", "not self-signed"])
async def test_a_key_answer_not_for_the_name_or_not_self_signed_is_refused(
        answer, dns_server, test_ca, loopback_net):
    name, ip = loopback_net.name("keys"), loopback_net.ip()
    dns_server.add(name, "A", ip)
    site = await Site(test_ca, ip, 8448, name).start()
    key = SigningKey.generate()
    if answer == "for another name":
        body = key_response("someone-else.fedstack.test", key)
    else:   # lists `key`, but signed by another key: no self-signature
        body = {"server_name": name, "verify_keys": {key.key_id: {"key": key.public_key_base64}},
                "old_verify_keys": {}, "valid_until_ts": key_response(name, key)["valid_until_ts"]}
        body = sign_json(body, name, SigningKey.generate("other"))
    serve_keys(site, name, body)
    try:
        code, out = await _check_federation(name, *common(dns_server, test_ca))
    finally:
        await site.stop()
    assert code == 1, out
    assert f"{ip}:8448: TLS verified for {name}" in out, out
    assert "key server: answer REFUSED (not for this name, or not self-signed)" in out, out
    assert "key server: OK" not in out and "RESULT: FAILED" in out, out
    assert [r["path"] for r in site.requests] == [KEYS]


async def test_no_verify_tls_says_the_certificate_was_not_verified(dns_server, test_ca,
                                                                   loopback_net):
    """A certificate for another name: refused when verifying; with --no-verify-tls the
    connection is made and the output says it was NOT verified."""
    name, ip = loopback_net.name("noverify"), loopback_net.ip()
    dns_server.add(name, "A", ip)
    site = await Site(test_ca, ip, 8448, "someone-else.fedstack.test").start()
    serve_keys(site, name)
    try:
        code, out = await _check_federation(name, *common(dns_server, test_ca))
        assert code == 1 and f"{ip}:8448: certificate REFUSED" in out, out
        code, out = await _check_federation(name, "--resolver", dns_server.address,
                                            "--allow-private-destinations", "--no-verify-tls")
    finally:
        await site.stop()
    assert code == 0, out
    assert f"{ip}:8448: TLS NOT verified (--no-verify-tls) for {name}" in out, out
    assert "subject: CN=someone-else.fedstack.test" in out, out
    assert "certificate REFUSED" not in out and "key server: OK" in out, out
    assert "RESULT: OK" in out, out
