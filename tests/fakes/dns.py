"""A small authoritative DNS server for test names, on loopback (UDP and TCP, one port).

Built on dnspython's message and rrset classes; it answers what the test wrote with
`add()`: records of the asked type (CNAMEs followed within the zone), NOERROR with an SOA
for a name that exists without that type, NXDOMAIN with an SOA otherwise (negative TTL
`negative_ttl`). The authoritative answer flag is set. `queries` counts every question
(name, type), so a test can tell a cached answer from a fresh look-up; `fail()` makes a
name's answers SERVFAIL.
"""
from __future__ import annotations

import collections
import socket
import socketserver
import struct
import threading

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class DnsServer:
    def __init__(self, negative_ttl: int = 5):
        self.negative_ttl = negative_ttl
        self.records: dict[tuple[str, str], tuple[int, list[str]]] = {}
        self.queries: collections.Counter = collections.Counter()
        self.failing: set[str] = set()        # names answered SERVFAIL
        self._lock = threading.Lock()
        self._servers: list[socketserver.BaseServer] = []
        self.host, self.port = "127.0.0.1", 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @staticmethod
    def _key(name: str) -> str:
        return name.lower().rstrip(".") + "."

    def add(self, name: str, rdtype: str, *values: str, ttl: int = 300) -> None:
        """Set (replace) the records of one name and type."""
        with self._lock:
            self.records[(self._key(name), rdtype.upper())] = (ttl, list(values))

    def remove(self, name: str, rdtype: str) -> None:
        with self._lock:
            self.records.pop((self._key(name), rdtype.upper()), None)

    def fail(self, name: str, failing: bool = True) -> None:
        """Answer SERVFAIL for `name` (any type) while `failing`."""
        with self._lock:
            (self.failing.add if failing else self.failing.discard)(self._key(name))

    def count(self, name: str, rdtype: str) -> int:
        return self.queries[(self._key(name), rdtype.upper())]

    # ---------------------------------------------------------------- answering
    def answer(self, wire: bytes) -> bytes:
        query = dns.message.from_wire(wire)
        resp = dns.message.make_response(query)
        resp.flags |= dns.flags.AA
        q = query.question[0]
        name, rdtype = q.name.to_text().lower(), dns.rdatatype.to_text(q.rdtype)
        with self._lock:
            self.queries[(name, rdtype)] += 1
            if name in self.failing:
                resp.set_rcode(dns.rcode.SERVFAIL)
            else:
                self._fill(resp, name, rdtype)
        return resp.to_wire()

    def _fill(self, resp, name: str, rdtype: str) -> None:
        for _ in range(8):                                   # CNAME chains, bounded
            found = self.records.get((name, rdtype))
            if found is not None:
                resp.answer.append(dns.rrset.from_text(name, found[0], "IN", rdtype, *found[1]))
                return
            cname = self.records.get((name, "CNAME"))
            if cname is None or rdtype == "CNAME":
                break
            resp.answer.append(dns.rrset.from_text(name, cname[0], "IN", "CNAME", *cname[1]))
            name = self._key(cname[1][0])
        exists = any(k[0] == name for k in self.records)
        if not exists:
            resp.set_rcode(dns.rcode.NXDOMAIN)
        zone = ".".join(name.rstrip(".").split(".")[-1:]) + "."
        resp.authority.append(dns.rrset.from_text(
            zone, self.negative_ttl, "IN", "SOA",
            f"ns.{zone} admin.{zone} 1 3600 600 86400 {self.negative_ttl}"))

    # ---------------------------------------------------------------- serving
    def start(self) -> "DnsServer":
        server = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self):
                data, sock = self.request
                try:
                    sock.sendto(server.answer(data), self.client_address)
                except Exception:  # noqa: BLE001 - a bad packet gets no answer
                    pass

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self):
                try:
                    while True:
                        head = self.request.recv(2, socket.MSG_WAITALL)
                        if len(head) < 2:
                            return
                        (n,) = struct.unpack("!H", head)
                        out = server.answer(self.request.recv(n, socket.MSG_WAITALL))
                        self.request.sendall(struct.pack("!H", len(out)) + out)
                except Exception:  # noqa: BLE001
                    return

        for _ in range(20):
            udp = socketserver.ThreadingUDPServer((self.host, 0), Udp)
            port = udp.server_address[1]
            try:
                socketserver.ThreadingTCPServer.allow_reuse_address = True
                tcp = socketserver.ThreadingTCPServer((self.host, port), Tcp)
            except OSError:
                udp.server_close()
                continue
            break
        else:
            raise RuntimeError("no port free for UDP and TCP at once")
        self.port = port
        for s in (udp, tcp):
            s.daemon_threads = True
            threading.Thread(target=s.serve_forever, daemon=True).start()
            self._servers.append(s)
        return self

    def stop(self) -> None:
        for s in self._servers:
            s.shutdown()
            s.server_close()
        self._servers.clear()
