"""A lightweight fake remote homeserver living in the benchmark process.

Each `FakeRemote` has its own ed25519 key, served at `/_matrix/key/v2/server` over a
self-signed TLS listener on 127.0.0.1, and its server name is `127.0.0.1:<port>`.
It can
- join a room on a real server (make_join / send_join v2, as a remote user),
- build properly hashed and signed message PDUs on top of what it knows of the room
  (`services.pdu.builder.build_event`), and send them in X-Matrix signed `/send`
  transactions,
- receive `/send`: it counts calls, transactions, PDUs, duplicates and the largest number
  of concurrent in-flight requests, and records when each message body first arrived,
- answer `/event` and `/get_missing_events` for the events it built, and count any other
  request as unexpected (404 M_UNRECOGNIZED).
- go down (listener closed: connections are refused) and come back on the same port.
"""
from __future__ import annotations

import asyncio
import collections
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

import aiohttp
import orjson
from aiohttp import web
from yarl import URL

from fedstack.cli import free_port
from services.pdu.builder import build_event, sign_template
from shared.crypto import SigningKey, sign_json
from shared.events import compute_event_id
from shared.room_versions import KNOWN_ROOM_VERSIONS, get_room_version
from shared.tls import ensure_self_signed_cert
from shared.xmatrix import sign_request


def q(s: str) -> str:
    return quote(s, safe="")


def tag_of(body: str) -> str:
    """Message bodies are `<tag>:<n>`; counters are kept per tag."""
    return body.split(":", 1)[0]


class Arrivals:
    """Where benchmark messages arrive (a fake remote, a callback receiver, a /sync loop):
    the first arrival time of each body, counts per tag, repeats, and waiting for a tag."""

    def reset_arrivals(self, who: str) -> None:
        self.who = who
        self.arrivals: dict[str, float] = {}   # message body -> first arrival (monotonic)
        self.tag_counts: collections.Counter = collections.Counter()
        self.duplicates = 0
        self._changed = getattr(self, "_changed", None) or asyncio.Event()

    def arrived(self, bodies, now: float) -> None:
        for b in bodies:
            if not isinstance(b, str):
                continue
            if b in self.arrivals:
                self.duplicates += 1
            else:
                self.arrivals[b] = now
                self.tag_counts[tag_of(b)] += 1
        self._changed.set()

    async def wait_tag(self, tag: str, n: int, timeout: float) -> float:
        """Wait until `n` distinct bodies of `tag` have arrived; return the monotonic time
        the last one arrived."""
        deadline = time.monotonic() + timeout
        while self.tag_counts[tag] < n:
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.who}: {self.tag_counts[tag]}/{n} of {tag!r} arrived")
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass
        return max(t for b, t in self.arrivals.items() if tag_of(b) == tag)


_TLS: ssl.SSLContext | None = None


def server_tls_context(work_dir: Path) -> ssl.SSLContext:
    """One self-signed certificate (127.0.0.1) shared by every fake remote."""
    global _TLS
    if _TLS is None:
        cert, key = work_dir / "fake-remote.crt", work_dir / "fake-remote.key"
        ensure_self_signed_cert(cert, key, "127.0.0.1")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        _TLS = ctx
    return _TLS


@dataclass
class RoomView:
    """What a fake remote knows of a room it joined: enough to build the next event."""
    room_id: str
    rv: object
    resident: str                          # the server it joined through
    user_id: str
    state: dict                            # (type, state_key) -> event_id
    last: dict = field(default_factory=dict)   # {"event_id", "depth"} of our newest event


class FakeRemote(Arrivals):
    def __init__(self, work_dir: Path, *, send_delay_s: float = 0.0):
        self.work_dir = work_dir
        self.port = free_port()
        self.server_name = f"127.0.0.1:{self.port}"
        self.key = SigningKey.generate()
        self.send_delay_s = send_delay_s
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._txn = 0
        self._epoch = int(time.time() * 1000)
        self.events: dict[str, dict] = {}      # event_id -> wire event (ours and the room's)
        self.reset_counters()

    # -- counters ---------------------------------------------------------------------
    def reset_counters(self) -> None:
        self.send_calls = 0                    # every PUT /send
        self.transactions = 0                  # PUT /send carrying at least one PDU
        self.pdus = 0
        self.txn_sizes: list[int] = []         # PDUs per transaction, in arrival order
        self.in_flight = 0
        self.max_in_flight = 0
        self.reset_arrivals(self.server_name)
        self.unexpected: list[str] = []

    # -- server -----------------------------------------------------------------------
    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/_matrix/key/v2/server", self._key)
        app.router.add_get("/_matrix/key/v2/server/{key_id}", self._key)
        app.router.add_put("/_matrix/federation/v1/send/{txn_id}", self._send)
        app.router.add_get("/_matrix/federation/v1/event/{event_id}", self._event)
        app.router.add_post("/_matrix/federation/v1/get_missing_events/{room_id}", self._gme)
        app.router.add_get("/_matrix/federation/v1/version", self._version)
        app.router.add_route("*", "/{tail:.*}", self._other)
        return app

    async def start(self) -> "FakeRemote":
        self._runner = web.AppRunner(self._make_app(), access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port,
                           ssl_context=server_tls_context(self.work_dir), reuse_address=True)
        await site.start()
        return self

    async def down(self) -> None:
        """Close the listener and every connection: requests are refused until `up()`."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def up(self) -> None:
        await self.start()

    async def stop(self) -> None:
        await self.down()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _json(self, obj, status=200) -> web.Response:
        return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")

    async def _key(self, request: web.Request) -> web.Response:
        body = {"server_name": self.server_name,
                "verify_keys": {self.key.key_id: {"key": self.key.public_key_base64}},
                "old_verify_keys": {},
                "valid_until_ts": int((time.time() + 86400) * 1000)}
        return self._json(sign_json(body, self.server_name, self.key))

    async def _version(self, request: web.Request) -> web.Response:
        return self._json({"server": {"name": "fedstack-bench-fake-remote", "version": "0"}})

    async def _send(self, request: web.Request) -> web.Response:
        self.send_calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if "authorization" not in request.headers:
                self.unexpected.append("unsigned /send")
                return self._json({"errcode": "M_UNAUTHORIZED"}, 401)
            body = orjson.loads(await request.read())
            now = time.monotonic()
            pdus = body.get("pdus") or []
            if pdus:
                self.transactions += 1
                self.pdus += len(pdus)
                self.txn_sizes.append(len(pdus))
            contents = [p.get("content") if isinstance(p, dict) else None for p in pdus]
            self.arrived([c.get("body") for c in contents if isinstance(c, dict)], now)
            if self.send_delay_s:
                # Stands for a real server's processing time; it also lets overlapping
                # requests (a second transaction in flight) be seen at all.
                await asyncio.sleep(self.send_delay_s)
            return self._json({"pdus": {}})
        finally:
            self.in_flight -= 1

    async def _event(self, request: web.Request) -> web.Response:
        ev = self.events.get(request.match_info["event_id"])
        if ev is None:
            return self._json({"errcode": "M_NOT_FOUND", "error": "unknown event"}, 404)
        return self._json({"origin": self.server_name, "origin_server_ts": int(time.time() * 1000),
                           "pdus": [ev]})

    async def _gme(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        earliest = set(body.get("earliest_events") or [])
        limit = min(int(body.get("limit") or 10), 20)
        out, seen = [], set(earliest)
        frontier = [p for e in body.get("latest_events") or [] if e in self.events
                    for p in self.events[e].get("prev_events", [])]
        while frontier and len(out) < limit:
            nxt = []
            for e in frontier:
                if e in seen or e not in self.events:
                    continue
                seen.add(e)
                out.append(self.events[e])
                nxt += self.events[e].get("prev_events", [])
            frontier = nxt
        out = sorted(out[:limit], key=lambda e: e.get("depth", 0))
        return self._json({"events": out})

    async def _other(self, request: web.Request) -> web.Response:
        self.unexpected.append(f"{request.method} {request.path}")
        return self._json({"errcode": "M_UNRECOGNIZED", "error": "not served by the fake remote"}, 404)

    # -- client -----------------------------------------------------------------------
    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=False, limit=8),
                timeout=aiohttp.ClientTimeout(total=300))
        return self._session

    async def request(self, destination: str, method: str, path: str, *, query=None, body=None):
        """An X-Matrix signed request; returns (status, parsed JSON or None)."""
        uri = path + ("?" + urlencode(list(query)) if query else "")
        headers = {"Authorization": sign_request(method, uri, self.server_name, destination,
                                                 self.key, body)}
        data = None
        if body is not None:
            data = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        url = URL(f"https://{destination}{uri}", encoded=True)
        async with self.session.request(method, url, data=data, headers=headers) as resp:
            raw = await resp.read()
            try:
                parsed = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                parsed = {"raw": raw[:300].decode("utf-8", "replace")}
            return resp.status, parsed

    async def join(self, resident: str, room_id: str, localpart: str = "bob") -> RoomView:
        """Join `room_id` on `resident` as @localpart:us (make_join, send_join v2)."""
        user_id = f"@{localpart}:{self.server_name}"
        status, made = await self.request(
            resident, "GET", f"/_matrix/federation/v1/make_join/{q(room_id)}/{q(user_id)}",
            query=[("ver", v) for v in KNOWN_ROOM_VERSIONS])
        if status != 200:
            raise RuntimeError(f"make_join at {resident}: {status} {made}")
        rv = get_room_version(made["room_version"])
        join = sign_template(made["event"], rv=rv, server_name=self.server_name, key=self.key)
        event_id = join.pop("event_id")
        status, resp = await self.request(
            resident, "PUT", f"/_matrix/federation/v2/send_join/{q(room_id)}/{q(event_id)}", body=join)
        if status != 200:
            raise RuntimeError(f"send_join at {resident}: {status} {resp}")
        state = {}
        for ev in list(resp.get("state") or []) + list(resp.get("auth_chain") or []):
            eid = compute_event_id(ev, rv)
            self.events[eid] = ev
        for ev in resp.get("state") or []:
            if "state_key" in ev:
                state[(ev["type"], ev["state_key"])] = compute_event_id(ev, rv)
        state[("m.room.member", user_id)] = event_id
        self.events[event_id] = join
        return RoomView(room_id=room_id, rv=rv, resident=resident, user_id=user_id, state=state,
                        last={"event_id": event_id, "depth": join["depth"]})

    def build_messages(self, room: RoomView, bodies) -> list[dict]:
        """Signed m.room.message PDUs (wire form), each on top of the previous one."""
        out = []
        for b in bodies:
            ev = build_event(rv=room.rv, server_name=self.server_name, key=self.key,
                             room_id=room.room_id, sender=room.user_id, type="m.room.message",
                             content={"msgtype": "m.text", "body": b}, state_key=None,
                             prev=[room.last], state=room.state)
            event_id = ev.pop("event_id")
            room.last = {"event_id": event_id, "depth": ev["depth"]}
            self.events[event_id] = ev
            out.append(ev)
        return out

    async def send_transaction(self, destination: str, pdus: list[dict]):
        """PUT /send with these PDUs under a new txn_id; returns (status, body)."""
        self._txn += 1
        body = {"origin": self.server_name, "origin_server_ts": int(time.time() * 1000),
                "pdus": pdus}
        return await self.request(destination, "PUT",
                                  f"/_matrix/federation/v1/send/{self._epoch}.{self._txn}", body=body)

    @staticmethod
    def event_id(room: RoomView, pdu: dict) -> str:
        return compute_event_id(pdu, room.rv)
