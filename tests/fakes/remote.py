"""A fake remote homeserver for fault and hostile-input tests.

The model is Complement's ``federation.Server``: a server with its own signing key that
answers key requests, transactions and joins the way a test scripts it, and is strict
about everything else. Here it is a plain ASGI app, usable two ways:

- in-process: ``remote.attach(network)`` puts an httpx ASGI transport for it into an
  in-process harness network (``tests.harness``), so the homeserver under test reaches it
  without sockets (``remote.down = True`` then refuses connections);
- over the wire: ``await remote.start_tls()`` serves the same app with uvicorn in a thread,
  on 127.0.0.1 port 0 with a self-signed certificate; its server name becomes
  ``127.0.0.1:<port>`` unless one was given.

What it offers:

- its own ed25519 key (``shared.crypto.SigningKey``) and ``/_matrix/key/v2/server``; what
  that endpoint serves can be replaced (``remote.key_response_override``, a dict or a
  callable), and ``signed_key_response(...)`` builds unsigned, expired, misnamed or
  wrongly signed variants;
- strictness: every request is recorded (``remote.requests``); one that matches no route
  is answered ``404 M_UNRECOGNIZED`` and kept in ``remote.unexpected``; a route handler
  that raises is kept in ``remote.handler_errors``; ``remote.check()`` (the fixtures call
  it at teardown) fails the test if either holds anything;
- scriptable faults per route (``route.fail(Fault...)``, first-in first-out, or
  ``route.fail_always(...)``): an HTTP status with any body, a delay, a connection reset,
  a truncated body, an oversized body (declared or streamed), a malformed body, a hang
  (until the client goes away), a slow drip of bytes;
- the client side: ``remote.request(target, ...)`` signs with X-Matrix exactly what goes
  on the wire (the raw request target as httpx will send it) — or signs something else
  (``sign_method``/``sign_uri``/``sign_content``/``destination``/``key``), or sends a given
  header, or none; ``send_transaction`` PUTs ``/send``;
- rooms: ``FakeRoom.build`` builds and signs events as this server (with any field
  overridden, unsigned, or signed by another key), ``remote.join`` joins one of the
  homeserver's rooms through make_join/send_join, ``remote.create_room`` and
  ``remote.serve_joins``/``serve_leaves`` host a room that the homeserver joins, and
  ``remote.handle_transactions()`` accepts the homeserver's transactions (recording them
  in ``remote.transactions`` and adding their PDUs to the fake's view of the room).

Handlers of a TLS-served fake run in the uvicorn thread: keep them small and
non-blocking; shared records are guarded by a lock.
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import re
import secrets
import socket
import struct
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode

import httpx
import orjson

from services.pdu.builder import auth_event_ids, sign_template
from tests.contract.helpers import wait_until
from shared.canonical import CanonicalJSONError
from shared.crypto import SigningKey, encode_base64, sign_json
from shared.events import compute_content_hash, compute_event_id, sign_event
from shared.room_versions import get_room_version
from shared.tls import ensure_self_signed_cert
from shared.xmatrix import XMatrixError, parse_authorization, request_signing_json, sign_request

FED = "/_matrix/federation"
KEY_PATH = "/_matrix/key/v2/server"
_UNSET = object()
_txn_counter = itertools.count(1)


def q(s: str) -> str:
    """Percent-encode one path segment (room IDs, user IDs, event IDs)."""
    return quote(s, safe="")


def now_ms() -> int:
    return int(time.time() * 1000)


async def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """`wait_until` with this harness's longer default timeout."""
    return await wait_until(predicate, timeout, what, interval=interval)


# --------------------------------------------------------------------------- requests


@dataclass
class Req:
    """One request the fake received."""
    method: str
    path: str                          # raw (percent-encoded) path, without the query
    query: list[tuple[str, str]]
    headers: dict[str, str]            # lower-case names; last value wins
    header_list: list[tuple[str, str]]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)   # decoded route parameters
    at: float = field(default_factory=time.monotonic)

    @property
    def json(self):
        try:
            return orjson.loads(self.body) if self.body else None
        except orjson.JSONDecodeError:
            return None

    @property
    def origin(self) -> str | None:
        try:
            return parse_authorization(self.headers.get("authorization", ""))["origin"]
        except XMatrixError:
            return None


@dataclass
class Reply:
    status: int = 200
    body: object = None                # JSON value, or bytes sent as they are
    headers: dict = field(default_factory=dict)


@dataclass
class Fault:
    """A scripted misbehaviour for one answer of a route (see the constructors)."""
    kind: str
    status: int = 500
    body: object = None
    seconds: float = 0.0
    size: int = 0
    declare: bool = False

    @classmethod
    def http(cls, status: int = 500, body=None) -> "Fault":
        """Answer `status` with `body` (default: a Matrix error) instead of the handler."""
        if body is None:
            body = {"errcode": "M_UNKNOWN", "error": f"fake remote answers {status}"}
        return cls("http", status=status, body=body)

    @classmethod
    def delay(cls, seconds: float) -> "Fault":
        """Wait, then let the handler answer normally."""
        return cls("delay", seconds=seconds)

    @classmethod
    def reset(cls) -> "Fault":
        """Reset the connection without answering (TCP RST on the wire)."""
        return cls("reset")

    @classmethod
    def truncated(cls) -> "Fault":
        """Declare a Content-Length, send half the body, then close the connection."""
        return cls("truncated")

    @classmethod
    def oversized(cls, size: int, declare: bool = False) -> "Fault":
        """A 200 whose JSON-looking body is `size` bytes, streamed in chunks; with
        `declare` the Content-Length says so up front."""
        return cls("oversized", size=size, declare=declare)

    @classmethod
    def malformed(cls, raw: bytes, status: int = 200) -> "Fault":
        """Answer `status` with exactly these bytes, as application/json."""
        return cls("malformed", status=status, body=raw)

    @classmethod
    def hang(cls, seconds: float = 120.0) -> "Fault":
        """Never answer: wait until the client gives up (or `seconds`, or `stop()`)."""
        return cls("hang", seconds=seconds)

    @classmethod
    def drip(cls, seconds_per_byte: float, body=None) -> "Fault":
        """Answer 200 with `body`, one byte every `seconds_per_byte`."""
        return cls("drip", seconds=seconds_per_byte, body=body if body is not None else {"pdus": {}})


class Route:
    def __init__(self, method: str, pattern: str, handler):
        self.method = method
        self.pattern = pattern
        self.handler = handler
        rx = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(pattern))
        self.regex = re.compile("^" + rx + "$")
        self.calls: list[Req] = []
        self.faults: deque[Fault] = deque()
        self.always: Fault | None = None
        self.in_flight = 0
        self.max_in_flight = 0

    def fail(self, fault: Fault, times: int = 1) -> "Route":
        """Misbehave with `fault` for the next `times` requests."""
        self.faults.extend([fault] * times)
        return self

    def fail_always(self, fault: Fault | None) -> "Route":
        self.always = fault
        return self

    def heal(self) -> "Route":
        self.faults.clear()
        self.always = None
        return self

    def _next_fault(self) -> Fault | None:
        return self.faults.popleft() if self.faults else self.always


class _FakeTransport(httpx.ASGITransport):
    """In-process path to the fake; `down` refuses connections."""

    def __init__(self, remote: "FakeRemote"):
        super().__init__(app=remote, client=("127.0.0.9", 4433))
        self.remote = remote

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.remote.down:
            raise httpx.ConnectError("connection refused (fake remote is down)", request=request)
        return await super().handle_async_request(request)


@dataclass
class Target:
    """Where the fake sends its own requests: a server name, a base URL, and for an
    in-process homeserver the httpx transport that reaches it."""
    server_name: str
    base_url: str
    transport: httpx.AsyncBaseTransport | None = None


def as_target(t) -> Target:
    if isinstance(t, Target):
        return t
    # an in-process harness homeserver: its current link (it changes on restart)
    return Target(t.server_name, "https://" + t.server_name, t.link)


def _abort_connection(send) -> bool:
    """Reset the client connection under uvicorn (the `send` callable is bound to the
    request cycle, which holds the transport). False when not served by uvicorn."""
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        return False
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    return True


# --------------------------------------------------------------------------- the server


class FakeRemote:
    def __init__(self, server_name: str | None = "remote.test:8448", *, key: SigningKey | None = None,
                 key_validity_s: int = 86400):
        self._name = server_name
        self.key = key or SigningKey.generate("fake_" + secrets.token_hex(3))
        self.key_validity_s = key_validity_s
        self.old_verify_keys: dict = {}
        self.key_response_override = None      # dict, or callable(remote) -> dict
        self.routes: list[Route] = []
        self.requests: list[Req] = []
        self.unexpected: list[Req] = []
        self.handler_errors: list[str] = []
        self.rooms: dict[str, FakeRoom] = {}
        self.transactions: list[dict] = []     # /send bodies answered 200 (with "txn_id")
        self.down = False
        self.base_url: str | None = None
        self.lock = threading.RLock()
        self._released = threading.Event()
        self._server = None
        self._thread: threading.Thread | None = None
        self._tx_route: Route | None = None
        self.keys_route = self.route("GET", KEY_PATH, lambda req: self.key_response())

    # -- identity ------------------------------------------------------------------
    @property
    def server_name(self) -> str:
        if self._name is None:
            raise RuntimeError("a TLS fake gets its name from start_tls()")
        return self._name

    def user(self, localpart: str) -> str:
        return localpart if localpart.startswith("@") else f"@{localpart}:{self.server_name}"

    def signed_key_response(self, *, server_name: str | None = None, valid_until_ts: int | None = None,
                            verify_keys: dict | None = None, old_verify_keys: dict | None = None,
                            sign_as: str | None = None, sign_with: SigningKey | None = None,
                            sign: bool = True) -> dict:
        """A key response; by default the honest one. Every part can be replaced."""
        body = {"server_name": server_name or self.server_name,
                "verify_keys": verify_keys if verify_keys is not None
                else {self.key.key_id: {"key": self.key.public_key_base64}},
                "old_verify_keys": old_verify_keys if old_verify_keys is not None else self.old_verify_keys,
                "valid_until_ts": valid_until_ts if valid_until_ts is not None
                else now_ms() + self.key_validity_s * 1000}
        if sign:
            sign_json(body, sign_as or body["server_name"], sign_with or self.key)
        return body

    def key_response(self) -> dict:
        o = self.key_response_override
        if callable(o):
            return o(self)
        return o if o is not None else self.signed_key_response()

    # -- routes --------------------------------------------------------------------
    def route(self, method: str, pattern: str, handler) -> Route:
        """Answer `method pattern` (``{name}`` matches one raw path segment) with
        `handler(req)`: a Reply, a JSON value (200), a (status, body) pair, or a Fault.
        Replaces an earlier route for the same method and pattern."""
        r = Route(method, pattern, handler)
        with self.lock:
            self.routes = [x for x in self.routes if (x.method, x.pattern) != (method, pattern)] + [r]
        return r

    def get_route(self, method: str, pattern: str) -> Route:
        return next(r for r in self.routes if (r.method, r.pattern) == (method, pattern))

    def _match(self, req: Req) -> Route | None:
        for r in reversed(self.routes):
            if r.method != req.method:
                continue
            m = r.regex.match(req.path)
            if m:
                req.params = {k: unquote(v) for k, v in m.groupdict().items()}
                return r
        return None

    def check(self) -> None:
        """Fail (AssertionError) if an unexpected request arrived or a handler raised."""
        problems = [f"unexpected request: {r.method} {r.path}" for r in self.unexpected]
        problems += [f"handler error: {e}" for e in self.handler_errors]
        if problems:
            raise AssertionError(f"fake remote {self._name}: " + "; ".join(problems))

    def calls(self, method: str, pattern: str) -> list[Req]:
        return list(self.get_route(method, pattern).calls)

    # -- ASGI ----------------------------------------------------------------------
    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        raw = scope.get("raw_path") or scope["path"].encode()
        header_list = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
        req = Req(method=scope["method"], path=raw.split(b"?", 1)[0].decode("latin-1"),
                  query=parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True),
                  headers=dict(header_list), header_list=header_list, body=bytes(body))
        with self.lock:
            route = self._match(req)
            self.requests.append(req)
            if route is None:
                self.unexpected.append(req)
            else:
                route.calls.append(req)
                route.in_flight += 1
                route.max_in_flight = max(route.max_in_flight, route.in_flight)
                fault = route._next_fault()
        if route is None:
            await self._reply(send, Reply(404, {"errcode": "M_UNRECOGNIZED",
                                                "error": "fake remote: unexpected request"}))
            return
        try:
            if fault is not None and fault.kind != "delay":
                await self._misbehave(fault, receive, send)
                return
            if fault is not None:
                await asyncio.sleep(fault.seconds)
            try:
                result = route.handler(req)
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:  # noqa: BLE001 - a test bug: report at teardown
                with self.lock:
                    self.handler_errors.append(f"{req.method} {req.path}: {type(exc).__name__}: {exc}")
                await self._reply(send, Reply(500, {"errcode": "M_UNKNOWN", "error": "fake handler failed"}))
                return
            if isinstance(result, Fault):
                await self._misbehave(result, receive, send)
            else:
                await self._reply(send, _as_reply(result))
        finally:
            with self.lock:
                route.in_flight -= 1

    @staticmethod
    async def _reply(send, reply: Reply) -> None:
        body = reply.body if isinstance(reply.body, (bytes, bytearray)) else _dumps(
            reply.body if reply.body is not None else {})
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(k.encode(), str(v).encode()) for k, v in reply.headers.items()]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": bytes(body)})

    async def _misbehave(self, fault: Fault, receive, send) -> None:
        if fault.kind == "http":
            await self._reply(send, Reply(fault.status, fault.body))
        elif fault.kind == "malformed":
            await self._reply(send, Reply(fault.status, fault.body))
        elif fault.kind == "reset":
            if not _abort_connection(send):
                raise ConnectionResetError("connection reset by fake remote")
        elif fault.kind == "truncated":
            full = orjson.dumps({"pdus": {}, "padding": "x" * 2000})
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(full)).encode())]})
            await send({"type": "http.response.body", "body": full[: len(full) // 2], "more_body": True})
            _abort_connection(send)   # in-process: the client just gets the short body
        elif fault.kind == "oversized":
            headers = [(b"content-type", b"application/json")]
            if fault.declare:
                headers.append((b"content-length", str(fault.size).encode()))
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            head, tail = b'{"pad":"', b'"}'
            chunk = b"x" * 65536
            remaining = fault.size - len(head) - len(tail)
            await send({"type": "http.response.body", "body": head, "more_body": True})
            while remaining > 0 and not self._released.is_set():
                piece = chunk[:remaining]
                remaining -= len(piece)
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": tail})
        elif fault.kind == "hang":
            await self._wait_disconnect(receive, fault.seconds)
        elif fault.kind == "drip":
            body = _dumps(fault.body)
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            for i in range(len(body)):
                if self._released.is_set():
                    return
                await asyncio.sleep(fault.seconds)
                await send({"type": "http.response.body", "body": body[i:i + 1],
                            "more_body": i + 1 < len(body)})
        else:
            raise ValueError(f"unknown fault {fault.kind}")

    async def _wait_disconnect(self, receive, limit: float) -> None:
        deadline = time.monotonic() + limit
        pending = asyncio.ensure_future(receive())
        try:
            while time.monotonic() < deadline and not self._released.is_set():
                done, _ = await asyncio.wait({pending}, timeout=0.05)
                if done:
                    if pending.result().get("type") == "http.disconnect":
                        return
                    pending = asyncio.ensure_future(receive())
        finally:
            pending.cancel()

    # -- reachability --------------------------------------------------------------
    def transport(self) -> httpx.AsyncBaseTransport:
        return _FakeTransport(self)

    def attach(self, network: dict) -> "FakeRemote":
        """Make the fake reachable in-process from every homeserver sharing `network`."""
        network[self.server_name] = self.transport()
        return self

    async def start_tls(self, cert_dir: str | Path | None = None) -> str:
        """Serve over HTTPS on 127.0.0.1, port 0, in a uvicorn thread. Returns the name."""
        import uvicorn
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        if self._name is None:
            self._name = f"127.0.0.1:{port}"
        self.port = port
        d = Path(cert_dir) if cert_dir else Path(tempfile.mkdtemp(prefix="fake-remote-"))
        ensure_self_signed_cert(d / "tls.crt", d / "tls.key", f"127.0.0.1:{port}")
        config = uvicorn.Config(self, ssl_certfile=str(d / "tls.crt"), ssl_keyfile=str(d / "tls.key"),
                                lifespan="off", log_level="critical", access_log=False, http="h11",
                                loop="asyncio", timeout_graceful_shutdown=1)
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])),
                                        name=f"fake-remote-{port}", daemon=True)
        self._thread.start()
        await wait_for(lambda: server.started, timeout=10, what="fake remote TLS listener")
        self.base_url = f"https://127.0.0.1:{port}"
        return self.server_name

    async def stop(self) -> None:
        """Stop the TLS listener (if any) and release hanging handlers."""
        self._released.set()
        if self._server is not None:
            self._server.should_exit = True
            await asyncio.to_thread(self._thread.join, 10)
            self._server = None

    # -- client side ---------------------------------------------------------------
    async def request(self, target, method: str, path: str, body=None, *, query=None,
                      raw_body: bytes | None = None, auth=True, origin: str | None = None,
                      destination: str | None = None, key: SigningKey | None = None,
                      sign_method: str | None = None, sign_uri: str | None = None,
                      sign_content=_UNSET, headers: dict | None = None,
                      timeout: float = 15.0) -> httpx.Response:
        """Send one federation request as this server to `target` (a harness homeserver or
        a Target). `auth`: True signs with X-Matrix exactly the request as sent (unless a
        sign_* override says otherwise); False sends no Authorization; a str is sent as the
        header; a list of str sends several headers. `raw_body` replaces the JSON body."""
        t = as_target(target)
        url = t.base_url + path + ("?" + urlencode(list(query)) if query else "")
        content = raw_body if raw_body is not None else (_dumps(body) if body is not None else None)
        hdrs = {"content-type": "application/json"} if content is not None else {}
        hdrs.update(headers or {})
        async with httpx.AsyncClient(transport=t.transport, verify=False, timeout=timeout) as c:
            req = c.build_request(method, url, content=content, headers=hdrs)
            uri = req.url.raw_path.decode("ascii")
            values: list[str] = []
            if auth is True:
                signed = body if sign_content is _UNSET else sign_content
                values = [_sign_request(sign_method or method, sign_uri or uri, origin or self.server_name,
                                        destination or t.server_name, key or self.key, signed)]
            elif isinstance(auth, str):
                values = [auth]
            elif isinstance(auth, list):
                values = auth
            if values:
                raw = [(k, v) for k, v in req.headers.raw if k.lower() != b"authorization"]
                req.headers = httpx.Headers(raw + [(b"authorization", v.encode("latin-1")) for v in values])
            return await c.send(req)

    async def send_transaction(self, target, pdus=(), edus=(), txn_id: str | None = None,
                               **kw) -> httpx.Response:
        txn_id = txn_id or f"fake.{next(_txn_counter)}.{time.time_ns()}"
        body = {"origin": self.server_name, "origin_server_ts": now_ms(), "pdus": list(pdus)}
        if edus:
            body["edus"] = list(edus)
        return await self.request(target, "PUT", f"{FED}/v1/send/{q(txn_id)}", body, **kw)

    # -- transactions from the homeserver ------------------------------------------
    def handle_transactions(self) -> Route:
        """Accept /send: record the body, add its PDUs to the fake's rooms, answer 200."""
        if self._tx_route is not None:
            return self._tx_route

        def on_send(req: Req):
            body = req.json or {}
            results = {}
            for pdu in body.get("pdus", []):
                room = self.rooms.get(pdu.get("room_id"))
                rv = room.rv if room else get_room_version("12")
                results[compute_event_id(pdu, rv)] = {}
                if room is not None:
                    room.add(pdu)
            with self.lock:
                self.transactions.append(dict(body, txn_id=req.params["txn_id"]))
            return {"pdus": results}

        self._tx_route = self.route("PUT", FED + "/v1/send/{txn_id}", on_send)
        return self._tx_route

    def received_pdus(self) -> list[dict]:
        with self.lock:
            return [p for t in self.transactions for p in t.get("pdus", [])]

    def received_event_ids(self) -> list[str]:
        out = []
        for p in self.received_pdus():
            room = self.rooms.get(p.get("room_id"))
            out.append(compute_event_id(p, room.rv if room else get_room_version("12")))
        return out

    # -- rooms -----------------------------------------------------------------------
    async def join(self, target, room_id: str, localpart: str = "fred",
                   versions=("10", "11", "12")) -> "FakeRoom":
        """A user of this server joins `room_id` on `target` via make_join/send_join v2.
        Also starts accepting the target's transactions."""
        user = self.user(localpart)
        self.handle_transactions()
        r = await self.request(target, "GET", f"{FED}/v1/make_join/{q(room_id)}/{q(user)}",
                               query=[("ver", v) for v in versions])
        if r.status_code != 200:
            raise AssertionError(f"make_join failed: {r.status_code} {r.text}")
        made = r.json()
        version = made["room_version"]
        rv = get_room_version(version)
        ev = sign_template(made["event"], rv=rv, server_name=self.server_name, key=self.key)
        eid = ev.pop("event_id")
        r = await self.request(target, "PUT", f"{FED}/v2/send_join/{q(room_id)}/{q(eid)}", ev)
        if r.status_code != 200:
            raise AssertionError(f"send_join failed: {r.status_code} {r.text}")
        resp = r.json()
        room = self.rooms.get(room_id) or FakeRoom(self, room_id, version)
        for e in resp.get("auth_chain", []):
            room.add(e, state=False, extremity=False)
        for e in resp.get("state", []):
            room.add(e, extremity=False)
        room.add(resp.get("event") or ev, extremity=False)
        with self.lock:
            room.extremities = [eid]
            self.rooms[room_id] = room
        return room

    def create_room(self, creator: str = "creator", version: str = "11", *,
                    join_rule: str = "public") -> "FakeRoom":
        """A room hosted by this server (create, creator's join, power levels, join rules)."""
        rv = get_room_version(version)
        creator = self.user(creator)
        room = FakeRoom(self, None, version)
        if not rv.room_id_is_create_id:
            room.room_id = f"!{secrets.token_urlsafe(12)}:{self.server_name}"
        content = {"room_version": version}
        if rv.creator_in_content:
            content["creator"] = creator
        cid, _ = room.build(creator, "m.room.create", content, state_key="", prev_events=[], auth_events=[])
        if rv.room_id_is_create_id:
            room.room_id = "!" + cid[1:]
        room.build(creator, "m.room.member", {"membership": "join"}, state_key=creator)
        users = {} if rv.privileged_creators else {creator: 100}
        room.build(creator, "m.room.power_levels", {"users": users, "users_default": 0, "events_default": 0,
                                                     "state_default": 50, "ban": 50, "kick": 50,
                                                     "redact": 50, "invite": 0}, state_key="")
        room.build(creator, "m.room.join_rules", {"join_rule": join_rule}, state_key="")
        self.rooms[room.room_id] = room
        return room

    def _template(self, room: "FakeRoom", user_id: str, membership: str) -> dict:
        prevs = [room.events[e] for e in room.extremities]
        tmpl = {"type": "m.room.member", "room_id": room.room_id, "sender": user_id,
                "state_key": user_id, "content": {"membership": membership},
                "origin_server_ts": now_ms(), "prev_events": list(room.extremities),
                "depth": max([p["depth"] for p in prevs], default=0) + 1}
        tmpl["auth_events"] = auth_event_ids(tmpl, room.state, room.rv)
        return tmpl

    def serve_joins(self, room: "FakeRoom", *, template=None, response=None) -> tuple[Route, Route]:
        """Answer make_join/send_join for `room`. `template(t)` / `response(r)` may rewrite
        (or replace, by returning a value) the template / the send_join answer."""
        self.handle_transactions()

        def make_join(req: Req):
            if req.params["room_id"] != room.room_id:
                return Reply(404, {"errcode": "M_NOT_FOUND", "error": "unknown room"})
            vers = [v for k, v in req.query if k == "ver"]
            if room.version not in vers:
                return Reply(400, {"errcode": "M_INCOMPATIBLE_ROOM_VERSION", "error": "no",
                                   "room_version": room.version})
            tmpl = self._template(room, req.params["user_id"], "join")
            if template is not None:
                tmpl = template(tmpl) or tmpl
            return {"room_version": room.version, "event": tmpl}

        def send_join(req: Req):
            ev = req.json
            state_ids = list(room.state.values())
            room.add(ev)
            chain = room.auth_chain(state_ids + list(ev.get("auth_events", [])))
            resp = {"state": [room.events[e] for e in state_ids],
                    "auth_chain": [room.events[e] for e in chain if e not in state_ids],
                    "event": ev, "members_omitted": False, "servers_in_room": [self.server_name]}
            if response is not None:
                resp = response(resp) or resp
            return resp

        return (self.route("GET", FED + "/v1/make_join/{room_id}/{user_id}", make_join),
                self.route("PUT", FED + "/v2/send_join/{room_id}/{event_id}", send_join))

    def serve_leaves(self, room: "FakeRoom", *, template=None) -> tuple[Route, Route]:
        """Answer make_leave/send_leave for `room` (template rewritable as for joins)."""
        def make_leave(req: Req):
            tmpl = self._template(room, req.params["user_id"], "leave")
            if template is not None:
                tmpl = template(tmpl) or tmpl
            return {"room_version": room.version, "event": tmpl}

        def send_leave(req: Req):
            room.add(req.json)
            return {}

        return (self.route("GET", FED + "/v1/make_leave/{room_id}/{user_id}", make_leave),
                self.route("PUT", FED + "/v2/send_leave/{room_id}/{event_id}", send_leave))


def _dumps(obj) -> bytes:
    """JSON as a sender would put it on the wire (any number, as Python's json writes it)."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _sign_request(method, uri, origin, destination, key: SigningKey, content) -> str:
    """X-Matrix header; for content that is not canonical JSON (floats, big integers) the
    signature covers the sorted compact JSON, as Synapse's encoder writes it."""
    try:
        return sign_request(method, uri, origin, destination, key, content)
    except CanonicalJSONError:
        obj = request_signing_json(method, uri, origin, destination, content)
        sig = encode_base64(key.sign(json.dumps(obj, ensure_ascii=False, separators=(",", ":"),
                                                sort_keys=True).encode()))
        return (f'X-Matrix origin="{origin}",destination="{destination}",'
                f'key="{key.key_id}",sig="{sig}"')


def _as_reply(result) -> Reply:
    if isinstance(result, Reply):
        return result
    if isinstance(result, tuple):
        return Reply(result[0], result[1])
    return Reply(200, result)


class FakeRoom:
    """The fake's view of one room: events by ID, current state, forward extremities."""

    def __init__(self, remote: FakeRemote, room_id: str | None, version: str):
        self.remote = remote
        self.room_id = room_id
        self.version = version
        self.rv = get_room_version(version)
        self.events: dict[str, dict] = {}
        self.state: dict[tuple[str, str], str] = {}
        self.extremities: list[str] = []

    def event_id(self, ev: dict) -> str:
        return compute_event_id(ev, self.rv)

    def add(self, ev: dict, *, state: bool = True, extremity: bool = True) -> str:
        eid = compute_event_id(ev, self.rv)
        with self.remote.lock:
            if eid in self.events:
                return eid
            self.events[eid] = ev
            if state and isinstance(ev.get("state_key"), str):
                self.state[(ev["type"], ev["state_key"])] = eid
            if extremity:
                self.extremities = [e for e in self.extremities if e not in ev.get("prev_events", [])] + [eid]
        return eid

    def auth_chain(self, event_ids) -> list[str]:
        seen, todo = [], list(event_ids)
        while todo:
            e = todo.pop()
            if e in seen or e not in self.events:
                continue
            seen.append(e)
            todo += self.events[e].get("auth_events", [])
        return seen

    def build(self, sender: str, type: str, content: dict, *, state_key: str | None = None,
              prev_events: list[str] | None = None, auth_events: list[str] | None = None,
              depth: int | None = None, ts: int | None = None, extra: dict | None = None,
              sign: bool = True, signer: str | None = None, key: SigningKey | None = None,
              add: bool = True) -> tuple[str, dict]:
        """Build (and by default sign as the fake and add to the room) one event.
        Returns (event_id, wire event). `sender` may be a localpart of the fake."""
        sender = self.remote.user(sender)
        with self.remote.lock:
            prev_events = list(self.extremities) if prev_events is None else list(prev_events)
            ev = {"type": type, "sender": sender, "content": content,
                  "origin_server_ts": ts if ts is not None else now_ms(),
                  "prev_events": prev_events,
                  "depth": depth if depth is not None else max(
                      [self.events[p]["depth"] for p in prev_events if p in self.events], default=0) + 1,
                  "hashes": {}, "signatures": {}}
            if not (self.rv.room_id_is_create_id and type == "m.room.create"):
                ev["room_id"] = self.room_id
            if state_key is not None:
                ev["state_key"] = state_key
            if extra:
                ev.update(extra)
            ev["auth_events"] = (auth_event_ids(ev, self.state, self.rv) if auth_events is None
                                 else list(auth_events))
        if sign:
            sign_event(ev, signer or self.remote.server_name, key or self.remote.key, self.rv)
        else:
            ev["hashes"] = {"sha256": compute_content_hash(ev)}
        eid = compute_event_id(ev, self.rv)
        if add:
            self.add(ev)
        return eid, ev

    def message(self, sender: str = "fred", body: str = "hello", **kw) -> tuple[str, dict]:
        return self.build(sender, "m.room.message", {"msgtype": "m.text", "body": body}, **kw)
