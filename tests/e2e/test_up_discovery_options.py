"""`fedstack up`'s discovery and TLS options reach the services:

- parsing: `--resolver`, `--ca-file`, `--delegate-to`, `--public-http-port`, `--tls-cert`
  and `--tls-key`, or their FEDSTACK_* variables, end up in the homeserver's Settings and
  in the environment its service processes are started with (which `fedstack serve`
  reads back with Settings.from_env); a flag wins over its variable;
- a real `fedstack up` process (four services, bound to a loopback address of the test
  net) given all six flags: each service process's environment carries them, its
  /.well-known/matrix/server answers the delegation on the plain listener and on the
  HTTPS one (with the given certificate, verified by the test CA), a resolver of ours
  follows that delegation through the test DNS server, and SIGHUP sent to the `up`
  process (not to the transport) makes the transport serve a new certificate, with every
  process kept.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from fedstack import cli
from fedstack.cli import free_port
from services.transport.outbound import FederationClient
from shared.crypto import SigningKey
from shared.settings import Settings

OPTIONS = {   # flag -> (Settings field, FEDSTACK_* variable)
    "--resolver": ("resolver", "FEDSTACK_RESOLVER"),
    "--ca-file": ("ca_file", "FEDSTACK_CA_FILE"),
    "--delegate-to": ("delegate_to", "FEDSTACK_DELEGATE_TO"),
    "--public-http-port": ("public_http_port", "FEDSTACK_PUBLIC_HTTP_PORT"),
    "--tls-cert": ("tls_cert_path", "FEDSTACK_TLS_CERT_PATH"),
    "--tls-key": ("tls_key_path", "FEDSTACK_TLS_KEY_PATH"),
}


def values(tmp_path, tag: str) -> dict[str, str]:
    """One value per option (as a string, as on a command line)."""
    return {"--resolver": f"127.0.0.{len(tag) + 1}:5353", "--ca-file": str(tmp_path / f"ca-{tag}.pem"),
            "--delegate-to": f"matrix-{tag}.example.org:443",
            "--public-http-port": str(20000 + len(tag)),
            "--tls-cert": str(tmp_path / f"{tag}.crt"), "--tls-key": str(tmp_path / f"{tag}.key")}


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FEDSTACK_")}


def run_up_until_start(monkeypatch, tmp_path, argv_extra, env_extra) -> Settings:
    """`fedstack.cli.main(["up", ...])` in this process up to the point where it would
    start the service processes; returns the Homeserver's Settings."""
    got = {}

    def start(self):
        got["settings"] = self.settings
        raise RuntimeError("stopped by the test before starting processes")
    monkeypatch.setattr(cli.Homeserver, "start", start)
    for k in [k for k in os.environ if k.startswith("FEDSTACK_")]:
        monkeypatch.delenv(k)
    for k, v in env_extra.items():
        monkeypatch.setenv(k, v)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        status = cli.main(["up", "--server-name", "opts.fedstack.test", "--data-dir",
                           str(tmp_path / "data"), "--port", str(free_port()),
                           "--api-port", str(free_port()), *argv_extra])
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    assert status == 1 and "settings" in got
    return got["settings"]


def assert_settings(settings: Settings, vals: dict[str, str]) -> None:
    for flag, (field, _var) in OPTIONS.items():
        expected = int(vals[flag]) if field == "public_http_port" else vals[flag]
        assert getattr(settings, field) == expected, (flag, getattr(settings, field))
    # what each service process gets (start_service: os.environ + to_env) and reads back
    child = Settings.from_env({**clean_env(), **settings.to_env()})
    for _flag, (field, _var) in OPTIONS.items():
        assert getattr(child, field) == getattr(settings, field), field
    assert settings.path("tls_cert") == Path(vals["--tls-cert"])
    assert settings.path("tls_key") == Path(vals["--tls-key"])


def test_flags_reach_the_settings_and_the_services_environment(monkeypatch, tmp_path):
    vals = values(tmp_path, "flag")
    argv = [x for flag, v in vals.items() for x in (flag, v)]
    assert_settings(run_up_until_start(monkeypatch, tmp_path, argv, {}), vals)


def test_variables_reach_the_settings_and_a_flag_wins(monkeypatch, tmp_path):
    env_vals = values(tmp_path, "variable")
    env = {OPTIONS[flag][1]: v for flag, v in env_vals.items()}
    assert_settings(run_up_until_start(monkeypatch, tmp_path, [], env), env_vals)
    flag_vals = values(tmp_path, "flag")
    argv = [x for flag, v in flag_vals.items() for x in (flag, v)]
    assert_settings(run_up_until_start(monkeypatch, tmp_path, argv, env), flag_vals)


def test_without_them_the_defaults_stand(monkeypatch, tmp_path):
    s = run_up_until_start(monkeypatch, tmp_path, [], {})
    assert (s.resolver, s.ca_file, s.delegate_to, s.public_http_port) == ("", "", "", 0)
    assert s.path("tls_cert") == tmp_path.resolve() / "data" / "tls.crt"
    assert s.verify_tls is True


# ---------------------------------------------------------------- a real `fedstack up`

class Up:
    def __init__(self, proc, name, ip, port, http_port, cert_path, key_path, printed):
        self.proc, self.name, self.ip, self.port, self.http_port = proc, name, ip, port, http_port
        self.cert_path, self.key_path, self.printed = cert_path, key_path, printed

    def services(self) -> dict[str, int]:
        """{service: pid} of the `up` process's children."""
        out = {}
        kids = open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read().split()
        for pid in map(int, kids):
            argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            if b"serve" in argv:
                out[argv[argv.index(b"serve") + 1].decode()] = pid
        return out


@pytest.fixture(scope="module")
def up(tmp_path_factory, dns_server, test_ca, loopback_net):
    name, ip = loopback_net.name("up"), loopback_net.ip()
    dns_server.add(name, "A", ip)
    d = tmp_path_factory.mktemp("up")
    cert, key = test_ca.issue(name)
    cert_path, key_path = d / "fullchain.pem", d / "privkey.pem"
    shutil.copy(cert, cert_path)
    shutil.copy(key, key_path)
    port, api_port, http_port = 443, free_port(ip), free_port(ip)   # 443: found by its name
    env = {**clean_env(), "FEDSTACK_BIND_HOST": ip}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedstack.cli", "up", "--server-name", name, "--data-dir",
         str(d / "data"), "--port", str(port), "--api-port", str(api_port),
         "--resolver", dns_server.address, "--ca-file", test_ca.bundle,
         "--delegate-to", f"{name}:{port}", "--public-http-port", str(http_port),
         "--tls-cert", str(cert_path), "--tls-key", str(key_path)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    try:
        lines, deadline = [], time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "messaging" in line:
                break
        else:
            raise AssertionError("fedstack up did not start:\n" + "".join(lines))
        assert "messaging" in lines[-1], "".join(lines)
        yield Up(proc, name, ip, port, http_port, cert_path, key_path, "".join(lines))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_each_service_process_gets_the_options(up, dns_server, test_ca):
    services = up.services()
    assert set(services) == {"transaction", "pdu", "transport", "messaging"}, services
    for service, pid in services.items():
        raw = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        env = dict(kv.decode().split("=", 1) for kv in raw if b"=" in kv)
        s = Settings.from_env(env)                     # as `fedstack serve` reads it
        assert (s.resolver, s.ca_file, s.delegate_to, s.public_http_port,
                str(s.path("tls_cert")), str(s.path("tls_key"))) == (
            dns_server.address, test_ca.bundle, f"{up.name}:{up.port}", up.http_port,
            str(up.cert_path), str(up.key_path)), service


def test_well_known_answers_the_delegation_on_both_listeners(up, test_ca):
    expected = {"m.server": f"{up.name}:{up.port}"}
    r = httpx.get(f"http://{up.ip}:{up.http_port}/.well-known/matrix/server", timeout=10)
    assert r.status_code == 200 and r.json() == expected
    assert r.headers["cache-control"] == "public, max-age=86400"
    # HTTPS, with the --tls-cert chain, verified by the test CA for the server name
    ctx = ssl.create_default_context(cafile=test_ca.bundle)
    with httpx.Client(verify=ctx, timeout=10) as c:
        r = c.get(f"https://{up.ip}:{up.port}/.well-known/matrix/server",
                  extensions={"sni_hostname": up.name})
    assert r.status_code == 200 and r.json() == expected


async def test_our_resolver_follows_the_delegation_to_it(up, dns_server, test_ca,
                                                        loopback_net, tmp_path):
    """The bare name: https://<name>/.well-known (port 443 of its A record) delegates to
    <name>:443, whose key server answers for the name, TLS verified."""
    settings = Settings(server_name="checker.fedstack.test", data_dir=str(tmp_path),
                        resolver=dns_server.address, ca_file=test_ca.bundle,
                        ip_range_allowlist=loopback_net.allowlist)
    client = FederationClient(settings, SigningKey.generate())
    try:
        route = await client.discovery.route(up.name)
        assert any(f"delegates to {up.name}:443" in step for step in route.steps), route.steps
        assert route.host_header == f"{up.name}:443" and route.tls_name == up.name
        keys = await client.fetch_server_keys(up.name)
        assert keys["server_name"] == up.name
    finally:
        await client.aclose()


def served_cert(up, test_ca) -> bytes:
    ctx = ssl.create_default_context(cafile=test_ca.bundle)
    with socket.create_connection((up.ip, up.port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=up.name) as tls:
            return tls.getpeercert(binary_form=True)


def test_sighup_to_up_reloads_the_transport_certificate(up, test_ca):
    before_pids = up.services()
    before = served_cert(up, test_ca)
    cert, key = test_ca.issue(up.name)
    shutil.copy(cert, up.cert_path)
    shutil.copy(key, up.key_path)
    os.kill(up.proc.pid, signal.SIGHUP)                # the supervisor, not the transport
    deadline = time.monotonic() + 15
    while (now := served_cert(up, test_ca)) == before:
        assert time.monotonic() < deadline, "SIGHUP to `fedstack up` did not reload the certificate"
        time.sleep(0.1)
    new = x509.load_pem_x509_certificate(Path(cert).read_bytes())   # the leaf, first
    assert now == new.public_bytes(Encoding.DER)
    assert up.proc.poll() is None and up.services() == before_pids, "a process was restarted"
