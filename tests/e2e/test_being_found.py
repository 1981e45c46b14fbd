"""Being found: a real transport process named by a DNS name of the test domain, its
listener on <name>:443 with a full-chain certificate of the test CA, delegating its name
with `delegate_to`; our own resolver finds it through that .well-known with TLS verified.
Also: the plain-HTTP public listener, the certificate reloaded on SIGHUP with the process
and its open connections kept, and `fedstack check-federation` printing each step."""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import ssl
import sys
import time

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
    hs = Homeserver.configure(name, str(d / "data"), 443, free_port(), bind_host=ip,
                              delegate_to=f"{name}:443", public_http_port=http_port,
                              tls_cert_path=str(cert_path), tls_key_path=str(key_path))
    hs.start_service("transport")
    try:
        _wait_http(f"http://{ip}:{hs.ports['transport']}/health", hs)
        yield Served(name, ip, hs, cert_path, key_path, http_port)
    finally:
        hs.stop()


def _wait_http(url, hs, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert hs.procs["transport"].poll() is None, "transport exited"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer")


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
                     f"names: {served.name}", "issuer: CN=fedstack test intermediate CA",
                     "key server: OK", "RESULT: OK"):
        assert expected in out, out


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
