"""Hostile input, crashes and faults: nothing lost, nobody let in.

One in-process homeserver under test ("ours.test:8448", the four real apps wired by the
harness) and fake remote homeservers (tests/fakes/remote.py) around it, in-process or over
real TLS. The `world` fixture owns them all and tears down in the safe order: homeservers
stopped first, then the fakes, then every fake checked for unexpected requests.

Helpers here observe side effects only through the services' own APIs: the transaction
service's internal API (stored records, rooms, destinations) and the messaging events
endpoint (what subscriptions would be given).
"""
from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest

from tests.fakes.remote import FakeRemote, as_target, now_ms, wait_for  # noqa: F401
from tests.harness import InProcessHomeserver, Receiver

OURS = "ours.test:8448"


class Homeserver(InProcessHomeserver):
    """The harness homeserver with settings overrides, a restart, and observations."""

    def __init__(self, server_name, data_dir, network, receiver, **overrides):
        super().__init__(server_name, data_dir, network, receiver)
        self.settings = self.settings.with_(**overrides)
        self.running = False

    async def start(self) -> None:
        self._stack = contextlib.AsyncExitStack()
        await super().start()
        self.running = True

    async def stop(self) -> None:
        if self.running:
            self.running = False
            await super().stop()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    # -- observations through the services' APIs ----------------------------------
    async def live_ids(self, room_id: str) -> list[str]:
        """Event IDs the messaging events endpoint lists (what subscriptions are given)."""
        out, after = [], 0
        while True:
            page = await self.api.events(room_id, after=after, limit=1000)
            out += [e["event_id"] for e in page["events"]]
            if not page["events"]:
                return out
            after = page["next"]

    async def records(self, *event_ids: str) -> dict:
        return await self.tx.get_events(list(event_ids))

    async def extremities(self, room_id: str) -> list[str]:
        return sorted((await self.tx.get_room(room_id))["extremities"])

    async def destinations(self) -> dict:
        return await self.tx.call("GET", "/_internal/transaction/v1/destinations")

    async def destination(self, name: str) -> dict:
        return (await self.destinations())["destinations"].get(name, {})

    async def wait_live(self, room_id: str, event_id: str, timeout: float = 10.0) -> None:
        async def live():
            return event_id in await self.live_ids(room_id)
        await wait_for(live, timeout, what=f"{event_id} in {room_id}")

    async def assert_absent(self, room_id: str, *event_ids: str) -> None:
        """Not stored at all, not listed, not an extremity."""
        assert await self.records(*event_ids) == {}
        live = set(await self.live_ids(room_id))
        assert not live & set(event_ids)
        assert not set(await self.extremities(room_id)) & set(event_ids)

    async def assert_not_live(self, room_id: str, *event_ids: str) -> dict:
        """Perhaps stored (rejected or soft-failed), but neither listed nor an extremity."""
        live = set(await self.live_ids(room_id))
        assert not live & set(event_ids)
        assert not set(await self.extremities(room_id)) & set(event_ids)
        recs = await self.records(*event_ids)
        for r in recs.values():
            assert r["rejected"] or r["soft_failed"] or r["outlier"], r
        return recs


class World:
    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.network: dict = {}
        self.servers: list[Homeserver] = []
        self.remotes: list[FakeRemote] = []

    async def homeserver(self, name: str = OURS, **overrides) -> Homeserver:
        hs = Homeserver(name, self.tmp_path / name.replace(":", "_"), self.network, Receiver(), **overrides)
        await hs.start()
        self.servers.append(hs)
        return hs

    async def remote(self, name: str | None = "remote.test:8448", *, tls: bool = False, **kw) -> FakeRemote:
        """A fake remote: in-process (attached to the network) or over real TLS."""
        r = FakeRemote(None if tls else name, **kw)
        if tls:
            await r.start_tls(self.tmp_path / f"fake-tls-{len(self.remotes)}")
        else:
            r.attach(self.network)
        self.remotes.append(r)
        return r

    async def close(self) -> None:
        for hs in self.servers:
            await hs.stop()
        for r in self.remotes:
            await r.stop()
        for r in self.remotes:
            r.check()


@pytest.fixture
async def world(tmp_path):
    w = World(tmp_path)
    yield w
    await w.close()


@pytest.fixture
async def hs(world) -> Homeserver:
    return await world.homeserver()


@pytest.fixture
async def remote(world) -> FakeRemote:
    return await world.remote()


async def joined_room(hs: Homeserver, remote: FakeRemote, version: str = "12", *,
                      preset: str = "public_chat", localpart: str = "fred"):
    """Alice creates a room on `hs`; the fake's user joins it (make_join/send_join)."""
    room_id = await hs.api.create_room(hs.user("alice"), room_version=version, preset=preset)
    froom = await remote.join(hs, room_id, localpart)
    return room_id, froom


async def sentinel(hs: Homeserver, remote: FakeRemote, froom, body: str = "sentinel") -> str:
    """A good message from the fake, sent after the hostile input: once it is live, the
    relay has handled everything staged before it (the inbox is processed in order)."""
    eid, ev = froom.message("fred", body)
    r = await remote.send_transaction(hs, [ev])
    assert r.status_code == 200, r.text
    assert r.json() == {"pdus": {eid: {}}}
    await hs.wait_live(froom.room_id, eid)
    return eid


async def subscribe(hs: Homeserver, room_id: str) -> str:
    return await hs.api.subscribe("http://cb/callback", room_id=room_id)


def delivered(hs: Homeserver, sid: str) -> list[str]:
    return [e["event_id"] for e in hs.receiver.events(sid)]


async def wait_delivered(hs: Homeserver, sid: str, event_id: str, timeout: float = 10.0) -> list[str]:
    return await wait_for(lambda: event_id in delivered(hs, sid) and delivered(hs, sid), timeout,
                          what=f"delivery of {event_id}")


def errcode(resp) -> tuple[int, str | None]:
    try:
        body = resp.json()
    except Exception:  # noqa: BLE001
        body = {}
    return resp.status_code, (body or {}).get("errcode") if isinstance(body, dict) else None


@contextlib.asynccontextmanager
async def serve_tls(hs: Homeserver):
    """Serve the homeserver's transport app (already started) over real HTTPS on
    127.0.0.1 port 0, in this event loop; yields the base URL."""
    import uvicorn
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(hs.transport_app, lifespan="off", log_level="critical", access_log=False,
                            ssl_certfile=str(hs.settings.path("tls_cert")),
                            ssl_keyfile=str(hs.settings.path("tls_key")), http="h11",
                            timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await wait_for(lambda: server.started, 10, what="TLS listener")
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
