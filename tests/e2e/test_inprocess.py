"""Two whole homeservers in one process: create, join, message both ways, exactly once."""
from __future__ import annotations

import pytest

from tests.harness import InProcessHomeserver, Receiver


@pytest.fixture
async def pair(tmp_path):
    network: dict = {}
    ra, rb = Receiver(), Receiver()
    a = InProcessHomeserver("a.test:8448", tmp_path / "a", network, ra)
    b = InProcessHomeserver("b.test:8448", tmp_path / "b", network, rb)
    await a.start()
    await b.start()
    yield a, b
    await a.stop()
    await b.stop()


@pytest.mark.parametrize("version", ["12", "10", "11"])
async def test_join_and_message_both_ways(pair, version):
    a, b = pair
    alice, bob = a.user("alice"), b.user("bob")
    room = await a.api.create_room(alice, room_version=version, preset="public_chat", name="r")
    sa = await a.api.subscribe("http://cb/callback", room_id=room, types=["m.room.message"])
    await b.api.join(room, bob, servers=[a.server_name])
    sb = await b.api.subscribe("http://cb/callback", room_id=room, types=["m.room.message"])
    n = 20
    for i in range(n):
        await a.api.send(room, alice, "m.room.message", {"body": f"a{i}", "msgtype": "m.text"})
        await b.api.send(room, bob, "m.room.message", {"body": f"b{i}", "msgtype": "m.text"})
    for recv, sid in ((a.receiver, sa), (b.receiver, sb)):
        evs = await recv.wait_for(lambda e: len(e) >= 2 * n, subscription_id=sid)
        bodies = [e["content"]["body"] for e in evs]
        assert len(bodies) == len(set(bodies)) == 2 * n
        assert [x for x in bodies if x[0] == "a"] == [f"a{i}" for i in range(n)]
        assert [x for x in bodies if x[0] == "b"] == [f"b{i}" for i in range(n)]
    state_a = {(e["type"], e["state_key"]): e["event_id"] for e in await a.api.state(room)}
    state_b = {(e["type"], e["state_key"]): e["event_id"] for e in await b.api.state(room)}
    assert state_a == state_b
    assert ("m.room.member", bob) in state_a
