"""Federation with a real Synapse, both named by DNS names of the test domain and both
delegated, TLS verified on both sides (certificates of the suite's test CA; Synapse given
it with `federation_custom_ca_list`, we with `ca_file`):

- Synapse's name SYN delegates by .well-known (served on SYN:443 by a small web server of
  the test) to SYNFED:<its federation port>; we resolve both through the suite's DNS server
  (`resolver`).
- Our name FED delegates with `--delegate-to FEDFED:<our port>`: the web server of FED:443
  forwards /.well-known/matrix/server to our plain-HTTP public listener, as a reverse proxy
  would (README). Synapse resolves FED and FEDFED through the machine's hosts file, which
  this module extends and restores.

Joins both ways and messages both ways. Our SSRF guard stays on (only the test addresses
are allow-listed)."""
from __future__ import annotations

import atexit
import http.server
import secrets
import ssl
import threading
from pathlib import Path

import httpx
import pytest

from fedstack.cli import Homeserver, free_port
from tests.interop.fedstack_peer import (FedstackPeer, bodies, membership, synapse_user,
                                         wait_synapse_bodies, wait_synapse_state)
from tests.interop.synapse_peer import SynapsePeer

WELL_KNOWN = "/.well-known/matrix/server"
HOSTS = Path("/etc/hosts")


class WellKnownServer:
    """HTTPS on ip:443 (a thread: the interop tests are synchronous) answering
    /.well-known/matrix/server with `answer()` -> (status, headers, body)."""

    def __init__(self, ip: str, cert: tuple[str, str], answer):
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.headers.get("Host", ""))
                status, headers, body = answer() if self.path == WELL_KNOWN else (404, {}, b"{}")
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer((ip, 443), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*cert)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class HostsFile:
    """Adds lines to /etc/hosts; `restore()` puts the original back (also at exit)."""

    def __init__(self):
        self.original = HOSTS.read_text()
        atexit.register(self.restore)

    def add(self, entries: dict[str, str]) -> None:
        lines = "".join(f"{ip} {name}\n" for name, ip in entries.items())
        HOSTS.write_text(HOSTS.read_text().rstrip("\n") + "\n" + lines)

    def restore(self) -> None:
        HOSTS.write_text(self.original)
        atexit.unregister(self.restore)


@pytest.fixture(scope="module")
def delegated(tmp_path_factory, dns_server, test_ca, loopback_net, callbacks):
    hexs = secrets.token_hex(3)
    syn, synfed = f"syn-{hexs}.fedstack.test", f"synfed-{hexs}.fedstack.test"
    fed, fedfed = f"fed-{hexs}.fedstack.test", f"fedfed-{hexs}.fedstack.test"
    ip_syn, ip_fed = loopback_net.ip(), loopback_net.ip()
    started = []
    hosts = HostsFile()
    try:
        # Synapse: SYN, its federation listener on 127.0.0.1 with a certificate for SYNFED
        syn_cert = test_ca.issue(synfed)
        synapse = SynapsePeer.start(tmp_path_factory.mktemp("synapse-delegated"), server_name=syn,
                                    extra_config={
                                        "tls_certificate_path": syn_cert[0],
                                        "tls_private_key_path": syn_cert[1],
                                        "federation_verify_certificates": True,
                                        "federation_custom_ca_list": [test_ca.bundle]})
        started.append(synapse.stop)
        dns_server.add(syn, "A", ip_syn)
        dns_server.add(synfed, "A", "127.0.0.1")
        body = ('{"m.server": "%s:%d"}' % (synfed, synapse.fed_port)).encode()
        syn_wk = WellKnownServer(ip_syn, test_ca.issue(syn),
                                 lambda: (200, {"Cache-Control": "max-age=3600"}, body))
        started.append(syn_wk.stop)

        # fedstack: FED, delegated to FEDFED:port, TLS verified, SSRF guard on
        port, api_port, http_port = free_port(), free_port(), free_port()
        cert = test_ca.issue(fedfed)
        hs = Homeserver.configure(
            fed, str(tmp_path_factory.mktemp("fedstack-delegated")), port, api_port,
            verify_tls=True, ca_file=test_ca.bundle, resolver=dns_server.address,
            allow_private_destinations=False,
            ip_range_allowlist=f"127.0.0.1/32,{loopback_net.allowlist}",
            delegate_to=f"{fedfed}:{port}", public_http_port=http_port,
            tls_cert_path=cert[0], tls_key_path=cert[1], backoff_min_s=0.2, backoff_max_s=2.0)
        hs.start()
        started.append(hs.stop)

        def proxied():     # the web server of FED forwards to our plain listener
            r = httpx.get(f"http://127.0.0.1:{http_port}{WELL_KNOWN}", timeout=5)
            return r.status_code, {"Cache-Control": r.headers["cache-control"]}, r.content
        fed_wk = WellKnownServer(ip_fed, test_ca.issue(fed), proxied)
        started.append(fed_wk.stop)
        hosts.add({fed: ip_fed, fedfed: "127.0.0.1"})
        yield synapse, FedstackPeer(hs, callbacks), syn_wk, fed_wk
    finally:
        for stop in reversed(started):
            stop()
        hosts.restore()


def test_names_and_delegations(delegated):
    synapse, ours, _syn_wk, _fed_wk = delegated
    assert ":" not in synapse.server_name and ":" not in ours.server_name
    assert synapse.server_name.startswith("syn-") and ours.server_name.startswith("fed-")


def test_we_join_a_synapse_room_and_messages_flow_both_ways(delegated):
    synapse, ours, syn_wk, _fed_wk = delegated
    t = secrets.token_hex(3)
    alice, alice_tok = synapse_user(synapse, "dl-alice")
    room = synapse.create_room(alice_tok, room_version="12", name=f"deleg-{t}")
    bob = ours.user(f"bob{t}")
    ours.join(room, bob, [synapse.server_name])
    sid = ours.subscribe(room)
    wait_synapse_state(synapse, alice_tok, room, lambda s: membership(s, bob) == "join")
    synapse.send_message(alice_tok, room, f"from-synapse-{t}")
    ours.wait_delivered(sid, lambda evs: f"from-synapse-{t}" in bodies(evs))
    ours.send(room, bob, f"from-fedstack-{t}")
    wait_synapse_bodies(synapse, alice_tok, room, lambda b: f"from-fedstack-{t}" in b)
    assert syn_wk.requests and set(syn_wk.requests) == {synapse.server_name}


def test_synapse_joins_our_room_and_messages_flow_both_ways(delegated):
    synapse, ours, _syn_wk, fed_wk = delegated
    t = secrets.token_hex(3)
    bob = ours.user(f"host{t}")
    room = ours.create_room(bob, version="12", name=f"ours-{t}")
    sid = ours.subscribe(room)
    carol, carol_tok = synapse_user(synapse, f"dl-carol{t}")
    assert synapse.join_room(carol_tok, room, server_name=ours.server_name) == room
    ours.wait_state(room, lambda s: membership(s, carol) == "join", timeout=60)
    ours.send(room, bob, f"to-synapse-{t}")
    wait_synapse_bodies(synapse, carol_tok, room, lambda b: f"to-synapse-{t}" in b)
    synapse.send_message(carol_tok, room, f"to-fedstack-{t}")
    ours.wait_delivered(sid, lambda evs: f"to-fedstack-{t}" in bodies(evs))
    assert fed_wk.requests, "Synapse never asked for our .well-known"
