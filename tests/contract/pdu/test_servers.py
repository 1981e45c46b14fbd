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


async def test_user_joined_and_the_servers_sharing_a_room_with_a_user(service, service_client):
    alice, stranger = user(service), user(service)
    room = await create_room(service_client, alice)
    resp = await service_client.get(c.ROOM_SERVERS.format(room_id=q(room)), params={"user_id": alice})
    assert resp.json() == {"servers": [service.settings.server_name], "user_joined": True}
    resp = await service_client.get(c.ROOM_SERVERS.format(room_id=q(room)), params={"user_id": stranger})
    assert resp.json()["user_joined"] is False
    resp = await service_client.get(c.USER_SERVERS.format(user_id=q(alice)))
    assert resp.status_code == 200, resp.text
    assert c.UserServersResponse.model_validate(resp.json()).servers == [service.settings.server_name]
    resp = await service_client.get(c.USER_SERVERS.format(user_id=q(stranger)))
    assert resp.json() == {"servers": []}
