"""`GET /rooms` (issue #13, services/transaction/routes/rooms.py): the rooms the pdu service
walks for "every server sharing a room with a user" (presence and device-list updates go
there). Contract (shared/contracts/transaction.py RoomList): every room with a current
state, sorted, whatever our membership now; a room known only by its version (an invite
or a knock stored before we hold any of its state) is not listed."""
from __future__ import annotations

from shared.contracts import transaction as c
from tests.contract.helpers import unique
from tests.contract.transaction.conftest import new_room
from tests.contract.transaction.test_events import ev, persist


async def rooms(client) -> list[str]:
    resp = await client.get(c.ROOMS)
    assert resp.status_code == 200, resp.text
    return c.RoomList.model_validate(resp.json()).rooms


async def with_state(client) -> str:
    room = await new_room(client)
    create = "$" + unique("create")
    await persist(client, {
        "events": [{"event_id": create, "room_id": room, "event": ev(room, create, "m.room.create", ""),
                    "state_after": {"base": None, "delta": [["m.room.create", "", create]]}}],
        "rooms": [{"room_id": room, "extremities": [create], "current_state": {"same_as": create}}]})
    return room


async def test_rooms_with_a_current_state_are_listed_in_order(service_client):
    """Against --base-url other suites add rooms to the same database meanwhile: ours must
    be there, the version-only one not, and the whole list sorted."""
    held = [await with_state(service_client) for _ in range(3)]
    versioned_only = await new_room(service_client)
    listed = await rooms(service_client)
    assert set(held) <= set(listed) and versioned_only not in listed
    assert listed == sorted(listed) and len(listed) == len(set(listed))


async def test_rooms_needs_the_secret(public_client):
    resp = await public_client.get(c.ROOMS)
    assert resp.status_code == 403 and resp.json()["errcode"] == "M_FORBIDDEN"
