"""Each domain route calls the pdu (or transaction) contract with the right shape, and the
answer (or the Matrix error) comes back unchanged."""
from __future__ import annotations

from urllib.parse import quote

import pytest

from shared.contracts import messaging as c

ROOM = "!room:hs.test"
ALICE, BOB = "@alice:hs.test", "@bob:other.test"


def r(path: str) -> str:
    return path.format(room_id=quote(ROOM, safe=""))


# (route, body, expected pdu call name, expected pdu body)
CASES = [
    (c.ROOMS, {"creator": ALICE, "preset": "public_chat", "name": "n"}, "create_room",
     {"creator": ALICE, "room_version": "12", "preset": "public_chat", "name": "n", "room_type": None}),
    (c.ROOMS, {"creator": ALICE, "room_version": "10"}, "create_room",
     {"creator": ALICE, "room_version": "10", "preset": "private_chat", "name": None, "room_type": None}),
    (c.ROOMS, {"creator": ALICE, "room_type": "m.space"}, "create_room",
     {"creator": ALICE, "room_version": "12", "preset": "private_chat", "name": None, "room_type": "m.space"}),
    (r(c.JOIN), {"user_id": ALICE, "servers": ["other.test"]}, "join",
     {"user_id": ALICE, "servers": ["other.test"]}),
    (r(c.INVITE), {"sender": ALICE, "user_id": BOB}, "invite", {"sender": ALICE, "user_id": BOB}),
    (r(c.LEAVE), {"user_id": ALICE}, "leave", {"user_id": ALICE}),
    (r(c.KNOCK), {"user_id": ALICE, "servers": ["other.test"], "reason": "let me in"}, "knock",
     {"user_id": ALICE, "servers": ["other.test"], "reason": "let me in"}),
    (r(c.KNOCK), {"user_id": ALICE}, "knock", {"user_id": ALICE, "servers": [], "reason": None}),
    (r(c.EVENTS), {"sender": ALICE, "type": "m.room.message", "content": {"body": "hi"}, "txn_id": "t1"},
     "send", {"sender": ALICE, "type": "m.room.message", "content": {"body": "hi"},
              "state_key": None, "txn_id": "t1"}),
    (r(c.EVENTS_BATCH), {"events": [{"sender": ALICE, "type": "m.room.message", "content": {"body": "1"}},
                                     {"sender": ALICE, "type": "m.room.topic", "state_key": "",
                                      "content": {"topic": "t"}, "txn_id": "t2"}]},
     "send_batch", {"events": [{"sender": ALICE, "type": "m.room.message", "content": {"body": "1"},
                                "state_key": None, "txn_id": None},
                               {"sender": ALICE, "type": "m.room.topic", "content": {"topic": "t"},
                                "state_key": "", "txn_id": "t2"}]}),
    (r(c.KICK), {"sender": ALICE, "user_id": BOB, "reason": "spam"}, "send",
     {"sender": ALICE, "type": "m.room.member", "state_key": BOB,
      "content": {"membership": "leave", "reason": "spam"}}),
    (r(c.BAN), {"sender": ALICE, "user_id": BOB}, "send",
     {"sender": ALICE, "type": "m.room.member", "state_key": BOB, "content": {"membership": "ban"}}),
    (r(c.UNBAN), {"sender": ALICE, "user_id": BOB}, "send",
     {"sender": ALICE, "type": "m.room.member", "state_key": BOB, "content": {"membership": "leave"}}),
    (r(c.BACKFILL), {"from": ["$a"], "limit": 5}, "backfill", {"from": ["$a"], "limit": 5}),
]


@pytest.mark.parametrize("path,body,call,pdu_body", CASES, ids=[f"{x[2]}-{i}" for i, x in enumerate(CASES)])
async def test_route_calls_pdu_with_the_contract_shape(public_client, fake_pdu, path, body, call, pdu_body):
    resp = await public_client.post(path, json=body)
    assert resp.status_code == 200, resp.text
    [(name, room_id, sent)] = fake_pdu.calls
    assert name == call
    assert sent == pdu_body
    assert room_id == (None if call == "create_room" else ROOM)
    assert resp.json() == fake_pdu.answers[-1]


async def test_state_is_passed_through(public_client, fake_pdu):
    resp = await public_client.get(r(c.STATE))
    assert resp.status_code == 200
    assert fake_pdu.calls == [("state", ROOM, None)]
    assert resp.json() == fake_pdu.answers[-1]


async def test_pdu_errors_come_back_unchanged(public_client, fake_pdu):
    fake_pdu.fail = (403, {"errcode": "M_FORBIDDEN", "error": "not a member"})
    resp = await public_client.post(r(c.EVENTS), json={"sender": ALICE, "type": "m.room.message",
                                                       "content": {}})
    assert resp.status_code == 403
    assert resp.json() == {"errcode": "M_FORBIDDEN", "error": "not a member"}


async def test_events_page_reads_the_stream(public_client, fake_tx):
    positions = fake_tx.append(ROOM, [{"type": "m.room.message", "event_id": f"$e{i}"} for i in range(3)])
    fake_tx.append("!other:hs.test", [{"type": "m.room.message", "event_id": "$x"}])
    resp = await public_client.get(r(c.EVENTS), params={"after": positions[0], "limit": 10})
    assert resp.status_code == 200, resp.text
    page = c.EventsPage.model_validate(resp.json())
    assert [(e["event_id"], e["position"]) for e in page.events] == [("$e1", positions[1]), ("$e2", positions[2])]
    assert page.next == positions[2]
    assert fake_tx.stream_calls[-1] == {"after": positions[0], "limit": 10, "room_id": ROOM}


async def test_subscribe_and_unsubscribe_go_to_the_transaction_service(public_client, fake_tx):
    resp = await public_client.post(c.SUBSCRIPTIONS, json={"url": "http://cb.test/hook", "room_id": ROOM,
                                                           "types": ["m.room.message"]})
    assert resp.status_code == 200, resp.text
    answer = c.SubscriptionResponse.model_validate(resp.json())
    sid = answer.subscription_id
    assert fake_tx.public(sid) | {"position": 0} == {"subscription_id": sid, "url": "http://cb.test/hook",
                                                     "room_id": ROOM, "types": ["m.room.message"],
                                                     "position": 0, "hs_token": answer.hs_token}
    resp = await public_client.delete(c.SUBSCRIPTION.format(subscription_id=sid))
    assert resp.status_code == 200 and sid not in fake_tx.subs
    resp = await public_client.delete(c.SUBSCRIPTION.format(subscription_id=sid))
    assert resp.status_code == 404
