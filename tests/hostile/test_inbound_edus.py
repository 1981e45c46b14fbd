"""Catalogue: EDUs of inbound transactions (typing, receipts, presence, device lists,
signing keys, to-device, unknown types).

A fake remote that joined one of our rooms sends transactions; what reaches a
subscription (the `edus` list of the callback body) and the transaction service's EDU
counters are the observations. Each hostile EDU is dropped alone and counted; the rest of
its transaction (PDUs, other EDUs) is applied; nothing is delivered twice.
"""
from __future__ import annotations

import asyncio
import logging

from tests.fakes.remote import wait_for
from tests.hostile.conftest import joined_room, wait_delivered

ALICE_LOCAL = "alice"


def edus_of(hs, sid: str) -> list[dict]:
    return [e for b in hs.receiver.bodies if b["subscription_id"] == sid for e in b.get("edus", [])]


async def wait_edus(hs, sid: str, n: int, timeout: float = 10.0) -> list[dict]:
    return await wait_for(lambda: len(edus_of(hs, sid)) >= n and edus_of(hs, sid), timeout,
                          what=f"{n} EDUs delivered")


def typing(room_id: str, user_id: str, on: bool = True) -> dict:
    return {"edu_type": "m.typing", "content": {"room_id": room_id, "user_id": user_id, "typing": on}}


def receipt(room_id: str, user_id: str, event_id: str, thread_id: str | None = None) -> dict:
    data = {"ts": 1700000000000}
    if thread_id:
        data["thread_id"] = thread_id
    return {"edu_type": "m.receipt", "content": {room_id: {"m.read": {
        user_id: {"event_ids": [event_id], "data": data}}}}}


def to_device(sender: str, user_id: str, message_id: str, body: str = "x") -> dict:
    return {"edu_type": "m.direct_to_device", "content": {
        "sender": sender, "type": "m.room_key_request", "message_id": message_id,
        "messages": {user_id: {"DEV": {"body": body}}}}}


def device_update(user_id: str, stream_id: int, prev_id: list[int]) -> dict:
    return {"edu_type": "m.device_list_update", "content": {
        "user_id": user_id, "device_id": "D1", "stream_id": stream_id, "prev_id": prev_id,
        "deleted": False, "keys": {"user_id": user_id, "device_id": "D1"}}}


async def test_every_type_delivered_in_arrival_order_beside_events(hs, remote):
    room, froom = await joined_room(hs, remote)
    sid = await hs.api.subscribe("http://cb/callback")          # everything
    fred, alice = remote.user("fred"), hs.user(ALICE_LOCAL)
    eid, ev = froom.message("fred", "with edus")
    edus = [typing(room, fred),
            receipt(room, fred, eid, thread_id="$thread"),
            {"edu_type": "m.presence", "content": {"push": [
                {"user_id": fred, "presence": "online", "last_active_ago": 5,
                 "currently_active": True}]}},
            device_update(fred, 1, []),
            {"edu_type": "m.signing_key_update", "content": {"user_id": fred, "master_key": {"k": 1}}},
            {"edu_type": "org.matrix.signing_key_update", "content": {"user_id": fred, "master_key": {"k": 1}}},
            to_device(fred, alice, "m1"),
            {"edu_type": "com.example.unknown", "content": {"anything": [1, 2]}}]
    r = await remote.send_transaction(hs, [ev], edus)
    assert r.status_code == 200, r.text
    got = await wait_edus(hs, sid, len(edus))
    assert [(e["edu_type"], e["origin"], e["content"]) for e in got] == \
        [(e["edu_type"], remote.server_name, e["content"]) for e in edus]
    positions = [e["position"] for e in got]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    await wait_delivered(hs, sid, eid)
    assert (await hs.tx.edu_stats())["dropped"] == {}


async def test_hostile_edus_dropped_alone_and_counted(hs, remote, caplog):
    room, froom = await joined_room(hs, remote)
    other_room = await hs.api.create_room(hs.user(ALICE_LOCAL), preset="public_chat")
    sid = await hs.api.subscribe("http://cb/callback")
    fred, alice = remote.user("fred"), hs.user(ALICE_LOCAL)
    eid, ev = froom.message("fred", "survives")
    huge_receipt = {"edu_type": "m.receipt", "content": {room: {"m.read": {
        f"@u{i}:{remote.server_name}": {"event_ids": [eid], "data": {}} for i in range(10_000)}}}}
    many_receipts = {"edu_type": "m.receipt", "content": {room: {"m.read": {
        f"@u{i}:{remote.server_name}": {"event_ids": ["$e"]} for i in range(1001)}}}}
    hostile = [
        typing(room, "@mallory:evil.test"),                              # another server's user
        typing(other_room, fred),                                         # a room the origin is not in
        huge_receipt,                                                     # 10,000 entries (and > 64 KiB)
        many_receipts,                                                    # over the entry cap
        to_device(fred, alice, "é" * 33),                                 # 33 code points
        to_device("@mallory:evil.test", alice, "m2"),                     # sender of another server
        {"edu_type": "com.example.big", "content": {"pad": "x" * 70_000}},  # over the size cap
        device_update(fred, 5, [5]),                                      # prev_id chain that loops
        device_update(fred, 6, [9]),                                      # points forward
        {"edu_type": "m.presence", "content": {"push": [{"user_id": "@m:evil.test", "presence": "online"}]}},
        "not an object",
        {"edu_type": "m.typing", "content": {"room_id": room, "user_id": fred, "typing": "yes"}},
    ]
    good = [typing(room, fred), to_device(fred, alice, "é" * 32)]
    with caplog.at_level(logging.WARNING, logger="fedstack.transaction.edus"):
        r = await remote.send_transaction(hs, [ev], hostile[:6] + [good[0]] + hostile[6:] + [good[1]])
    assert r.status_code == 200, r.text
    await wait_delivered(hs, sid, eid)
    got = await wait_edus(hs, sid, 2)
    await asyncio.sleep(0.2)
    assert [(e["edu_type"], e["content"]) for e in edus_of(hs, sid)] == \
        [(e["edu_type"], e["content"]) for e in good]
    dropped = (await hs.tx.edu_stats())["dropped"]
    assert dropped == {
        "typing user not of the origin": 1,
        "origin has no joined member in the room": 1,
        "over the size cap": 2,                  # the 10,000-entry receipt and the padding
        "receipt with too many entries": 1,
        "message_id not of 1-32 code points": 1,
        "to-device sender not of the origin": 1,
        "prev_id not below stream_id (a loop)": 2,
        "presence with no entry for the origin's users": 1,
        "not an object with a string edu_type and an object content": 1,
        "typing needs room_id and a boolean typing": 1,
    }, dropped
    assert sum(dropped.values()) == len(hostile)
    lines = [r.getMessage() for r in caplog.records if r.name == "fedstack.transaction.edus"]
    assert len(lines) == len(hostile) and all(line.startswith("dropped ") for line in lines)
    assert got[0]["origin"] == remote.server_name


async def test_nothing_stored_twice(hs, remote):
    room, froom = await joined_room(hs, remote)
    sid = await hs.api.subscribe("http://cb/callback")
    fred, alice = remote.user("fred"), hs.user(ALICE_LOCAL)
    edus = [to_device(fred, alice, "once"), device_update(fred, 3, [])]
    r1 = await remote.send_transaction(hs, [], edus, txn_id="t-edus")
    r2 = await remote.send_transaction(hs, [], edus, txn_id="t-edus")        # a retry
    r3 = await remote.send_transaction(hs, [], edus)                          # the same again
    assert r1.status_code == r2.status_code == r3.status_code == 200
    assert r1.content == r2.content
    await wait_edus(hs, sid, 2)
    marker = typing(room, fred)
    assert (await remote.send_transaction(hs, [], [marker])).status_code == 200
    await wait_edus(hs, sid, 3)        # the marker came after every copy: all are in
    await asyncio.sleep(0.2)
    assert [e["edu_type"] for e in edus_of(hs, sid)] == \
        ["m.direct_to_device", "m.device_list_update", "m.typing"]


async def test_types_and_room_filters(hs, remote):
    room, froom = await joined_room(hs, remote)
    fred, alice = remote.user("fred"), hs.user(ALICE_LOCAL)
    only_typing = await hs.api.subscribe("http://cb/callback", types=["m.typing"])
    in_room = await hs.api.subscribe("http://cb/callback", room_id=room)
    eid, ev = froom.message("fred", "m")
    r = await remote.send_transaction(hs, [ev], [to_device(fred, alice, "f1"), typing(room, fred),
                                                 receipt(room, fred, eid)])
    assert r.status_code == 200
    await wait_delivered(hs, in_room, eid)
    got = await wait_edus(hs, in_room, 2)
    assert [e["edu_type"] for e in got] == ["m.typing", "m.receipt"]      # no to-device
    got = await wait_edus(hs, only_typing, 1)
    await asyncio.sleep(0.2)
    assert [e["edu_type"] for e in edus_of(hs, only_typing)] == ["m.typing"]
    assert not [e for b in hs.receiver.bodies if b["subscription_id"] == only_typing
                for e in b["events"]]


async def test_stored_before_the_200_and_kept_until_acknowledged(hs, remote):
    """The subscriber refuses while the server restarts: the EDUs acknowledged with the
    200 are still delivered afterwards, once, with events of the same transaction."""
    room, froom = await joined_room(hs, remote)
    sid = await hs.api.subscribe("http://cb/callback")
    fred, alice = remote.user("fred"), hs.user(ALICE_LOCAL)
    hs.receiver.fail_next = 10**6
    eid, ev = froom.message("fred", "m")
    r = await remote.send_transaction(hs, [ev], [to_device(fred, alice, "durable")])
    assert r.status_code == 200
    await hs.restart()
    hs.receiver.fail_next = 0
    got = await wait_edus(hs, sid, 1, timeout=30)     # the old lease expires first (10 s)
    await wait_delivered(hs, sid, eid)
    await asyncio.sleep(0.2)
    assert [e["content"]["message_id"] for e in edus_of(hs, sid)] == ["durable"]
    assert got[0]["content"]["messages"] == {alice: {"DEV": {"body": "x"}}}


async def test_foreign_entries_of_a_receipt_or_presence_are_dropped_and_counted(hs, remote):
    room, froom = await joined_room(hs, remote)
    sid = await hs.api.subscribe("http://cb/callback", types=["m.receipt", "m.presence"])
    fred, mallory = remote.user("fred"), "@mallory:evil.test"
    eid, ev = froom.message("fred", "read")
    mixed_receipt = {"edu_type": "m.receipt", "content": {room: {"m.read": {
        fred: {"event_ids": [eid], "data": {}}, mallory: {"event_ids": [eid], "data": {}},
        remote.user("broken"): {"event_ids": "not a list"}}}}}
    mixed_presence = {"edu_type": "m.presence", "content": {"push": [
        {"user_id": fred, "presence": "online"}, {"user_id": mallory, "presence": "online"}]}}
    assert (await remote.send_transaction(hs, [ev], [mixed_receipt, mixed_presence])).status_code == 200
    got = await wait_edus(hs, sid, 2)
    assert got[0]["content"] == {room: {"m.read": {fred: {"event_ids": [eid], "data": {}}}}}
    assert got[1]["content"] == {"push": [{"user_id": fred, "presence": "online"}]}
    assert (await hs.tx.edu_stats())["dropped"] == {"receipt entries dropped": 2,
                                                   "presence entries dropped": 1}
