"""Subscription delivery of received EDUs: in the callback body's `edus` list beside
`events`, each {edu_type, origin, content, position}, in stream order, retried (same
bytes) until 2xx, the position saved only after the 2xx; `types` filters EDUs by edu_type;
a room subscription gets only its room's EDUs (the transaction service filters them)."""
from __future__ import annotations

from shared.contracts import messaging as c
from tests.contract.helpers import wait_until

ROOM = "!room:hs.test"
HOOK = "http://cb.test/hook"


def edu(i: int, edu_type: str = "m.typing") -> dict:
    return {"edu_type": edu_type, "origin": "remote.test",
            "content": {"room_id": ROOM, "user_id": "@u:remote.test", "typing": True, "n": i}}


async def subscribe(client, **kw) -> str:
    resp = await client.post(c.SUBSCRIPTIONS, json={"url": HOOK, **kw})
    assert resp.status_code == 200, resp.text
    return resp.json()["subscription_id"]


async def test_edus_beside_events_retried_until_2xx_then_position_saved(public_client, fake_tx,
                                                                         receiver, log):
    sid = await subscribe(public_client, room_id=ROOM)
    receiver.fail_next = 2
    [p1] = fake_tx.append_edus(ROOM, [edu(1)])
    [p2] = fake_tx.append(ROOM, [{"type": "m.room.message", "event_id": "$e", "content": {}}])
    [p3] = fake_tx.append_edus(ROOM, [edu(3, "m.receipt")])
    await wait_until(lambda: receiver.accepted(), what="an accepted callback")
    await wait_until(lambda: fake_tx.subs[sid]["position"] == p3, what="position saved")
    assert [s for _, s in receiver.attempts][:3] == [500, 500, 200]
    raws = [raw for raw, _ in receiver.attempts[:3]]
    assert raws[0] == raws[1] == raws[2]
    bodies = receiver.accepted()
    for b in bodies:
        c.CallbackBody.model_validate(b)
    assert [(e["event_id"], e["position"]) for b in bodies for e in b["events"]] == [("$e", p2)]
    assert [dict(e) for b in bodies for e in b["edus"]] == [dict(edu(1), position=p1),
                                                            dict(edu(3, "m.receipt"), position=p3)]
    assert bodies[-1]["position"] == p3
    first_save = next(i for i, entry in enumerate(log) if entry[0] == "position")
    assert log.index(("callback", 200)) < first_save
    assert all(call.get("edus") for call in fake_tx.stream_calls)


async def test_types_filter_edus_and_the_position_still_moves(public_client, fake_tx, receiver):
    sid = await subscribe(public_client, types=["m.direct_to_device"])
    [typing_pos] = fake_tx.append_edus(ROOM, [edu(1)])
    await wait_until(lambda: fake_tx.subs[sid]["position"] == typing_pos, what="position past typing")
    assert receiver.attempts == []
    td = {"edu_type": "m.direct_to_device", "origin": "remote.test", "content": {"message_id": "m"}}
    [td_pos] = fake_tx.append_edus(None, [td])
    await wait_until(lambda: receiver.accepted(), what="the to-device EDU")
    [body] = receiver.accepted()
    assert body["events"] == [] and body["edus"] == [dict(td, position=td_pos)]
    await wait_until(lambda: fake_tx.subs[sid]["position"] == td_pos, what="position saved")
