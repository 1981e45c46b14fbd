"""The domain API's ephemeral routes: typing, receipts, presence, to-device. What each
queues in the transaction service (`queue_edus`: the EDU, the servers it goes to), and
what it refuses."""
from __future__ import annotations

import pytest

from shared.contracts import messaging as c

ROOM = "!room:hs.test"
ALICE = "@alice:hs.test"


@pytest.fixture
def room(fake_pdu):
    fake_pdu.servers[ROOM] = ["hs.test", "b.test", "c.test"]
    fake_pdu.joined.add((ROOM, ALICE))
    return ROOM


async def post(client, path, body, method="POST"):
    return await client.request(method, path, json=body)


async def test_typing_goes_to_every_other_joined_server(public_client, fake_tx, room):
    resp = await post(public_client, c.TYPING.format(room_id=room),
                      {"user_id": ALICE, "typing": True, "timeout_ms": 5000})
    assert resp.status_code == 200, resp.text
    assert c.EphemeralResponse.model_validate(resp.json()).destinations == ["b.test", "c.test"]
    content = {"room_id": room, "user_id": ALICE, "typing": True}
    assert fake_tx.queued_edus == [{"destination": d, "edu_type": "m.typing", "content": content}
                                   for d in ("b.test", "c.test")]


@pytest.mark.parametrize("user,status", [("@bob:other.test", 403), ("@carol:hs.test", 403)])
async def test_typing_refused_for_foreign_or_unjoined_users(public_client, fake_tx, room, user, status):
    resp = await post(public_client, c.TYPING.format(room_id=room), {"user_id": user, "typing": True})
    assert resp.status_code == status and resp.json()["errcode"] == "M_FORBIDDEN"
    assert fake_tx.queued_edus == []


async def test_typing_in_an_unknown_room_is_404(public_client, fake_tx):
    resp = await post(public_client, c.TYPING.format(room_id="!nope:hs.test"),
                      {"user_id": ALICE, "typing": True})
    assert resp.status_code == 404 and fake_tx.queued_edus == []


async def test_receipts_threaded_and_private(public_client, fake_tx, room):
    resp = await post(public_client, c.RECEIPTS.format(room_id=room),
                      {"user_id": ALICE, "event_id": "$e", "thread_id": "$root"})
    assert resp.status_code == 200, resp.text
    assert [q["destination"] for q in fake_tx.queued_edus] == ["b.test", "c.test"]
    content = fake_tx.queued_edus[0]["content"]
    entry = content[room]["m.read"][ALICE]
    assert entry["event_ids"] == ["$e"] and entry["data"]["thread_id"] == "$root"
    assert isinstance(entry["data"]["ts"], int)
    fake_tx.queued_edus.clear()
    resp = await post(public_client, c.RECEIPTS.format(room_id=room),
                      {"user_id": ALICE, "event_id": "$e", "receipt_type": "m.read.private"})
    assert resp.status_code == 200 and resp.json()["destinations"] == []
    assert fake_tx.queued_edus == []
    resp = await post(public_client, c.RECEIPTS.format(room_id=room),
                      {"user_id": ALICE, "event_id": "$e", "receipt_type": "m.fully_read"})
    assert resp.status_code == 400 and resp.json()["errcode"] == "M_BAD_JSON"


async def test_presence_to_servers_sharing_a_room(public_client, fake_tx, fake_pdu):
    fake_pdu.user_servers_of[ALICE] = ["hs.test", "b.test"]
    resp = await post(public_client, c.PRESENCE.format(user_id=ALICE),
                      {"presence": "online", "status_msg": "hi"}, method="PUT")
    assert resp.status_code == 200, resp.text
    [q] = fake_tx.queued_edus
    assert q["destination"] == "b.test" and q["edu_type"] == "m.presence"
    [entry] = q["content"]["push"]
    assert entry == {"user_id": ALICE, "presence": "online", "status_msg": "hi",
                     "last_active_ago": 0, "currently_active": True}
    resp = await post(public_client, c.PRESENCE.format(user_id=ALICE), {"presence": "away"}, method="PUT")
    assert resp.status_code == 400


async def test_to_device_one_edu_per_server(public_client, fake_tx):
    body = {"sender": ALICE, "type": "m.room_key", "message_id": "é" * 32,
            "messages": {"@b1:b.test": {"D1": {"x": 1}}, "@b2:b.test": {"*": {"x": 2}},
                         "@c:c.test": {"D": {"x": 3}}, "@me:hs.test": {"D": {"x": 4}}}}
    resp = await post(public_client, c.TO_DEVICE, body)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"destinations": ["b.test", "c.test"], "message_id": "é" * 32}
    assert fake_tx.queued_edus == [
        {"destination": "b.test", "edu_type": "m.direct_to_device",
         "content": {"sender": ALICE, "type": "m.room_key", "message_id": "é" * 32,
                     "messages": {"@b1:b.test": {"D1": {"x": 1}}, "@b2:b.test": {"*": {"x": 2}}}}},
        {"destination": "c.test", "edu_type": "m.direct_to_device",
         "content": {"sender": ALICE, "type": "m.room_key", "message_id": "é" * 32,
                     "messages": {"@c:c.test": {"D": {"x": 3}}}}}]


@pytest.mark.parametrize("change,status", [
    ({"message_id": "x" * 33}, 400), ({"sender": "@eve:evil.test"}, 403),
    ({"messages": {"not-a-user": {"D": {}}}}, 400)])
async def test_to_device_refusals(public_client, fake_tx, change, status):
    body = {"sender": ALICE, "type": "m.x", "messages": {"@b:b.test": {"D": {}}}, **change}
    resp = await post(public_client, c.TO_DEVICE, body)
    assert resp.status_code == status, resp.text
    assert fake_tx.queued_edus == []
