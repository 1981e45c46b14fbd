"""Typing EDUs A→B at 16 in flight: fedstack A's domain API to B's subscriber, beside
Synapse A's client API to Synapse B's /sync, in the same run.

Each of the 16 workers is one typing user of A (joined to the room, which B's user also
joined) and keeps one typing notification in flight end to end: it toggles its typing
state (start, stop, start, ...: Synapse sends nothing for a state that does not change),
then waits until B shows that state before the next. Rate: notifications seen on B per
second; latency: from the call to A until B shows it (p50/p99). On fedstack, B's
subscription (types m.typing) gets one EDU per notification; on Synapse, B's /sync long
poll shows the room's typing set (ephemeral m.typing), watched for each user's change.
"""
from __future__ import annotations

import asyncio
import collections
import time

import orjson
from aiohttp import web

from bench.common import CpuMeter, log, percentile
from bench.stacks import q, serve_post
from fedstack.cli import free_port

IN_FLIGHT = 16


def sizes(quick: bool) -> tuple[int, int]:
    """(notifications on fedstack, on Synapse) per repetition."""
    return (320, 64) if quick else (3200, 320)


class _Seen:
    """Per user, the typing states B showed, in order, with their arrival times."""

    def __init__(self):
        self.seen: dict[str, list[tuple[float, bool]]] = collections.defaultdict(list)
        self.changed = asyncio.Event()

    def add(self, user_id: str, typing: bool, now: float) -> None:
        self.seen[user_id].append((now, typing))
        self.changed.set()

    async def wait(self, user_id: str, k: int, timeout: float = 60.0) -> float:
        """The arrival time of the user's k-th notification (0-based)."""
        deadline = time.monotonic() + timeout
        while len(self.seen[user_id]) <= k:
            self.changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"typing notification {k} of {user_id} never arrived")
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass
        return self.seen[user_id][k][0]


class EduReceiver(_Seen):
    """The callback URL of B's typing subscription (fedstack): one EDU per notification."""

    def __init__(self):
        super().__init__()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/edus"
        self._runner: web.AppRunner | None = None

    async def start(self) -> "EduReceiver":
        self._runner = await serve_post(self.port, "/edus", self._callback)
        return self

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _callback(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        now = time.monotonic()
        for e in body.get("edus") or []:
            c = e.get("content") or {}
            if e.get("edu_type") == "m.typing" and isinstance(c.get("user_id"), str):
                self.add(c["user_id"], bool(c.get("typing")), now)
        return web.Response(body=b"{}", content_type="application/json")


class TypingSync(_Seen):
    """Long-polls Synapse B's /sync for the room's typing set; each user's change is a
    notification seen."""

    FILTER = orjson.dumps({"room": {"timeline": {"limit": 0}, "state": {"types": []},
                                    "ephemeral": {"types": ["m.typing"]},
                                    "account_data": {"not_types": ["*"]}},
                           "presence": {"not_types": ["*"]},
                           "account_data": {"not_types": ["*"]}}).decode()

    def __init__(self, server, token: str, room_id: str):
        super().__init__()
        self.server, self.token, self.room_id = server, token, room_id
        self.typing: set[str] = set()
        self._task: asyncio.Task | None = None

    async def start(self) -> "TypingSync":
        first = await self.server.client("GET", "/_matrix/client/v3/sync", self.token,
                                         params={"timeout": "0", "filter": self.FILTER})
        self._since = first["next_batch"]
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                resp = await self.server.client(
                    "GET", "/_matrix/client/v3/sync", self.token,
                    params={"timeout": "30000", "since": self._since, "filter": self.FILTER})
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep polling
                log(f"typing sync failed: {exc}")
                await asyncio.sleep(0.2)
                continue
            now = time.monotonic()
            self._since = resp["next_batch"]
            room = (resp.get("rooms", {}).get("join") or {}).get(self.room_id) or {}
            for ev in (room.get("ephemeral") or {}).get("events") or []:
                if ev.get("type") != "m.typing":
                    continue
                now_typing = set((ev.get("content") or {}).get("user_ids") or [])
                for u in now_typing ^ self.typing:
                    self.add(u, u in now_typing, now)
                self.typing = now_typing


async def _drive(toggle, seen: _Seen, users: list[str], n: int) -> list[float]:
    """n notifications from the users (one in flight each); latencies in ms."""
    per_user = -(-n // len(users))
    lat: list[float] = []

    async def worker(user: str):
        for k in range(per_user):
            t0 = time.monotonic()
            await toggle(user, k % 2 == 0)
            lat.append((await seen.wait(user, k) - t0) * 1000)
    await asyncio.gather(*(worker(u) for u in users))
    return lat


def _record(ctx, side: str, n: int, elapsed: float, lat: list[float], cpu_s: float) -> None:
    res = ctx.results
    res.add("typing_rate", side, n / elapsed, label=f"Typing EDUs A→B, {IN_FLIGHT} in flight",
            unit="EDUs/s", higher_better=True,
            note="each of 16 typing users toggles, and waits until B shows it before the next")
    res.add("typing_p50", side, percentile(lat, 50), label="Typing A→B at 16 in flight, latency p50",
            unit="ms", higher_better=False)
    res.add("typing_p99", side, percentile(lat, 99), label="Typing A→B at 16 in flight, latency p99",
            unit="ms", higher_better=False)
    res.add("typing_cpu", side, cpu_s / n * 1000, label="CPU of both homeservers, typing A→B",
            unit="CPU-s / 1,000 EDUs", higher_better=False)
    log(f"typing {side}: {n} EDUs {n / elapsed:.0f}/s, p50 {percentile(lat, 50):.0f} ms "
        f"p99 {percentile(lat, 99):.0f} ms, CPU {cpu_s:.1f}s")


async def _setup_fedstack(ctx):
    if "typing_f" in ctx.state:
        return ctx.state["typing_f"]
    a, b = ctx.a, ctx.b
    rx = await EduReceiver().start()
    alice = a.user("typing-alice")
    room = await a.create_room(alice)
    users = [a.user(f"typer{i}") for i in range(IN_FLIGHT)]
    for u in users:
        await a.join(room, u, [])
    await b.join(room, b.user("typing-bob"), [a.server_name])
    await b.call("POST", "/v1/subscriptions", {"url": rx.url, "room_id": room, "types": ["m.typing"]})

    async def toggle(user, on):
        await a.call("POST", f"/v1/rooms/{q(room)}/typing", {"user_id": user, "typing": on})
    await _drive(toggle, rx, users[:1], 2)          # warm up (not measured)
    ctx.state["typing_f"] = (rx, users, toggle)
    return ctx.state["typing_f"]


async def fedstack_once(ctx, rep: int) -> None:
    rx, users, toggle = await _setup_fedstack(ctx)
    await _measure(ctx, "fedstack", rx, users, toggle, sizes(ctx.args.quick)[0],
                   list(ctx.a.pids.values()) + list(ctx.b.pids.values()))


async def _measure(ctx, side, seen, users, toggle, n, pids) -> None:
    """Each user's next state is the opposite of the last one B showed."""
    base = {u: len(seen.seen[u]) for u in users}

    async def toggle_from(user, on):
        await toggle(user, on if base[user] % 2 == 0 else not on)
    cpu = CpuMeter(pids).start()
    t0 = time.monotonic()
    lat = await _drive(toggle_from, _Offset(seen, base), users, n)
    elapsed = time.monotonic() - t0
    _record(ctx, side, len(lat), elapsed, lat, cpu.stop())


class _Offset:
    """A view of `seen` that counts each user's notifications from `base` on."""

    def __init__(self, seen: _Seen, base: dict[str, int]):
        self.inner, self.base = seen, base

    async def wait(self, user: str, k: int, timeout: float = 60.0) -> float:
        return await self.inner.wait(user, self.base[user] + k, timeout)


async def _setup_synapse(ctx):
    if "typing_s" in ctx.state:
        return ctx.state["typing_s"]
    s1, s2 = ctx.s1, ctx.s2
    owner = await s1.register("typing-owner")
    room = await s1.create_room(owner)
    tokens = {}
    for i in range(IN_FLIGHT):
        tok = await s1.register(f"typer{i}")
        await s1.join(tok, room, s1.server_name)
        tokens[s1.user(f"typer{i}")] = tok
    bob = await s2.register("typing-bob")
    await s2.join(bob, room, s1.server_name)
    watcher = await TypingSync(s2, bob, room).start()

    async def toggle(user, on):
        await s1.client("PUT", f"/_matrix/client/v3/rooms/{q(room)}/typing/{q(user)}", tokens[user],
                        {"typing": on, "timeout": 30000})
    await _drive(toggle, watcher, list(tokens)[:1], 2)
    ctx.state["typing_s"] = (watcher, list(tokens), toggle)
    return ctx.state["typing_s"]


async def synapse_once(ctx, rep: int) -> None:
    watcher, users, toggle = await _setup_synapse(ctx)
    await _measure(ctx, "synapse", watcher, users, toggle, sizes(ctx.args.quick)[1],
                   [ctx.s1.pid, ctx.s2.pid])


async def stop(ctx) -> None:
    for key in ("typing_f", "typing_s"):
        if key in ctx.state:
            await ctx.state[key][0].stop()
