"""Rejected events: stored as rejected, never in state, never delivered, and still rejected
after a restart; the messaging state view agrees with /state_ids."""
from __future__ import annotations

import asyncio

import httpx
import orjson

from services.pdu.builder import build_event
from shared.crypto import SigningKey
from shared.room_versions import get_room_version
from shared.xmatrix import sign_request
from tests.e2e.test_inprocess import pair  # noqa: F401  (fixture)
from tests.harness import InProcessHomeserver


async def forge_from(b, a, room, sender, type_, content, state_key, txn):
    """An event by `sender` of b, built on a's view of the room, sent to a by b's server."""
    key = SigningKey.load(b.settings.path("signing_key"))
    info = await a.tx.get_room(room)
    prev = await a.tx.get_events(info["extremities"])
    group = info["current_state_group"]
    state = {(t, sk): e for t, sk, e in (await a.tx.state_groups([group]))[group]}
    ev = build_event(rv=get_room_version(info["room_version"]), server_name=b.server_name, key=key,
                     room_id=room, sender=sender, type=type_, content=content, state_key=state_key,
                     prev=[dict(p["event"], event_id=p["event_id"]) for p in prev.values()], state=state)
    eid = ev.pop("event_id")
    body = {"origin": b.server_name, "origin_server_ts": 1, "pdus": [ev]}
    uri = f"/_matrix/federation/v1/send/{txn}"
    auth = sign_request("PUT", uri, b.server_name, a.server_name, key, body)
    async with httpx.AsyncClient(transport=a.link, base_url="https://a") as http:
        r = await http.put(uri, content=orjson.dumps(body), headers={"authorization": auth})
    assert r.status_code == 200, r.text
    return eid


async def wait_record(hs, eid):
    for _ in range(200):
        got = await hs.tx.get_events([eid])
        if eid in got:
            return got[eid]
        await asyncio.sleep(0.05)
    raise AssertionError(f"{eid} not stored")


async def test_rejected_event_stays_rejected_across_restart(pair, tmp_path):  # noqa: F811
    a, b = pair
    alice, bob = a.user("alice"), b.user("bob")
    room = await a.api.create_room(alice, preset="public_chat")
    await b.api.join(room, bob, servers=[a.server_name])
    sub = await a.api.subscribe("http://cb/callback", room_id=room)
    pl = {e["type"]: e for e in await a.api.state(room)}["m.room.power_levels"]["content"]
    grab = dict(pl, users={**pl["users"], bob: 100})
    bad = await forge_from(b, a, room, bob, "m.room.power_levels", grab, "", "forge-1")
    rec = await wait_record(a, bad)
    assert rec["rejected"] and "auth" in rec["rejected"]
    marker = await a.api.send(room, alice, "m.room.message", {"body": "after"})
    await a.receiver.wait_for(lambda e: any(x["event_id"] == marker for x in e), subscription_id=sub)
    assert bad not in [x["event_id"] for x in a.receiver.events(sub)]
    state = {(e["type"], e["state_key"]): e["event_id"] for e in await a.api.state(room)}
    assert state[("m.room.power_levels", "")] != bad
    # Restart homeserver A on the same data directory: still rejected, still not in state.
    await a.stop()
    a2 = InProcessHomeserver(a.server_name, tmp_path / "a", a.network, a.receiver)
    await a2.start()
    try:
        assert (await a2.tx.get_events([bad]))[bad]["rejected"]
        state2 = {(e["type"], e["state_key"]): e["event_id"] for e in await a2.api.state(room)}
        assert state2 == state
    finally:
        await a2.stop()
        a.stop = _noop   # the fixture's teardown must not stop it twice


async def _noop():
    return None


async def test_state_view_agrees_with_state_ids(pair):  # noqa: F811
    a, b = pair
    alice, bob = a.user("alice"), b.user("bob")
    room = await a.api.create_room(alice, preset="public_chat", name="agree")
    await b.api.join(room, bob, servers=[a.server_name])
    pl = {e["type"]: e for e in await a.api.state(room)}["m.room.power_levels"]
    await a.api.send(room, alice, "m.room.power_levels", dict(pl["content"], ban=60), state_key="")
    last = await a.api.send(room, alice, "m.room.message", {"body": "x"})
    key = SigningKey.load(b.settings.path("signing_key"))
    uri = f"/_matrix/federation/v1/state_ids/{room}?event_id={last}".replace("!", "%21").replace("$", "%24").replace(":", "%3A")
    path, _, query = uri.partition("?")
    uri = path + "?" + query
    auth = sign_request("GET", uri, b.server_name, a.server_name, key)
    async with httpx.AsyncClient(transport=a.link, base_url="https://a") as http:
        r = await http.get(uri, headers={"authorization": auth})
    assert r.status_code == 200, r.text
    view = {e["event_id"] for e in await a.api.state(room)}
    assert set(r.json()["pdu_ids"]) == view
    # the superseded power levels are in the auth chain of the state, not in the state
    assert pl["event_id"] in r.json()["auth_chain_ids"]
    assert not set(r.json()["auth_chain_ids"]) & view
