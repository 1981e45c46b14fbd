"""Which servers are in a room (`GET /rooms/{room_id}/servers`): the servers with a
joined member in the current state; 404 for a room the pdu service does not know."""
from __future__ import annotations

from shared.contracts import pdu as c
from tests.contract.pdu.test_rooms import create_room, q, user


async def servers(client, room_id: str):
    return await client.get(c.ROOM_SERVERS.format(room_id=q(room_id)))


async def test_servers_follow_the_current_membership(service, service_client):
    alice = user(service)
    room = await create_room(service_client, alice)
    resp = await servers(service_client, room)
    assert resp.status_code == 200, resp.text
    assert c.ServersResponse.model_validate(resp.json()).servers == [service.settings.server_name]
    resp = await service_client.post(c.LEAVE.format(room_id=q(room)), json={"user_id": alice})
    assert resp.status_code == 200, resp.text
    assert (await servers(service_client, room)).json() == {"servers": []}


async def test_unknown_room_is_404(service_client):
    resp = await servers(service_client, "!nowhere:elsewhere.test")
    assert resp.status_code == 404 and resp.json()["errcode"] == "M_NOT_FOUND"
