"""Redactions over federation, per room version: applied to the stored event on both
servers (what /event serves), and refused for a sender without the power to redact."""
from __future__ import annotations

import asyncio

import pytest

from shared.errors import MatrixError
from tests.e2e.test_inprocess import pair  # noqa: F401  (fixture)


async def stored(hs, event_id):
    return (await hs.tx.get_events([event_id]))[event_id]["event"]


async def wait_stored(hs, event_id, predicate, timeout=10.0):
    for _ in range(int(timeout / 0.05)):
        got = await hs.tx.get_events([event_id])
        if event_id in got and predicate(got[event_id]["event"]):
            return got[event_id]["event"]
        await asyncio.sleep(0.05)
    raise AssertionError(f"{event_id} never matched on {hs.server_name}")


@pytest.mark.parametrize("version", ["10", "11", "12"])
async def test_redaction_applies_on_both_servers(pair, version):  # noqa: F811
    a, b = pair
    alice, bob = a.user("alice"), b.user("bob")
    room = await a.api.create_room(alice, room_version=version, preset="public_chat")
    await b.api.join(room, bob, servers=[a.server_name])
    msg = await b.api.send(room, bob, "m.room.message", {"body": "oops", "msgtype": "m.text"})
    mine = await a.api.send(room, alice, "m.room.message", {"body": "mine", "msgtype": "m.text"})
    await wait_stored(a, msg, lambda e: True)
    await wait_stored(b, mine, lambda e: True)
    with pytest.raises(MatrixError) as exc:
        await b.api.send(room, bob, "m.room.redaction", {"redacts": mine})
    assert exc.value.status == 403
    await a.api.send(room, alice, "m.room.redaction", {"redacts": msg})
    for hs in (a, b):
        ev = await wait_stored(hs, msg, lambda e: e["content"] == {})
        assert ev["unsigned"]["redacted_because"]["sender"] == alice
    assert (await stored(a, mine))["content"]["body"] == "mine"
    assert (await stored(b, mine))["content"]["body"] == "mine"
