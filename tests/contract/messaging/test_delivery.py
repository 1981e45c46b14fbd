"""Subscription delivery: each callback POST is `{subscription_id, events, position}`, is
retried (same bytes) until the receiver answers 2xx, and only then is the position saved;
filters apply; a restart resumes after the saved position; no lease, no delivery."""
from __future__ import annotations

import asyncio

import orjson

from shared.contracts import messaging as c
from tests.contract.helpers import make_settings, wait_until
from tests.contract.messaging.conftest import FakePdu, FakeTransaction, Receiver, build_messaging

ROOM = "!room:hs.test"
HOOK = "http://cb.test/hook"


def msg(i: int, type_: str = "m.room.message") -> dict:
    return {"type": type_, "event_id": f"$ev{i}", "content": {"body": str(i)}}


async def subscribe(client, **kw) -> str:
    resp = await client.post(c.SUBSCRIPTIONS, json={"url": HOOK, "room_id": ROOM, **kw})
    assert resp.status_code == 200, resp.text
    return resp.json()["subscription_id"]


async def test_callback_retried_until_2xx_then_position_saved(public_client, fake_tx, receiver, log):
    sid = await subscribe(public_client)
    receiver.fail_next = 2
    fake_tx.append("!elsewhere:hs.test", [msg(0)])              # another room: not delivered
    positions = fake_tx.append(ROOM, [msg(1), msg(2), msg(3)])
    await wait_until(lambda: receiver.accepted(), timeout=5, what="an accepted callback")
    await wait_until(lambda: fake_tx.subs[sid]["position"] == positions[-1], what="position saved")

    raws = [raw for raw, _ in receiver.attempts]
    assert [s for _, s in receiver.attempts] == [500, 500, 200]
    assert raws[0] == raws[1] == raws[2], "a retry must repeat the same body"
    [body] = receiver.accepted()
    c.CallbackBody.model_validate(body)
    assert set(body) == {"subscription_id", "events", "edus", "position"}
    assert body["subscription_id"] == sid and body["position"] == positions[-1]
    assert [(e["event_id"], e["position"]) for e in body["events"]] == [
        ("$ev1", positions[0]), ("$ev2", positions[1]), ("$ev3", positions[2])]
    # the position moved only after the receiver's 2xx
    first_save = next(i for i, entry in enumerate(log) if entry[0] == "position")
    assert log.index(("callback", 200)) < first_save
    assert all(entry[2] == positions[-1] for entry in log if entry[0] == "position")


async def test_types_filter_and_the_position_still_moves(public_client, fake_tx, receiver):
    sid = await subscribe(public_client, types=["m.room.message"])
    [topic_pos] = fake_tx.append(ROOM, [msg(1, "m.room.topic")])
    await wait_until(lambda: fake_tx.subs[sid]["position"] == topic_pos, what="position past the topic")
    assert receiver.attempts == []                               # nothing matched: nothing posted
    [msg_pos] = fake_tx.append(ROOM, [msg(2)])
    await wait_until(lambda: receiver.accepted(), what="the message")
    assert receiver.events() == [dict(msg(2), room_id=ROOM, position=msg_pos)]
    await wait_until(lambda: fake_tx.subs[sid]["position"] == msg_pos, what="position saved")


async def test_later_batches_follow_in_order(public_client, fake_tx, receiver):
    await subscribe(public_client)
    first = fake_tx.append(ROOM, [msg(1), msg(2)])
    await wait_until(lambda: len(receiver.events()) == 2, what="first batch")
    second = fake_tx.append(ROOM, [msg(3)])
    await wait_until(lambda: len(receiver.events()) == 3, what="second batch")
    assert [e["position"] for e in receiver.events()] == first + second
    assert [b["position"] for b in receiver.accepted()] == [first[-1], second[-1]]


async def test_unsubscribe_stops_delivery(public_client, fake_tx, receiver):
    sid = await subscribe(public_client)
    fake_tx.append(ROOM, [msg(1)])
    await wait_until(lambda: receiver.accepted(), what="first delivery")
    resp = await public_client.delete(c.SUBSCRIPTION.format(subscription_id=sid))
    assert resp.status_code == 200
    fake_tx.append(ROOM, [msg(2)])
    await asyncio.sleep(0.3)
    assert [e["event_id"] for e in receiver.events()] == ["$ev1"]


async def test_no_delivery_while_another_replica_holds_the_lease(public_client, fake_tx, receiver):
    fake_tx.lease_holder = "another-replica"
    sid = await subscribe(public_client)
    fake_tx.append(ROOM, [msg(1)])
    await asyncio.sleep(0.4)
    assert receiver.attempts == []
    assert fake_tx.subs[sid]["position"] == 0


async def test_restart_resumes_after_the_saved_position(tmp_path, inprocess):
    """A subscription known to the transaction service is picked up at start, from its
    saved position: what was acknowledged before is not delivered again."""
    log: list = []
    fake_tx, receiver = FakeTransaction(log), Receiver(log)
    positions = fake_tx.append(ROOM, [msg(i) for i in range(1, 5)])
    fake_tx.subs["s1"] = {"subscription_id": "s1", "url": HOOK, "room_id": ROOM, "types": None,
                          "position": positions[1], "owner": None}
    app = build_messaging(make_settings(tmp_path), FakePdu(), fake_tx, receiver)
    async with app.router.lifespan_context(app):
        await wait_until(lambda: receiver.accepted(), timeout=5, what="delivery after start")
        await wait_until(lambda: fake_tx.subs["s1"]["position"] == positions[-1], what="position saved")
    assert [e["event_id"] for e in receiver.events()] == ["$ev3", "$ev4"]
    assert orjson.loads(receiver.attempts[0][0])["subscription_id"] == "s1"
