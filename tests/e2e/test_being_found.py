"""Being found: a real transport process named by a DNS name of the test domain, its
listener on <name>:443 with a full-chain certificate of the test CA, delegating its name
with `delegate_to`; our own resolver finds it through that .well-known with TLS verified.
Also: the plain-HTTP public listener, the certificate reloaded on SIGHUP with the process
and its open connections kept, and `fedstack check-federation` printing each step, up to a
request signed as a second reachable homeserver (`origin`), whose keys the served one
fetches through the test DNS server to verify that signature."""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import ssl
import sys
import time
from pathlib import Path

import httpx
import pytest

from fedstack.cli import Homeserver, free_port
from services.transport.outbound import FederationClient
from shared.crypto import SigningKey
from shared.settings import Settings
from tests.fakes.sites import Site


class Served:
    def __init__(self, name, ip, hs, cert_path, key_path, http_port):
        self.name, self.ip, self.hs = name, ip, hs
        self.cert_path, self.key_path, self.http_port = cert_path, key_path, http_port

    @property
    def proc(self):
        return self.hs.procs["transport"]


class Origin:
    def __init__(self, name, ip, hs, srv_target, port):
        self.name, self.ip, self.hs, self.srv_target, self.port = name, ip, hs, srv_target, port


@pytest.fixture(scope="module")
def served(tmp_path_factory, dns_server, test_ca, loopback_net):
    name, ip = loopback_net.name("fed"), loopback_net.ip()
    dns_server.add(name, "A", ip)
    d = tmp_path_factory.mktemp("found")
    cert, key = test_ca.issue(name)
    cert_path, key_path = d / "fullchain.pem", d / "privkey.pem"
    shutil.copy(cert, cert_path)
    shutil.copy(key, key_path)
    http_port = free_port(ip)
    # resolver, CA and allowlist: it must reach `origin` to fetch the keys of a request
    # signed as that server; pdu and transaction answer what such a request asks for.
    hs = Homeserver.configure(name, str(d / "data"), 443, free_port(), bind_host=ip,
                              delegate_to=f"{name}:443", public_http_port=http_port,
                              tls_cert_path=str(cert_path), tls_key_path=str(key_path),
                              resolver=dns_server.address, ca_file=test_ca.bundle,
                              ip_range_allowlist=loopback_net.allowlist)
    # the services reach each other, and wait_healthy finds them, on `ip`: nothing of
    # this homeserver listens on 127.0.0.1
    assert all(getattr(hs.settings, f"{s}_url") == f"http://{ip}:{hs.ports[s]}"
               for s in ("transaction", "pdu", "transport", "messaging"))
    try:
        for instance in ("transaction", "pdu", "transport"):
            hs.start_service(instance)
        hs.wait_healthy(["transaction", "pdu", "transport"])
        yield Served(name, ip, hs, cert_path, key_path, http_port)
    finally:
        hs.stop()


@pytest.fixture(scope="module")
def origin(tmp_path_factory, dns_server, test_ca, loopback_net):
    """A second homeserver, the server `check-federation --server-name` signs as: no
    .well-known, its federation found by `_matrix-fed._tcp` SRV at another name and port,
    its certificate (test CA) for its server name, not the SRV target."""
    name, ip = loopback_net.name("origin"), loopback_net.ip()
    target, port = loopback_net.name("origin-srv"), free_port(ip)
    dns_server.add(target, "A", ip)
    dns_server.add("_matrix-fed._tcp." + name, "SRV", f"10 5 {port} {target}.")
    d = tmp_path_factory.mktemp("origin")
    cert, key = test_ca.issue(name)
    hs = Homeserver.configure(name, str(d / "data"), port, free_port(), bind_host=ip,
                              tls_cert_path=cert, tls_key_path=key)
    hs.start_service("transport")
    try:
        hs.wait_healthy(["transport"])
        yield Origin(name, ip, hs, target, port)
    finally:
        hs.stop()


def test_a_wildcard_bind_is_reached_on_loopback(tmp_path):
    """bind_host 0.0.0.0: the services listen everywhere, and reach each other (and are
    found healthy, and printed) at 127.0.0.1."""
    hs = Homeserver.configure("wild.fedstack.test", str(tmp_path / "data"), free_port(),
                              free_port(), bind_host="0.0.0.0")
    assert hs.settings.pdu_url == f"http://127.0.0.1:{hs.ports['pdu']}"
    assert f"http://127.0.0.1:{hs.ports['transaction']}  (internal)" in hs.describe()
    try:
        hs.start_service("transaction")
        hs.wait_healthy(["transaction"])
        assert hs.is_healthy("transaction")
    finally:
        hs.stop()


def client_for(dns_server, test_ca, loopback_net, tmp_path, **extra) -> FederationClient:
    settings = Settings(server_name="checker.fedstack.test", data_dir=str(tmp_path),
                        resolver=dns_server.address, ca_file=test_ca.bundle,
                        ip_range_allowlist=loopback_net.allowlist, **extra)
    return FederationClient(settings, SigningKey.generate())


async def test_our_delegation_is_followed_with_tls_verified(served, dns_server, test_ca,
                                                           loopback_net, tmp_path):
    client = client_for(dns_server, test_ca, loopback_net, tmp_path)
    try:
        route = await client.discovery.route(served.name)
        assert route.host_header == f"{served.name}:443" and route.tls_name == served.name
        assert any(f"delegates to {served.name}:443" in s for s in route.steps), route.steps
        keys = await client.fetch_server_keys(served.name)
        assert keys["server_name"] == served.name
        left = client.well_known._cache[served.name].expires - time.monotonic()
        assert 86000 < left <= 86400, "our .well-known's Cache-Control was not a day"
    finally:
        await client.aclose()


def test_plain_listener_serves_the_public_api_only(served):
    base = f"http://{served.ip}:{served.http_port}"
    r = httpx.get(base + "/.well-known/matrix/server")
    assert r.status_code == 200 and r.json() == {"m.server": f"{served.name}:443"}
    assert r.headers["cache-control"] == "public, max-age=86400"
    assert httpx.get(base + "/_matrix/key/v2/server").json()["server_name"] == served.name
    r = httpx.get(base + "/_internal/transport/v1/keys/x")
    assert r.status_code == 404 and r.json()["errcode"] == "M_UNRECOGNIZED"


def _served_cert(served, test_ca) -> bytes:
    ctx = ssl.create_default_context(cafile=test_ca.bundle)
    with socket.create_connection((served.ip, 443), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=served.name) as tls:
            return tls.getpeercert(binary_form=True)


def test_sighup_reloads_the_certificate_keeping_process_and_connections(served, test_ca):
    before = _served_cert(served, test_ca)
    ctx = ssl.create_default_context(cafile=test_ca.bundle)
    raw = socket.create_connection((served.ip, 443), timeout=5)
    tls = ctx.wrap_socket(raw, server_hostname=served.name)       # open across the reload
    try:
        cert, key = test_ca.issue(served.name)
        shutil.copy(cert, served.cert_path)
        shutil.copy(key, served.key_path)
        os.kill(served.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while _served_cert(served, test_ca) == before:
            assert time.monotonic() < deadline, "the certificate was not reloaded"
            time.sleep(0.1)
        assert served.proc.poll() is None
        tls.sendall(f"GET /_matrix/federation/v1/version HTTP/1.1\r\nHost: {served.name}\r\n"
                    "Connection: close\r\n\r\n".encode())
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert tls.getpeercert(binary_form=True) == before     # it kept its certificate
        # a broken chain leaves the current certificate in place
        current = _served_cert(served, test_ca)
        served.cert_path.write_text("not a certificate")
        os.kill(served.proc.pid, signal.SIGHUP)
        time.sleep(1.0)
        assert served.proc.poll() is None and _served_cert(served, test_ca) == current
    finally:
        tls.close()
        shutil.copy(cert, served.cert_path)


async def _check_federation(*args) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fedstack.cli", "check-federation", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode()


async def test_check_federation_prints_each_step(served, dns_server, test_ca):
    code, out = await _check_federation(served.name, "--resolver", dns_server.address,
                                        "--ca-file", test_ca.bundle,
                                        "--allow-private-destinations")
    assert code == 0, out
    for expected in (f".well-known of {served.name}: delegates to {served.name}:443",
                     f"Host header: {served.name}:443",
                     f"target {served.name}:443: addresses {served.ip}",
                     f"{served.ip}:443: TLS verified for {served.name}",
                     f"subject: CN={served.name}; names: {served.name}",
                     "issuer: CN=fedstack test intermediate CA", _validity(served.cert_path),
                     "key server: OK", "RESULT: OK"):
        assert expected in out, out


def _validity(cert_path) -> str:
    from cryptography import x509
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    return (f"valid from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} "
            f"until {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")


async def test_check_federation_follows_srv_and_checks_the_certificate_for_the_name(
        origin, dns_server, test_ca):
    code, out = await _check_federation(origin.name, "--resolver", dns_server.address,
                                        "--ca-file", test_ca.bundle,
                                        "--allow-private-destinations")
    assert code == 0, out
    for expected in (f"SRV _matrix-fed._tcp.{origin.name}: {origin.srv_target}:{origin.port} "
                     "(priority 10, weight 5)",
                     f"Host header: {origin.name}; certificate must be valid for: {origin.name}",
                     f"target {origin.srv_target}:{origin.port}: addresses {origin.ip}",
                     f"{origin.ip}:{origin.port}: TLS verified for {origin.name}",
                     "key server: OK", "RESULT: OK"):
        assert expected in out, out


async def test_check_federation_reports_a_private_address_refused(served, dns_server, test_ca):
    code, out = await _check_federation(served.name, "--resolver", dns_server.address,
                                        "--ca-file", test_ca.bundle)
    assert code == 1, out
    assert f"{served.ip}: a private address, refused" in out and "TLS verified" not in out, out
    assert "key server: FAILED" in out and "RESULT: FAILED" in out, out


async def test_check_federation_reports_a_wrong_certificate_and_a_refused_signature(
        served, dns_server, test_ca, loopback_net, tmp_path):
    name, ip = loopback_net.name("wrongcert"), loopback_net.ip()
    dns_server.add(name, "A", ip)
    site = await Site(test_ca, ip, 8448, "someone-else.fedstack.test").start()
    try:
        code, out = await _check_federation(name, "--resolver", dns_server.address,
                                            "--ca-file", test_ca.bundle,
                                            "--allow-private-destinations")
    finally:
        await site.stop()
    assert code == 1, out
    assert f"{ip}:8448: certificate REFUSED" in out and "someone-else.fedstack.test" in out
    assert "no SRV" in out and "RESULT: FAILED" in out

    # A request signed by a server the remote cannot get keys of is refused (401).
    ours = tmp_path / "ours"
    Homeserver.configure("nobody.fedstack.test", str(ours), free_port(), free_port())
    code, out = await _check_federation(served.name, "--resolver", dns_server.address,
                                        "--ca-file", test_ca.bundle,
                                        "--allow-private-destinations", "--data-dir", str(ours),
                                        "--server-name", "nobody.fedstack.test")
    assert code == 1 and "signed request from nobody.fedstack.test: REFUSED (401" in out, out


async def test_check_federation_a_request_signed_by_a_reachable_server_is_accepted(
        served, origin, dns_server, test_ca):
    common = (served.name, "--resolver", dns_server.address, "--ca-file", test_ca.bundle,
              "--allow-private-destinations")
    code, out = await _check_federation(*common, "--data-dir", origin.hs.settings.data_dir,
                                        "--server-name", origin.name)
    # served verified our X-Matrix signature with the key it fetched from origin, then its
    # pdu service looked for the event
    assert code == 0, out
    assert (f"signed request from {origin.name}: accepted (answered 404 M_NOT_FOUND"
            in out), out
    assert "RESULT: OK" in out, out

    # The same name and key ID with another key: served fetches origin's real key, the
    # signature does not verify, and check-federation says so.
    impostor = SigningKey.generate()
    assert impostor.key_id == SigningKey.load(origin.hs.settings.path("signing_key")).key_id
    other = Path(origin.hs.settings.data_dir).parent / "impostor"
    other.mkdir()
    impostor.save(Settings(server_name=origin.name, data_dir=str(other)).path("signing_key"))
    code, out = await _check_federation(*common, "--data-dir", str(other),
                                        "--server-name", origin.name)
    assert code == 1 and "key server: OK" in out, out
    assert (f"signed request from {origin.name}: REFUSED (401 M_UNAUTHORIZED invalid signature"
            in out), out
    assert "RESULT: FAILED" in out, out
