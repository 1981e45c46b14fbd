"""The README's reverse-proxy examples for being found, run as written: its Caddyfile
(Debian's caddy) and its nginx `location` blocks (Debian's nginx), each installed with
apt-get when missing, in front of fedstack's plain-HTTP public listener.

Only what the README presents as placeholders is substituted: the names `example.org`
and `matrix.example.org` (by two names of the test domain, both with the proxy's
loopback address in the test DNS server) and the port 8008 of `--public-http-port 8008`.
What the examples leave to the operator is supplied around them, not inside them:
for Caddy a global options block (its own local CA in place of Let's Encrypt, no admin
endpoint, listening on the proxy's address only), for nginx the `server` blocks holding
the README's `location` blocks (certificates of the test CA).

Through the proxy, with TLS verified: our resolver follows the delegation
(`/.well-known/matrix/server` of example.org says matrix.example.org:443), fetches the
key server's answer for example.org, and a request signed as another server (whose keys
the homeserver fetches) is accepted, so Host, path and Authorization passed unchanged;
the same request with a bad signature is refused.
"""
from __future__ import annotations

import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from fedstack.cli import Homeserver, free_port
from services.transport.outbound import FederationClient
from shared.crypto import SigningKey
from shared.settings import Settings
from tests.contract.helpers import key_response
from tests.fakes.sites import Site

README = Path(__file__).resolve().parents[2] / "README.md"
WELL_KNOWN = "/.well-known/matrix/server"
SIGNED = "/_matrix/federation/v1/event/%24proxy-check%3Aabc"   # escapes must pass as sent


def being_found_text() -> str:
    text = README.read_text()
    start = text.index("**Being found.**")
    return text[start:text.index("**Checking.**", start)]


def readme_caddyfile() -> str:
    return re.search(r"With Caddy.*?```\n(.*?)```", being_found_text(), re.S).group(1)


def readme_nginx_locations() -> tuple[str, str]:
    """(the example.org location, the matrix.example.org location)."""
    para = being_found_text().split("The same with nginx:", 1)[1].split("(Or expose", 1)[0]
    wk, matrix = [s for s in re.findall(r"`([^`]*)`", para) if s.startswith("location")]
    assert "well-known" in wk and "/_matrix/" in matrix
    return wk, matrix


def substitute(text: str, name: str, mname: str, http_port: int) -> str:
    assert "127.0.0.1:8008" in text
    return (text.replace("matrix.example.org", mname).replace("example.org", name)
            .replace("127.0.0.1:8008", f"127.0.0.1:{http_port}"))


def installed(program: str, package: str) -> str:
    """Debian's `package`, installed with apt-get when `program` is missing."""
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/usr/bin")
    if path is None:
        subprocess.run(["apt-get", "update", "-qq"], check=False, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
                       check=True, timeout=900)
        path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/usr/bin")
    assert path, f"{package} could not be installed"
    return path


# ---------------------------------------------------------------- the homeserver

class Found:
    def __init__(self, name, mname, hs, http_port, origin, origin_key):
        self.name, self.mname, self.hs, self.http_port = name, mname, hs, http_port
        self.origin, self.origin_key = origin, origin_key


@pytest.fixture(scope="module")
async def origin_site(test_ca, loopback_net, dns_server):
    """Another server's key server (at <origin>:8448): the homeserver fetches it to check
    the signed request."""
    name, ip = loopback_net.name("proxy-origin"), loopback_net.ip()
    dns_server.add(name, "A", ip)
    key = SigningKey.generate()
    site = await Site(test_ca, ip, 8448, name).start()
    site.routes["/_matrix/key/v2/server"] = (200, {}, key_response(name, key))
    yield name, key
    await site.stop()


@pytest.fixture(scope="module")
def found(tmp_path_factory, dns_server, test_ca, loopback_net, origin_site):
    """`fedstack up --server-name example.org --delegate-to matrix.example.org:443
    --public-http-port 8008` (names and port substituted), bound to 127.0.0.1 as by
    default; transaction, pdu and transport are enough for federation requests."""
    name, mname = loopback_net.name("example"), loopback_net.name("matrix")
    http_port = free_port()
    d = tmp_path_factory.mktemp("proxied")
    hs = Homeserver.configure(name, str(d / "data"), free_port(), free_port(),
                              delegate_to=f"{mname}:443", public_http_port=http_port,
                              resolver=dns_server.address, ca_file=test_ca.bundle,
                              ip_range_allowlist=loopback_net.allowlist)
    try:
        for instance in ("transaction", "pdu", "transport"):
            hs.start_service(instance)
        hs.wait_healthy(["transaction", "pdu", "transport"])
        yield Found(name, mname, hs, http_port, *origin_site)
    finally:
        hs.stop()


# ---------------------------------------------------------------- the proxies

def wait_for_tls(ip: str, names, cafile: Path, proc, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"the proxy exited with {proc.returncode}"
        try:
            for n in names:
                ctx = ssl.create_default_context(cafile=str(cafile))
                with socket.create_connection((ip, 443), timeout=2) as raw:
                    with ctx.wrap_socket(raw, server_hostname=n):
                        pass
            return
        except (OSError, ssl.SSLError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def run_caddy(found, ip: str, d: Path):
    caddy = installed("caddy", "caddy")
    site = substitute(readme_caddyfile(), found.name, found.mname, found.http_port)
    options = (f"{{\n\tadmin off\n\tdefault_bind {ip}\n\thttp_port {free_port(ip)}\n"
               f"\thttps_port 443\n\tlocal_certs\n\tskip_install_trust\n"
               f"\tstorage file_system {d / 'caddy-data'}\n}}\n")
    (d / "Caddyfile").write_text(options + site)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(d), "XDG_DATA_HOME": str(d / "xdg-data"),
           "XDG_CONFIG_HOME": str(d / "xdg-config")}
    log = open(d / "caddy.log", "wb")
    proc = subprocess.Popen([caddy, "run", "--config", str(d / "Caddyfile"),
                             "--adapter", "caddyfile"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    root = d / "caddy-data" / "pki" / "authorities" / "local" / "root.crt"
    deadline = time.monotonic() + 30
    while not root.exists():
        assert proc.poll() is None, (d / "caddy.log").read_text()
        assert time.monotonic() < deadline, "caddy made no local CA"
        time.sleep(0.1)
    return proc, root


def run_nginx(found, ip: str, d: Path, test_ca):
    nginx = installed("nginx", "nginx")
    wk, matrix = (substitute(x, found.name, found.mname, found.http_port)
                  for x in readme_nginx_locations())
    blocks = []
    for server_name, location in ((found.name, wk), (found.mname, matrix)):
        cert, key = test_ca.issue(server_name)
        blocks.append(f"  server {{\n    listen {ip}:443 ssl;\n    server_name {server_name};\n"
                      f"    ssl_certificate {cert};\n    ssl_certificate_key {key};\n"
                      f"    {location}\n  }}\n")
    temp = "".join(f"  {k}_temp_path {d / k};\n"
                   for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = (f"daemon off;\nuser root;\nworker_processes 1;\npid {d / 'nginx.pid'};\n"
            f"error_log {d / 'nginx-error.log'};\nevents {{}}\nhttp {{\n  access_log off;\n"
            f"{temp}" + "".join(blocks) + "}\n")
    (d / "nginx.conf").write_text(conf)
    proc = subprocess.Popen([nginx, "-c", str(d / "nginx.conf"), "-p", str(d)],
                            stdout=open(d / "nginx.log", "wb"), stderr=subprocess.STDOUT)
    return proc, Path(test_ca.bundle)


@pytest.fixture(params=["caddy", "nginx"])
def proxy(request, found, dns_server, test_ca, loopback_net, tmp_path):
    """The README's example for `request.param` on <ip>:443; yields the CA to trust."""
    ip = loopback_net.ip()
    dns_server.add(found.name, "A", ip)
    dns_server.add(found.mname, "A", ip)
    if request.param == "caddy":
        proc, ca = run_caddy(found, ip, tmp_path)
    else:
        proc, ca = run_nginx(found, ip, tmp_path, test_ca)
    try:
        wait_for_tls(ip, (found.name, found.mname), ca, proc)
        yield ca
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_readme_examples_are_there():
    caddy = readme_caddyfile()
    assert "handle /.well-known/matrix/server" in caddy and "reverse_proxy /_matrix/*" in caddy
    wk, matrix = (" ".join(x.split()) for x in readme_nginx_locations())
    assert "proxy_pass http://127.0.0.1:8008;" in wk and "proxy_set_header Host $host;" in matrix


async def test_found_through_the_readme_proxy(found, proxy, dns_server, loopback_net,
                                              tmp_path):
    def client(server_name: str, key: SigningKey) -> FederationClient:
        return FederationClient(Settings(server_name=server_name, data_dir=str(tmp_path),
                                         resolver=dns_server.address, ca_file=str(proxy),
                                         ip_range_allowlist=loopback_net.allowlist), key)

    ours = client(found.origin, found.origin_key)
    impostor = client(found.origin, SigningKey.generate())
    try:
        route = await ours.discovery.route(found.name)
        assert any(f"delegates to {found.mname}:443" in s for s in route.steps), route.steps
        assert (route.host_header, route.tls_name) == (f"{found.mname}:443", found.mname)
        left = ours.well_known._cache[found.name].expires - time.monotonic()
        assert 86000 < left <= 86400, "the proxy lost the .well-known's Cache-Control"

        keys = await ours.fetch_server_keys(found.name)
        assert keys["server_name"] == found.name

        resp = await ours.request(found.name, "GET", SIGNED)
        assert resp["status"] == 404 and resp["body"]["errcode"] == "M_NOT_FOUND", resp
        resp = await impostor.request(found.name, "GET", SIGNED)
        assert resp["status"] == 401, resp
        resp = await ours.request(found.name, "GET", SIGNED, sign=False)
        assert resp["status"] == 401, resp
    finally:
        await ours.aclose()
        await impostor.aclose()
