"""The servers under test, driven from the benchmark's event loop.

- `FedstackServer`: one fedstack homeserver as four real processes (`fedstack.cli.Homeserver`,
  HTTPS federation on loopback), driven through its messaging API with aiohttp.
- `SynapseServer`: one real Synapse (`tests/interop/synapse_peer.py`'s `SynapsePeer`),
  driven through its client API with aiohttp.
- `CallbackReceiver`: the subscription endpoint fedstack delivers events to.
- `SyncWatcher`: a Synapse user's `/sync` long-poll loop, recording when messages arrive.

Blocking set-up calls (starting processes, registering users) run in a thread so that the
fake remotes served by this loop keep answering meanwhile.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp import web

from bench.common import CpuMeter, log, rss_mb
from bench.fake_remote import Arrivals
from fedstack.cli import Homeserver, free_port
from shared.internal import SECRET_HEADER


def q(s: str) -> str:
    return quote(s, safe="")


def message(body: str) -> dict:
    return {"msgtype": "m.text", "body": body}


class APIError(RuntimeError):
    pass


async def _json_call(session: aiohttp.ClientSession, method: str, url: str, *, body=None,
                     headers=None, params=None, ok=(200,)):
    data = orjson.dumps(body) if body is not None else None
    h = {"Content-Type": "application/json"} if data is not None else {}
    h.update(headers or {})
    async with session.request(method, url, data=data, headers=h, params=params) as resp:
        raw = await resp.read()
        if resp.status not in ok:
            raise APIError(f"{method} {url} -> {resp.status}: {raw[:500]!r}")
        return orjson.loads(raw) if raw else None


def _session(limit: int = 64) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit, ssl=False),
                                 timeout=aiohttp.ClientTimeout(total=600))


# --------------------------------------------------------------------------- fedstack

class FedstackServer:
    def __init__(self, data_dir: Path, label: str, database_url: str = ""):
        self.data_dir = data_dir
        self.database_url = database_url
        self.label = label
        self.hs: Homeserver | None = None
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> "FedstackServer":
        port, api_port = free_port(), free_port()

        def _start():
            hs = Homeserver.configure(f"127.0.0.1:{port}", str(self.data_dir), port, api_port,
                                      allow_private_destinations=True, verify_tls=False,
                                      database_url=self.database_url)
            hs.start()
            return hs
        t0 = time.monotonic()
        self.hs = await asyncio.to_thread(_start)
        self.session = _session()
        log(f"fedstack {self.label} {self.server_name} up in {time.monotonic() - t0:.1f}s "
            f"(pids {self.pids})")
        return self

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.hs is not None:
            await asyncio.to_thread(self.hs.stop)
            self.hs = None

    @property
    def server_name(self) -> str:
        return self.hs.settings.server_name

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.hs.ports['messaging']}"

    @property
    def pids(self) -> dict[str, int]:
        return {s: p.pid for s, p in self.hs.procs.items()}

    def cpu_meter(self) -> CpuMeter:
        """The homeserver's processes, and on PostgreSQL the server backends of its
        database (the work sqlite does inside the transaction process)."""
        return CpuMeter(list(self.pids.values()) + self.database_pids())

    def database_pids(self) -> list[int]:
        if not self.database_url.startswith("postgresql"):
            return []
        import psycopg
        with psycopg.connect(self.database_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
            return [r[0] for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()")]

    def rss(self) -> dict[str, float]:
        return {s: rss_mb(pid) for s, pid in self.pids.items()}

    def user(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"

    async def call(self, method: str, path: str, body=None):
        return await _json_call(self.session, method, self.api + path, body=body,
                                headers={"authorization": f"Bearer {self.hs.settings.token()}"})

    async def create_room(self, creator: str) -> str:
        return (await self.call("POST", "/v1/rooms", {"creator": creator, "room_version": "12",
                                                       "preset": "public_chat"}))["room_id"]

    async def subscribe(self, url: str, room_id: str) -> str:
        return (await self.call("POST", "/v1/subscriptions",
                                {"url": url, "room_id": room_id, "types": ["m.room.message"]}))["subscription_id"]

    async def join(self, room_id: str, user_id: str, servers: list[str]) -> str:
        return (await self.call("POST", f"/v1/rooms/{q(room_id)}/join",
                                {"user_id": user_id, "servers": servers}))["event_id"]

    async def send(self, room_id: str, sender: str, body: str) -> str:
        return (await self.call("POST", f"/v1/rooms/{q(room_id)}/events",
                                {"sender": sender, "type": "m.room.message",
                                 "content": message(body)}))["event_id"]

    async def send_batch(self, room_id: str, sender: str, bodies: list[str]) -> list[dict]:
        return (await self.call("POST", f"/v1/rooms/{q(room_id)}/events/batch",
                                {"events": [{"sender": sender, "type": "m.room.message",
                                             "content": message(b)} for b in bodies]}))["results"]

    async def destinations(self) -> dict:
        """The transaction service's internal view of destinations (queues, backoff,
        max_in_flight_seen)."""
        url = f"http://127.0.0.1:{self.hs.ports['transaction']}/_internal/transaction/v1/destinations"
        return await _json_call(self.session, "GET", url,
                                headers={SECRET_HEADER: self.hs.settings.secret()})


# --------------------------------------------------------------------------- Synapse

class SynapseServer:
    def __init__(self, work_dir: Path, label: str):
        self.work_dir = work_dir
        self.label = label
        self.peer = None
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> "SynapseServer":
        from tests.interop.synapse_peer import SynapsePeer, ensure_synapse_venv
        t0 = time.monotonic()
        python = await asyncio.to_thread(ensure_synapse_venv)
        # No presence: fedstack has none, and its EDUs would only add traffic to compare.
        self.peer = await asyncio.to_thread(
            SynapsePeer.start, self.work_dir, python=python, log_level="WARNING",
            extra_config={"presence": {"enabled": False}})
        self.session = _session()
        log(f"Synapse {self.label} {self.server_name} up in {time.monotonic() - t0:.1f}s (pid {self.pid})")
        return self

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.peer is not None:
            await asyncio.to_thread(self.peer.stop)

    @property
    def server_name(self) -> str:
        return self.peer.server_name

    @property
    def pid(self) -> int:
        return self.peer.pid

    def cpu_meter(self) -> CpuMeter:
        return CpuMeter([self.pid])

    def rss(self) -> float:
        return rss_mb(self.pid)

    async def register(self, localpart: str) -> str:
        return await asyncio.to_thread(self.peer.register_user, localpart)

    def user(self, localpart: str) -> str:
        return self.peer.user_id(localpart)

    async def client(self, method: str, path: str, token: str, body=None, params=None, ok=(200,)):
        return await _json_call(self.session, method, self.peer.client_url + path, body=body,
                                headers={"Authorization": f"Bearer {token}"}, params=params, ok=ok)

    async def create_room(self, token: str) -> str:
        return (await self.client("POST", "/_matrix/client/v3/createRoom", token,
                                  {"preset": "public_chat", "room_version": "12"}))["room_id"]

    async def join(self, token: str, room_id: str, via: str) -> str:
        return (await self.client("POST", f"/_matrix/client/v3/join/{q(room_id)}", token, {},
                                  params={"server_name": via}))["room_id"]

    async def send(self, token: str, room_id: str, body: str, txn_id: str) -> str:
        return (await self.client("PUT", f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/{q(txn_id)}",
                                  token, message(body)))["event_id"]

    async def has_event(self, token: str, room_id: str, event_id: str) -> bool:
        try:
            await self.client("GET", f"/_matrix/client/v3/rooms/{q(room_id)}/event/{q(event_id)}", token)
            return True
        except APIError:
            return False


class SyncWatcher(Arrivals):
    """Long-polls /sync for one Synapse user, recording the first arrival of every
    m.room.message body (`<tag>:<n>`), and whether a timeline was ever cut ("limited")."""

    FILTER = orjson.dumps({"room": {"timeline": {"limit": 1000, "types": ["m.room.message"]},
                                    "state": {"lazy_load_members": True},
                                    "ephemeral": {"not_types": ["*"]},
                                    "account_data": {"not_types": ["*"]}},
                           "presence": {"not_types": ["*"]},
                           "account_data": {"not_types": ["*"]}}).decode()

    def __init__(self, server: SynapseServer, token: str):
        self.server = server
        self.token = token
        self.reset_arrivals("sync")
        self.limited = 0
        self._task: asyncio.Task | None = None
        self._since: str | None = None

    async def start(self) -> "SyncWatcher":
        first = await self.server.client("GET", "/_matrix/client/v3/sync", self.token,
                                         params={"timeout": "0", "filter": self.FILTER})
        self._since = first["next_batch"]
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    async def _run(self) -> None:
        while True:
            try:
                resp = await self.server.client(
                    "GET", "/_matrix/client/v3/sync", self.token,
                    params={"timeout": "30000", "since": self._since, "filter": self.FILTER})
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep polling
                log(f"sync failed: {exc}")
                await asyncio.sleep(0.2)
                continue
            now = time.monotonic()
            self._since = resp["next_batch"]
            for room in (resp.get("rooms", {}).get("join") or {}).values():
                tl = room.get("timeline") or {}
                if tl.get("limited"):
                    self.limited += 1
                self.arrived([(ev.get("content") or {}).get("body") for ev in tl.get("events") or []
                              if ev.get("type") == "m.room.message"], now)


# --------------------------------------------------------------------------- callbacks

async def serve_post(port: int, path: str, handler) -> web.AppRunner:
    """An aiohttp POST endpoint on 127.0.0.1:`port` in this process (callback receivers);
    stop it with `runner.cleanup()`."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post(path, handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


class CallbackReceiver(Arrivals):
    """The URL fedstack subscriptions POST to; records the first arrival of each body."""

    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/callback"
        self.reset_arrivals("callbacks")
        self.posts = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> "CallbackReceiver":
        self._runner = await serve_post(self.port, "/callback", self._callback)
        return self

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _callback(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        now = time.monotonic()
        self.posts += 1
        self.arrived([(ev.get("content") or {}).get("body") for ev in body.get("events") or []], now)
        return web.Response(body=b"{}", content_type="application/json")
