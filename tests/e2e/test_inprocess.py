"""Two whole homeservers in one process: create, join, message both ways, exactly once."""
from __future__ import annotations

import asyncio

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


async def test_batching_after_outage(pair):
    """300 events queued while the destination is down arrive in transactions of at most
    50 PDUs, never two in flight, once it is back."""
    a, b = pair
    alice, bob = a.user("alice"), b.user("bob")
    room = await a.api.create_room(alice, preset="public_chat")
    await b.api.join(room, bob, servers=[a.server_name])
    sb = await b.api.subscribe("http://cb/callback", room_id=room, types=["m.room.message"])
    b.link.down = True
    b.link.sends.clear()
    n = 300
    for i in range(n):
        await a.api.send(room, alice, "m.room.message", {"body": f"q{i}", "msgtype": "m.text"})
    b.link.down = False
    evs = await b.receiver.wait_for(lambda e: len(e) >= n, subscription_id=sb, timeout=60)
    assert [e["content"]["body"] for e in evs] == [f"q{i}" for i in range(n)]
    sizes = [count for _path, count in b.link.sends]
    assert sum(sizes) == n and max(sizes) <= 50
    assert len(sizes) <= -(-n // 50) + 1
    assert b.link.max_in_flight == 1


async def test_same_signed_transaction_twice(pair):
    """The same signed transaction PUT twice: identical response, events stored once."""
    import httpx
    import orjson

    from services.pdu.builder import build_event
    from shared.crypto import SigningKey
    from shared.room_versions import get_room_version
    from shared.xmatrix import sign_request

    a, b = pair
    alice, bob = a.user("alice"), b.user("bob")
    room = await a.api.create_room(alice, preset="public_chat")
    await b.api.join(room, bob, servers=[a.server_name])
    sb = await b.api.subscribe("http://cb/callback", room_id=room, types=["m.room.message"])
    key = SigningKey.load(a.settings.path("signing_key"))
    info = await a.tx.get_room(room)
    prev = list((await a.tx.get_events(info["extremities"])).values())
    state = {tuple(k[:2]): k[2] for k in (await a.tx.state_groups([info["current_state_group"]]))[info["current_state_group"]]}
    ev = build_event(rv=get_room_version(info["room_version"]), server_name=a.server_name, key=key,
                     room_id=room, sender=alice, type="m.room.message",
                     content={"body": "once", "msgtype": "m.text"}, state_key=None,
                     prev=[dict(p["event"], event_id=p["event_id"]) for p in prev], state=state)
    eid = ev.pop("event_id")
    body = {"origin": a.server_name, "origin_server_ts": 1, "pdus": [ev]}
    uri = "/_matrix/federation/v1/send/manual-1"
    auth = sign_request("PUT", uri, a.server_name, b.server_name, key, body)
    async with httpx.AsyncClient(transport=b.link, base_url="https://b") as http:
        r1 = await http.put(uri, content=orjson.dumps(body), headers={"authorization": auth})
        r2 = await http.put(uri, content=orjson.dumps(body), headers={"authorization": auth})
    assert r1.status_code == r2.status_code == 200
    assert r1.content == r2.content
    assert r1.json() == {"pdus": {eid: {}}}
    evs = await b.receiver.wait_for(lambda e: any(x["event_id"] == eid for x in e), subscription_id=sb)
    await asyncio.sleep(0.3)
    assert [x["event_id"] for x in b.receiver.events(sb)].count(eid) == 1
    assert len(await b.tx.get_events([eid])) == 1
