"""Ephemeral traffic between two whole homeservers (in-process): typing, receipts,
presence and to-device sent through A's domain API reach B's subscriber as EDUs, and
back; only the servers that should hear of them do."""
from __future__ import annotations

import asyncio

import pytest

from shared.errors import MatrixError
from tests.harness import InProcessHomeserver, Receiver


@pytest.fixture
async def pair(tmp_path):
    network: dict = {}
    a = InProcessHomeserver("a.test:8448", tmp_path / "a", network, Receiver())
    b = InProcessHomeserver("b.test:8448", tmp_path / "b", network, Receiver())
    await a.start()
    await b.start()
    yield a, b
    await a.stop()
    await b.stop()


def edus(hs, sid=None) -> list[dict]:
    return [e for body in hs.receiver.bodies if sid in (None, body["subscription_id"])
            for e in body.get("edus", [])]


async def wait_edus(hs, n: int, sid=None, timeout: float = 10.0) -> list[dict]:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if len(edus(hs, sid)) >= n:
            return edus(hs, sid)
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out: {edus(hs, sid)}")


async def joined(a, b):
    alice, bob = a.user("alice"), b.user("bob")
    room = await a.api.create_room(alice, preset="public_chat")
    await b.api.join(room, bob, servers=[a.server_name])
    return room, alice, bob


async def test_typing_and_receipts_both_ways(pair):
    a, b = pair
    room, alice, bob = await joined(a, b)
    sa = await a.api.subscribe("http://cb/callback", room_id=room, types=["m.typing", "m.receipt"])
    sb = await b.api.subscribe("http://cb/callback", room_id=room, types=["m.typing", "m.receipt"])
    eid = await a.api.send(room, alice, "m.room.message", {"msgtype": "m.text", "body": "hi"})
    assert await a.api.typing(room, alice, True, timeout_ms=30000) == [b.server_name]
    assert await a.api.receipt(room, alice, eid, thread_id="main") == [b.server_name]
    assert await a.api.receipt(room, alice, eid, receipt_type="m.read.private") == []
    got = await wait_edus(b, 2, sb)
    assert [e["edu_type"] for e in got] == ["m.typing", "m.receipt"]
    assert got[0]["content"] == {"room_id": room, "user_id": alice, "typing": True}
    assert got[0]["origin"] == a.server_name
    [(rtype, users)] = got[1]["content"][room].items()
    assert rtype == "m.read" and users[alice]["event_ids"] == [eid]
    assert users[alice]["data"]["thread_id"] == "main"
    assert await b.api.typing(room, bob, False) == [a.server_name]
    got = await wait_edus(a, 1, sa)
    assert got[0]["content"] == {"room_id": room, "user_id": bob, "typing": False}
    await asyncio.sleep(0.2)
    assert len(edus(b, sb)) == 2                                   # the private one never left


async def test_only_joined_local_users_may_type(pair):
    a, b = pair
    room, alice, bob = await joined(a, b)
    for user in (bob, a.user("stranger")):
        with pytest.raises(MatrixError) as err:
            await a.api.typing(room, user, True)
        assert err.value.status == 403
    lonely = await a.api.create_room(alice)
    assert await a.api.typing(lonely, alice, True) == []           # nobody else to tell


async def test_presence_goes_to_servers_sharing_a_room(pair):
    a, b = pair
    alice = a.user("alice")
    assert await a.api.presence(alice, "online") == []             # no shared room yet
    room, alice, bob = await joined(a, b)
    sb = await b.api.subscribe("http://cb/callback", types=["m.presence"])
    assert await a.api.presence(alice, "unavailable", status_msg="lunch") == [b.server_name]
    [got] = await wait_edus(b, 1, sb)
    [entry] = got["content"]["push"]
    assert entry["user_id"] == alice and entry["presence"] == "unavailable"
    assert entry["status_msg"] == "lunch"


async def test_to_device_both_ways_one_edu_per_server(pair):
    a, b = pair
    alice, bob = a.user("alice"), b.user("bob")
    sa = await a.api.subscribe("http://cb/callback", types=["m.direct_to_device"])
    sb = await b.api.subscribe("http://cb/callback", types=["m.direct_to_device"])
    sent = await a.api.to_device(alice, "m.room_key", {
        bob: {"BOBDEV": {"k": 1}, "*": {"k": 2}}, a.user("self"): {"D": {"k": 3}}},
        message_id="msg-1")
    assert sent == {"destinations": [b.server_name], "message_id": "msg-1"}
    [got] = await wait_edus(b, 1, sb)
    assert got["content"] == {"sender": alice, "type": "m.room_key", "message_id": "msg-1",
                              "messages": {bob: {"BOBDEV": {"k": 1}, "*": {"k": 2}}}}
    back = await b.api.to_device(bob, "m.room_key", {alice: {"ADEV": {"k": 4}}})
    assert back["destinations"] == [a.server_name] and 1 <= len(back["message_id"]) <= 32
    [got] = await wait_edus(a, 1, sa)
    assert got["content"]["message_id"] == back["message_id"]
    assert got["origin"] == b.server_name


async def test_to_device_survives_an_outage(pair):
    a, b = pair
    alice, bob = a.user("alice"), b.user("bob")
    sb = await b.api.subscribe("http://cb/callback", types=["m.direct_to_device"])
    b.link.down = True
    for i in range(5):
        await a.api.to_device(alice, "m.x", {bob: {"D": {"n": i}}}, message_id=f"o{i}")
    await asyncio.sleep(0.3)
    b.link.down = False
    await a.tx.destination_up(b.server_name)
    got = await wait_edus(b, 5, sb, timeout=20)
    assert [e["content"]["message_id"] for e in got] == [f"o{i}" for i in range(5)]
