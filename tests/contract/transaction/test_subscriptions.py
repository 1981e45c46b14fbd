"""Subscriptions: created at the current stream position, positions only move forward,
and a lease gives one deliverer the right to move a subscription's position."""
from __future__ import annotations

from shared.contracts import transaction as c
from tests.contract.helpers import unique
from tests.contract.transaction.conftest import new_room


async def add(client, **kw) -> dict:
    resp = await client.post(c.SUBSCRIPTIONS, json={"url": f"http://cb.test/{unique()}", **kw})
    assert resp.status_code == 200, resp.text
    return c.Subscription.model_validate(resp.json()).model_dump()


async def listed(client, sid: str) -> dict | None:
    resp = await client.get(c.SUBSCRIPTIONS)
    assert resp.status_code == 200
    return next((s for s in resp.json()["subscriptions"] if s["subscription_id"] == sid), None)


async def test_subscription_starts_at_the_current_position(service_client):
    room = await new_room(service_client)
    eid = "$" + unique("before")
    res = await service_client.post(c.PERSIST, json={"events": [
        {"event_id": eid, "room_id": room, "event": {"type": "m.room.message", "content": {}}}]})
    stream_pos = res.json()["events"][eid]["stream"]
    sub = await add(service_client, room_id=room, types=["m.room.message"])
    assert sub["position"] >= stream_pos
    assert sub["room_id"] == room and sub["types"] == ["m.room.message"]
    assert await listed(service_client, sub["subscription_id"]) == sub


async def test_position_only_moves_forward(service_client):
    sid = (await add(service_client))["subscription_id"]
    path = c.SUBSCRIPTION_POSITION.format(subscription_id=sid)
    start = (await listed(service_client, sid))["position"]
    for position, expect in ((start + 10, start + 10), (start + 5, start + 10), (start + 12, start + 12)):
        resp = await service_client.put(path, json={"position": position})
        assert resp.status_code == 200, resp.text
        assert (await listed(service_client, sid))["position"] == expect


async def test_unknown_subscription_is_404(service_client):
    sid = unique("nosuch")
    resp = await service_client.put(c.SUBSCRIPTION_POSITION.format(subscription_id=sid), json={"position": 1})
    assert resp.status_code == 404 and resp.json()["errcode"] == "M_NOT_FOUND"
    resp = await service_client.delete(c.SUBSCRIPTION.format(subscription_id=sid))
    assert resp.status_code == 404


async def test_delete(service_client):
    sid = (await add(service_client))["subscription_id"]
    assert (await service_client.delete(c.SUBSCRIPTION.format(subscription_id=sid))).status_code == 200
    assert await listed(service_client, sid) is None


async def test_lease_gives_one_deliverer_the_position(service_client):
    sid = (await add(service_client))["subscription_id"]
    lease = c.SUBSCRIPTION_LEASE.format(subscription_id=sid)
    position = c.SUBSCRIPTION_POSITION.format(subscription_id=sid)
    a = c.LeaseResponse.model_validate((await service_client.post(lease, json={"owner": "a", "ttl_s": 30})).json())
    b = c.LeaseResponse.model_validate((await service_client.post(lease, json={"owner": "b", "ttl_s": 30})).json())
    assert a.granted and not b.granted
    start = a.position
    resp = await service_client.put(position, json={"position": start + 3, "owner": "b"})
    assert resp.status_code == 409, resp.text
    resp = await service_client.put(position, json={"position": start + 3, "owner": "a"})
    assert resp.status_code == 200
    renewed = (await service_client.post(lease, json={"owner": "a", "ttl_s": 30})).json()
    assert renewed == {"granted": True, "position": start + 3}


async def test_stream_read_can_save_the_position_first(service_client):
    """`stream` with subscription_id moves that position to `after` before reading, under
    the same rules as the position route: forward only, lease holder only, 404 if unknown."""
    sid = (await add(service_client))["subscription_id"]
    start = (await listed(service_client, sid))["position"]
    lease = c.SUBSCRIPTION_LEASE.format(subscription_id=sid)
    assert (await service_client.post(lease, json={"owner": "me", "ttl_s": 30})).json()["granted"]
    for after, expect in ((start + 7, start + 7), (start + 3, start + 7)):
        resp = await service_client.get(c.STREAM, params={"after": after, "subscription_id": sid,
                                                          "owner": "me"})
        assert resp.status_code == 200, resp.text
        assert (await listed(service_client, sid))["position"] == expect
    resp = await service_client.get(c.STREAM, params={"after": start + 9, "subscription_id": sid,
                                                      "owner": "someone else"})
    assert resp.status_code == 409
    assert (await listed(service_client, sid))["position"] == start + 7
    resp = await service_client.get(c.STREAM, params={"after": 1, "subscription_id": "nope"})
    assert resp.status_code == 404 and resp.json()["errcode"] == "M_NOT_FOUND"
