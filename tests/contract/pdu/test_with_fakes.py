"""The pdu service with its neighbours scripted: what it persists (shape, atomicity,
compare-and-set), what it signs (our key), how it answers a remote join, how it consumes
relayed PDUs, and an invite countersigned by the invitee's server."""
from __future__ import annotations

import time
from urllib.parse import quote

import pytest

from shared.contracts import pdu as c
from shared.crypto import SigningKey
from shared.events import (compute_event_id, sign_event, validate_event_format,
                           verify_event_signature)
from shared.room_versions import get_room_version
from tests.contract.helpers import wait_until
from tests.contract.pdu.conftest import REMOTE

ALICE = "@alice:hs.test"


def q(s: str) -> str:
    return quote(s, safe="")


async def create_room(client, version="12", preset="public_chat") -> str:
    resp = await client.post(c.ROOMS, json={"creator": ALICE, "room_version": version, "preset": preset})
    assert resp.status_code == 200, resp.text
    return resp.json()["room_id"]


async def send(client, room, body: dict, status: int = 200) -> str | None:
    resp = await client.post(c.SEND.format(room_id=q(room)), json=body)
    assert resp.status_code == status, resp.text
    return resp.json().get("event_id")


async def state(client, room) -> dict:
    resp = await client.get(c.STATE.format(room_id=q(room)))
    assert resp.status_code == 200, resp.text
    return {(e["type"], e["state_key"]): e for e in resp.json()["state"]}


def our_key(service):
    return SigningKey.load(service.settings.path("signing_key"))


@pytest.mark.parametrize("version", ["10", "11", "12"])
async def test_create_room_is_one_signed_commit(service_client, service, recorder, version):
    rv = get_room_version(version)
    room = await create_room(service_client, version)
    [req] = recorder.persists                       # everything in one atomic commit
    key = our_key(service)
    events = req["events"]
    assert [e["event"]["type"] for e in events][:3] == ["m.room.create", "m.room.member", "m.room.power_levels"]
    for e in events:
        assert e["room_id"] == room and not e.get("outlier") and not e.get("rejected")
        validate_event_format(e["event"], rv)
        assert compute_event_id(e["event"], rv) == e["event_id"]
        assert verify_event_signature(e["event"], rv, "hs.test", {key.key_id: key.verify_key})
        assert e["state_after"] is not None
    [room_upd] = req["rooms"]
    assert room_upd["room_id"] == room and room_upd["room_version"] == version
    assert room_upd["extremities"] == [events[-1]["event_id"]]
    assert not any(req.get("destinations", {}).values())       # nobody else is in the room
    # chained: each event's prev is the one before
    for prev, e in zip(events, events[1:]):
        assert e["event"]["prev_events"] == [prev["event_id"]]


async def test_send_builds_on_the_extremities_with_compare_and_set(service_client, recorder):
    room = await create_room(service_client)
    last = recorder.persists[-1]["rooms"][0]["extremities"]
    eid = await send(service_client, room, {"sender": ALICE, "type": "m.room.message",
                                            "content": {"body": "hi"}})
    req = recorder.persists[-1]
    [ev] = req["events"]
    assert ev["event_id"] == eid and ev["event"]["prev_events"] == last
    [room_upd] = req["rooms"]
    assert room_upd["expect_extremities"] == last and room_upd["extremities"] == [eid]
    assert req["destinations"].get(eid, []) == []


async def test_send_rebuilds_when_another_writer_moved_the_room(service_client, service, recorder,
                                                                other_writer):
    """A persist refused with 409 (extremities changed) is rebuilt on the new extremities."""
    rv = get_room_version("12")
    room = await create_room(service_client)
    last = recorder.persists[-1]["rooms"][0]["extremities"]
    st = await state(service_client, room)
    # another writer appends an event behind the pdu service's back
    other = {"type": "m.room.message", "room_id": room, "sender": ALICE, "content": {"body": "other"},
             "origin_server_ts": int(time.time() * 1000), "depth": 10, "prev_events": last,
             "auth_events": [st[("m.room.power_levels", "")]["event_id"],
                             st[("m.room.member", ALICE)]["event_id"]],
             "hashes": {}, "signatures": {}}
    sign_event(other, "hs.test", our_key(service), rv)
    other_id = compute_event_id(other, rv)
    await other_writer.persist({"events": [{"event_id": other_id, "room_id": room, "event": other,
                                            "state_after": {"same_as": last[0]}}],
                                "rooms": [{"room_id": room, "extremities": [other_id],
                                           "expect_extremities": last}]})
    n = len(recorder.persists)
    eid = await send(service_client, room, {"sender": ALICE, "type": "m.room.message",
                                            "content": {"body": "mine"}})
    attempts = recorder.persists[n:]
    assert len(attempts) >= 2, "the stale persist should have been refused and redone"
    assert attempts[0]["rooms"][0]["expect_extremities"] == last
    assert attempts[-1]["events"][0]["event_id"] == eid
    assert attempts[-1]["events"][0]["event"]["prev_events"] == [other_id]
    assert attempts[-1]["rooms"][0]["expect_extremities"] == [other_id]


async def remote_join(client, fake_transport, room: str, version: str, local="bob") -> tuple[str, dict]:
    """Join `@local:remote.test` the way a remote server does: make_join, sign, send_join."""
    rv = get_room_version(version)
    bob = f"@{local}:{REMOTE}"
    headers = {c.ORIGIN_HEADER: REMOTE}
    resp = await client.get(c.FEDERATION + f"/v1/make_join/{q(room)}/{q(bob)}",
                            params={"ver": version}, headers=headers)
    assert resp.status_code == 200, resp.text
    join = dict(resp.json()["event"], origin_server_ts=int(time.time() * 1000), hashes={}, signatures={})
    sign_event(join, REMOTE, fake_transport.remote_key, rv)
    jid = compute_event_id(join, rv)
    resp = await client.put(c.FEDERATION + f"/v2/send_join/{q(room)}/{q(jid)}", json=join, headers=headers)
    assert resp.status_code == 200, resp.text
    return jid, resp.json()


@pytest.mark.parametrize("version", ["10", "12"])
async def test_remote_join_then_both_directions(service_client, service, recorder, fake_transport, version):
    rv = get_room_version(version)
    room = await create_room(service_client, version)
    jid, answer = await remote_join(service_client, fake_transport, room, version)
    # the send_join answer: the state before the join (create included), its auth chain, the event
    types = {e["type"] for e in answer["state"]}
    assert {"m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.member"} <= types
    assert compute_event_id(answer["event"], rv) == jid
    assert set(answer["servers_in_room"]) == {"hs.test", REMOTE}
    st = await state(service_client, room)
    assert st[("m.room.member", f"@bob:{REMOTE}")]["event_id"] == jid

    # now remote.test may read the room
    create_id = st[("m.room.create", "")]["event_id"]
    resp = await service_client.get(c.FEDERATION + f"/v1/event/{q(create_id)}",
                                    headers={c.ORIGIN_HEADER: REMOTE})
    assert resp.status_code == 200, resp.text
    assert [compute_event_id(p, rv) for p in resp.json()["pdus"]] == [create_id]

    # our next event is queued for remote.test, and goes out through the transaction service
    eid = await send(service_client, room, {"sender": ALICE, "type": "m.room.message", "content": {"body": "to bob"}})
    assert recorder.persists[-1]["destinations"][eid] == [REMOTE]
    await wait_until(lambda: eid in fake_transport.sent_event_ids(REMOTE, rv), what="outbound /send")

    # a PDU relayed from remote.test is checked, stored, and consumes its inbox id
    mine = (await service_client.get(c.FEDERATION + f"/v1/event/{q(eid)}",
                                     headers={c.ORIGIN_HEADER: REMOTE})).json()["pdus"][0]
    auth = [st[("m.room.power_levels", "")]["event_id"], jid]
    if rv.create_in_auth_events:
        auth.insert(0, create_id)
    pdu = {"type": "m.room.message", "room_id": room, "sender": f"@bob:{REMOTE}",
           "content": {"body": "from bob"}, "origin_server_ts": int(time.time() * 1000),
           "depth": mine["depth"] + 1, "prev_events": [eid], "auth_events": auth,
           "hashes": {}, "signatures": {}}
    forged = dict(pdu, content={"body": "forged"}, hashes={}, signatures={})
    sign_event(pdu, REMOTE, fake_transport.remote_key, rv)
    sign_event(forged, REMOTE, SigningKey.generate("remote"), rv)      # not remote.test's key
    pdu_id, forged_id = compute_event_id(pdu, rv), compute_event_id(forged, rv)
    n = len(recorder.persists)
    resp = await service_client.post(c.INBOUND, json={"items": [
        {"inbox_id": 901, "origin": REMOTE, "room_id": room, "pdu": pdu},
        {"inbox_id": 902, "origin": REMOTE, "room_id": room, "pdu": forged}]})
    assert resp.status_code == 200, resp.text
    later = recorder.persists[n:]
    assert sorted(i for p in later for i in p.get("inbox_ids", [])) == [901, 902]
    stored = {e["event_id"]: e for p in later for e in p.get("events", [])}
    assert pdu_id in stored and not stored[pdu_id].get("rejected")
    assert forged_id not in stored
    page = await recorder.stream(0, 1000, room)
    assert pdu_id in [e["event"]["event_id"] for e in page["events"]]


async def test_invite_of_a_remote_user_is_countersigned(service_client, service, recorder, fake_transport):
    rv = get_room_version("12")
    room = await create_room(service_client, "12", preset="private_chat")
    carol = f"@carol:{REMOTE}"
    asked = []

    async def remote(method, path, query, body):
        asked.append((method, path, body))
        ev = dict(body["event"])
        sign_event(ev, REMOTE, fake_transport.remote_key, rv)
        return 200, {"event": ev}
    fake_transport.remote = remote
    resp = await service_client.post(c.INVITE.format(room_id=q(room)), json={"sender": ALICE, "user_id": carol})
    assert resp.status_code == 200, resp.text
    eid = resp.json()["event_id"]
    [(method, path, body)] = asked
    assert method == "PUT" and path == f"/_matrix/federation/v2/invite/{q(room)}/{q(eid)}"
    assert body["room_version"] == "12" and isinstance(body["invite_room_state"], list)
    assert body["event"]["state_key"] == carol and body["event"]["content"]["membership"] == "invite"
    stored = recorder.persisted_events()[eid]["event"]
    assert set(stored["signatures"]) == {"hs.test", REMOTE}
    assert (await state(service_client, room))[("m.room.member", carol)]["content"]["membership"] == "invite"


async def test_invite_not_countersigned_is_not_committed(service_client, recorder, fake_transport):
    room = await create_room(service_client, "12", preset="private_chat")

    async def remote(method, path, query, body):
        return 403, {"errcode": "M_FORBIDDEN", "error": "no thanks"}
    fake_transport.remote = remote
    n = len(recorder.persists)
    resp = await service_client.post(c.INVITE.format(room_id=q(room)),
                                     json={"sender": ALICE, "user_id": f"@dave:{REMOTE}"})
    assert resp.status_code >= 400
    assert recorder.persists[n:] == []
    assert ("m.room.member", f"@dave:{REMOTE}") not in await state(service_client, room)


def test_persist_shape_checker_catches_unknown_keys():
    """The recorder's check is what makes the other tests contract tests: keep it honest."""
    from tests.contract.pdu.conftest import shape_errors
    assert shape_errors({"events": [], "bogus": 1}) == ["unknown key bogus"]
    assert shape_errors({"events": [{"event_id": "$a", "room_id": "!r", "event": {}, "x": 1}]}) == [
        "unknown event key x"]
    assert shape_errors({"events": [{"event_id": "$a", "room_id": "!r", "event": {}}]}) == []
    assert shape_errors({"events": [{"event_id": "$a"}]})          # missing fields


async def test_relayed_child_before_parent_is_gap_filled_once(service_client, service, recorder,
                                                              fake_transport):
    """A batch [child, parent], both marked `known: false` by the relay: the child's gap
    fill fetches and stores the parent; the parent's own item must then count as known
    (not processed again, which would make it a forward extremity once more)."""
    rv = get_room_version("12")
    room = await create_room(service_client, "12")
    jid, _ = await remote_join(service_client, fake_transport, room, "12")
    st = await state(service_client, room)
    auth = [st[("m.room.power_levels", "")]["event_id"], jid]

    def remote_msg(prev: str, depth: int, body: str) -> tuple[str, dict]:
        pdu = {"type": "m.room.message", "room_id": room, "sender": f"@bob:{REMOTE}",
               "content": {"body": body}, "origin_server_ts": int(time.time() * 1000),
               "depth": depth, "prev_events": [prev], "auth_events": auth,
               "hashes": {}, "signatures": {}}
        sign_event(pdu, REMOTE, fake_transport.remote_key, rv)
        return compute_event_id(pdu, rv), pdu
    parent_id, parent = remote_msg(jid, 100, "parent")
    child_id, child = remote_msg(parent_id, 101, "child")

    async def remote(method, path, query, body):
        if "/get_missing_events/" in path:
            return 200, {"events": [parent]}
        return 404, {"errcode": "M_NOT_FOUND", "error": "not scripted"}
    fake_transport.remote = remote
    n = len(recorder.persists)
    resp = await service_client.post(c.INBOUND, json={"items": [
        {"inbox_id": 801, "origin": REMOTE, "room_id": room, "pdu": child, "event_id": child_id, "known": False},
        {"inbox_id": 802, "origin": REMOTE, "room_id": room, "pdu": parent, "event_id": parent_id, "known": False}]})
    assert resp.status_code == 200, resp.text
    later = recorder.persists[n:]
    assert sorted(i for p in later for i in p.get("inbox_ids", [])) == [801, 802]
    stored = [e["event_id"] for p in later for e in p.get("events", [])]
    assert sorted(stored) == sorted([parent_id, child_id])          # each stored once
    room_info = (await service_client.get(c.FEDERATION + f"/v1/state_ids/{q(room)}",
                                          params={"event_id": child_id},
                                          headers={c.ORIGIN_HEADER: REMOTE}))
    assert room_info.status_code == 200, room_info.text
    ext = [r["extremities"] for p in later for r in p.get("rooms", []) if r.get("extremities")]
    assert ext[-1] == [child_id], ext


@pytest.mark.parametrize("version", ["10", "12"])
async def test_soft_fail_against_a_stale_view_is_rechecked(service_client, service, recorder,
                                                          fake_transport, other_writer, version):
    """Another writer (a second pdu replica) joins @bob behind this pdu's back, so this
    pdu's cached current state predates the join. Bob's first message, relayed here, must
    be checked against the room as it is: stored live and delivered, not soft-failed."""
    rv = get_room_version(version)
    room = await create_room(service_client, version)
    last = recorder.persists[-1]["rooms"][0]["extremities"]
    st = await state(service_client, room)          # this pdu has now cached the room
    bob = f"@bob:{REMOTE}"
    ids = {k: st[k]["event_id"] for k in (("m.room.create", ""), ("m.room.power_levels", ""),
                                          ("m.room.join_rules", ""))}
    create_first = [ids[("m.room.create", "")]] if rv.create_in_auth_events else []
    join = {"type": "m.room.member", "state_key": bob, "room_id": room, "sender": bob,
            "content": {"membership": "join"}, "origin_server_ts": int(time.time() * 1000),
            "depth": 20, "prev_events": last,
            "auth_events": create_first + [ids[("m.room.power_levels", "")],
                                           ids[("m.room.join_rules", "")]],
            "hashes": {}, "signatures": {}}
    sign_event(join, REMOTE, fake_transport.remote_key, rv)
    jid = compute_event_id(join, rv)
    await other_writer.persist({
        "events": [{"event_id": jid, "room_id": room, "event": join,
                    "state_after": {"base": {"same_as": last[0]},
                                    "delta": [["m.room.member", bob, jid]]}}],
        "rooms": [{"room_id": room, "extremities": [jid], "expect_extremities": last,
                   "current_state": {"same_as": jid}}]})
    msg = {"type": "m.room.message", "room_id": room, "sender": bob, "content": {"body": "hi"},
           "origin_server_ts": int(time.time() * 1000), "depth": 21, "prev_events": [jid],
           "auth_events": create_first + [ids[("m.room.power_levels", "")], jid],
           "hashes": {}, "signatures": {}}
    sign_event(msg, REMOTE, fake_transport.remote_key, rv)
    mid = compute_event_id(msg, rv)
    resp = await service_client.post(c.INBOUND, json={"items": [
        {"inbox_id": 911, "origin": REMOTE, "room_id": room, "pdu": msg}]})
    assert resp.status_code == 200, resp.text
    stored = [e for p in recorder.persists for e in p.get("events", []) if e["event_id"] == mid]
    assert stored and not stored[-1].get("soft_failed") and not stored[-1].get("rejected")
    page = await recorder.stream(0, 1000, room)
    assert mid in [e["event"]["event_id"] for e in page["events"]]
