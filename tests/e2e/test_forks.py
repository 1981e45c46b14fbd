"""Forks converge: three homeservers in one room, partitioned, make conflicting state
changes, then heal; all arrive at the same current state (state resolution at work)."""
from __future__ import annotations

import asyncio

import pytest

from tests.harness import InProcessHomeserver, Receiver, heal, partition


@pytest.fixture
async def trio(tmp_path):
    network: dict = {}
    servers = [InProcessHomeserver(f"{n}.test:8448", tmp_path / n, network, Receiver()) for n in "abc"]
    for s in servers:
        await s.start()
    yield servers
    for s in servers:
        await s.stop()


async def current_state(hs, room):
    return {(e["type"], e["state_key"]): e for e in await hs.api.state(room)}


async def wait_converged(servers, room, predicate, timeout=30.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        states = [await current_state(s, room) for s in servers]
        ids = [{k: e["event_id"] for k, e in st.items()} for st in states]
        if all(i == ids[0] for i in ids) and predicate(states[0]):
            return states[0]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no convergence: {[sorted((k, v[:8]) for k, v in i.items()) for i in ids]}")
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("version", ["12", "10"])
async def test_partitioned_state_changes_converge(trio, version):
    a, b, c = trio
    a1, b1, c1 = a.user("a1"), b.user("b1"), c.user("c1")
    room = await a.api.create_room(a1, room_version=version, preset="public_chat")
    await b.api.join(room, b1, servers=[a.server_name])
    await c.api.join(room, c1, servers=[a.server_name])
    pl = (await current_state(a, room))[("m.room.power_levels", "")]["content"]
    pl["users"][b1] = 50
    await a.api.send(room, a1, "m.room.power_levels", pl, state_key="")
    await wait_converged(trio, room, lambda st: st[("m.room.power_levels", "")]["content"]["users"].get(b1) == 50)

    partition([a], [b, c])
    demoted = dict(pl, users={k: v for k, v in pl["users"].items() if k != b1})
    await a.api.send(room, a1, "m.room.topic", {"topic": "from A"}, state_key="")
    await a.api.send(room, a1, "m.room.power_levels", demoted, state_key="")
    await a.api.send(room, a1, "m.room.message", {"body": "a during partition"})
    await b.api.send(room, b1, "m.room.topic", {"topic": "from B"}, state_key="")
    await b.api.send(room, b1, "m.room.member", {"membership": "ban"}, state_key=c1)
    await b.api.send(room, b1, "m.room.message", {"body": "b during partition"})
    await asyncio.sleep(0.3)
    on_b = await current_state(b, room)
    assert on_b[("m.room.topic", "")]["content"]["topic"] == "from B"
    assert on_b[("m.room.member", c1)]["content"]["membership"] == "ban"
    on_a = await current_state(a, room)
    assert on_a[("m.room.topic", "")]["content"]["topic"] == "from A"
    assert on_a[("m.room.member", c1)]["content"]["membership"] == "join"

    heal(a, b, c)
    await a.api.send(room, a1, "m.room.message", {"body": "a after heal"})
    await b.api.send(room, b1, "m.room.message", {"body": "b after heal"})
    state = await wait_converged(
        trio, room, lambda st: st.get(("m.room.topic", "")) is not None
        and b1 not in st[("m.room.power_levels", "")]["content"]["users"])
    # The creator's power-level change wins; the moderator's actions that depended on the
    # power they lost do not take effect.
    assert state[("m.room.topic", "")]["content"]["topic"] == "from A"
    assert state[("m.room.member", c1)]["content"]["membership"] == "join"
    assert state[("m.room.member", b1)]["content"]["membership"] == "join"
