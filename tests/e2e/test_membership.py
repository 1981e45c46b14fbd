"""Membership over federation through the messaging API: invite both ways, join after an
invite, reject an invite (make_leave/send_leave), kick, ban, unban."""
from __future__ import annotations

import asyncio

import pytest

from shared.errors import MatrixError
from tests.e2e.test_inprocess import pair  # noqa: F401  (fixture)


async def membership(hs, room, user):
    for e in await hs.api.state(room):
        if e["type"] == "m.room.member" and e["state_key"] == user:
            return e["content"]["membership"]
    return None


async def wait_membership(hs, room, user, want, timeout=10.0):
    for _ in range(int(timeout / 0.05)):
        try:
            if await membership(hs, room, user) == want:
                return
        except MatrixError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"{user} never became {want} on {hs.server_name}")


@pytest.mark.parametrize("version", ["12", "10"])
async def test_invite_join_kick_ban_unban(pair, version):  # noqa: F811
    a, b = pair
    alice, bob = a.user("alice"), b.user("bob")
    room = await a.api.create_room(alice, room_version=version, preset="private_chat")
    sub = await b.api.subscribe("http://cb/callback", room_id=room)
    with pytest.raises(MatrixError) as exc:          # private room: no join without invite
        await b.api.join(room, bob, servers=[a.server_name])
    assert exc.value.status in (403, 404)
    await a.api.invite(room, alice, bob)
    evs = await b.receiver.wait_for(lambda e: any(x["type"] == "m.room.member" for x in e),
                                    subscription_id=sub)
    assert evs[0]["content"]["membership"] == "invite" and evs[0]["state_key"] == bob
    await b.api.join(room, bob, servers=[a.server_name])
    await wait_membership(a, room, bob, "join")
    await a.api.moderate("kick", room, alice, bob, reason="bye")
    await wait_membership(b, room, bob, "leave")
    await a.api.moderate("ban", room, alice, bob)
    await wait_membership(b, room, bob, "ban")
    with pytest.raises(MatrixError):
        await a.api.invite(room, alice, bob)           # banned: cannot be invited
    await a.api.moderate("unban", room, alice, bob)
    await wait_membership(b, room, bob, "leave")


async def test_reject_invite_and_invite_from_other_side(pair):  # noqa: F811
    a, b = pair
    alice, bob, carol = a.user("alice"), b.user("bob"), b.user("carol")
    room = await a.api.create_room(alice, preset="private_chat")
    await a.api.invite(room, alice, carol)
    await asyncio.sleep(0.1)
    await b.api.leave(room, carol)                    # reject through make_leave/send_leave
    await wait_membership(a, room, carol, "leave")
    # invite the other way: bob's room, alice invited
    room_b = await b.api.create_room(bob, preset="private_chat")
    await b.api.invite(room_b, bob, alice)
    await a.api.join(room_b, alice, servers=[b.server_name])
    await wait_membership(b, room_b, alice, "join")
    await a.api.leave(room_b, alice)
    await wait_membership(b, room_b, alice, "leave")
