"""Catalogue: room server ACLs (`m.room.server_acl`).

Two fake remotes, each signing as itself, join one of our rooms; our admin then denies one
of them by an ACL. The denied server is answered 403 M_FORBIDDEN on every federation
endpoint about the room, its PDUs and room EDUs in /send are not applied (the rest of the
transaction is), and nothing of ours for that room goes to it any more; the allowed server
is unaffected throughout.
"""
from __future__ import annotations

import asyncio

import httpx

import pytest

from shared.contracts.pdu import PduClient
from shared.errors import MatrixError
from tests.fakes.remote import FED, q, wait_for
from tests.hostile.conftest import errcode, sentinel, subscribe, wait_delivered

EVIL = "evil.test:8448"
GOOD = "good.test:8448"
DENY_EVIL = {"allow": ["*"], "deny": ["evil.test"], "allow_ip_literals": False}


async def acl_room(world, hs, version: str = "12"):
    evil = await world.remote(EVIL)
    good = await world.remote(GOOD)
    room_id = await hs.api.create_room(hs.user("alice"), room_version=version, preset="public_chat")
    evil_room = await evil.join(hs, room_id, "mallory")
    good_room = await good.join(hs, room_id, "fred")
    return room_id, evil, evil_room, good, good_room


async def deny_evil(hs, room_id: str, content=None) -> str:
    return await hs.api.send(room_id, hs.user("alice"), "m.room.server_acl",
                             content or DENY_EVIL, state_key="")


def endpoints(room_id: str, user_id: str, some_event: str) -> list[tuple[str, str, dict | None, list]]:
    """(method, path, body, query) of every federation request about a room."""
    rid, uid, eid = q(room_id), q(user_id), q(some_event)
    fake_event = q("$" + "A" * 43)
    return [
        ("GET", f"{FED}/v1/make_join/{rid}/{uid}", None, [("ver", "12")]),
        ("GET", f"{FED}/v1/make_leave/{rid}/{uid}", None, []),
        ("PUT", f"{FED}/v2/send_join/{rid}/{fake_event}", {}, []),
        ("PUT", f"{FED}/v2/send_leave/{rid}/{fake_event}", {}, []),
        ("GET", f"{FED}/v1/make_knock/{rid}/{uid}", None, [("ver", "12")]),
        ("PUT", f"{FED}/v1/send_knock/{rid}/{fake_event}", {}, []),
        ("PUT", f"{FED}/v2/invite/{rid}/{fake_event}", {"room_version": "12", "event": {}}, []),
        ("GET", f"{FED}/v1/state/{rid}", None, [("event_id", some_event)]),
        ("GET", f"{FED}/v1/state_ids/{rid}", None, [("event_id", some_event)]),
        ("GET", f"{FED}/v1/backfill/{rid}", None, [("v", some_event), ("limit", "10")]),
        ("GET", f"{FED}/v1/event_auth/{rid}/{eid}", None, []),
        ("POST", f"{FED}/v1/get_missing_events/{rid}",
         {"earliest_events": [], "latest_events": [some_event], "limit": 10}, []),
        ("GET", f"{FED}/v1/event/{eid}", None, []),
        ("GET", f"{FED}/v1/timestamp_to_event/{rid}", None, [("ts", "0"), ("dir", "f")]),
    ]


async def test_denied_server_is_refused_every_endpoint_and_allowed_one_is_not(world, hs):
    room_id, evil, evil_room, good, _good_room = await acl_room(world, hs)
    eid = await hs.api.send(room_id, hs.user("alice"), "m.room.message", {"msgtype": "m.text", "body": "hi"})
    # before the ACL the same reads are answered
    for method, path, body, query in endpoints(room_id, evil.user("mallory"), eid):
        if method == "GET" and "make_" not in path:
            r = await evil.request(hs, method, path, body, query=query)
            assert r.status_code == 200, (path, r.text)
    await deny_evil(hs, room_id)
    for method, path, body, query in endpoints(room_id, evil.user("mallory"), eid):
        r = await evil.request(hs, method, path, body, query=query)
        assert errcode(r) == (403, "M_FORBIDDEN"), (path, r.status_code, r.text)
    for method, path, body, query in endpoints(room_id, good.user("fred"), eid):
        if method == "GET" and "make_knock" not in path:   # a public room: nobody knocks
            r = await good.request(hs, method, path, body, query=query)
            assert r.status_code == 200, (path, r.text)


async def test_denied_origin_pdus_and_room_edus_dropped_rest_applied(world, hs):
    room_id, evil, evil_room, good, good_room = await acl_room(world, hs)
    acl_id = await deny_evil(hs, room_id)
    await hs.wait_live(room_id, acl_id)
    sid = await subscribe(hs, room_id)
    everything = await hs.api.subscribe("http://cb/callback")
    # the denied server's own message, and a good server's message it relays
    bad_id, bad = evil_room.message("mallory", "denied")
    relayed_id, relayed = good_room.message("fred", "relayed by the denied server", add=False)
    typing = {"edu_type": "m.typing", "content": {"room_id": room_id, "user_id": evil.user("mallory"),
                                                  "typing": True}}
    presence = {"edu_type": "m.presence", "content": {"push": [
        {"user_id": evil.user("mallory"), "presence": "online", "last_active_ago": 1}]}}
    r = await evil.send_transaction(hs, [bad, relayed], [typing, presence])
    assert r.status_code == 200, r.text
    # the allowed server's traffic still applies, EDUs included
    good_typing = {"edu_type": "m.typing", "content": {"room_id": room_id, "user_id": good.user("fred"),
                                                       "typing": True}}
    ok_id, ok = good_room.message("fred", "allowed")
    r = await good.send_transaction(hs, [ok], [good_typing])
    assert r.status_code == 200, r.text
    await wait_delivered(hs, sid, ok_id)
    await sentinel(hs, good, good_room)
    assert await hs.records(bad_id, relayed_id) == {}
    await hs.assert_absent(room_id, bad_id, relayed_id)

    def edus():
        return [(e["edu_type"], e["origin"]) for b in hs.receiver.bodies
                if b["subscription_id"] == everything for e in b.get("edus", [])]
    await wait_for(lambda: ("m.typing", GOOD) in edus(), what="the good server's typing")
    edus = edus()
    assert ("m.typing", EVIL) not in edus                # a room EDU of the denied server
    assert ("m.presence", EVIL) in edus                  # not a room EDU: the ACL is per room


async def test_outbound_to_denied_server_stops_for_the_room(world, hs):
    room_id, evil, evil_room, good, good_room = await acl_room(world, hs)
    acl_id = await deny_evil(hs, room_id)
    after_id = await hs.api.send(room_id, hs.user("alice"), "m.room.message",
                                 {"msgtype": "m.text", "body": "after the ACL"})
    await hs.api.typing(room_id, hs.user("alice"), True)
    await wait_for(lambda: after_id in good.received_event_ids(), what="message at the good server")
    await wait_for(lambda: any(e.get("edu_type") == "m.typing" for t in good.transactions
                               for e in t.get("edus", [])), what="typing at the good server")
    await asyncio.sleep(0.3)
    assert acl_id in good.received_event_ids()
    assert acl_id not in evil.received_event_ids()
    assert after_id not in evil.received_event_ids()
    assert not [e for t in evil.transactions for e in t.get("edus", []) if e.get("edu_type") == "m.typing"]
    pdu = PduClient("http://pdu", hs.settings.secret(), transport=httpx.ASGITransport(hs.pdu_app))
    try:
        assert sorted(await pdu.room_servers(room_id)) == sorted([hs.server_name, GOOD])
    finally:
        await pdu.aclose()


async def test_acl_change_takes_effect_and_can_be_lifted(world, hs):
    """Answers follow the room's current ACL at once (the cache is keyed by the ACL event)."""
    room_id, evil, evil_room, good, good_room = await acl_room(world, hs)
    eid = await hs.api.send(room_id, hs.user("alice"), "m.room.message", {"msgtype": "m.text", "body": "x"})
    path, query = f"{FED}/v1/state_ids/{q(room_id)}", [("event_id", eid)]
    assert (await evil.request(hs, "GET", path, query=query)).status_code == 200
    await deny_evil(hs, room_id)
    assert errcode(await evil.request(hs, "GET", path, query=query)) == (403, "M_FORBIDDEN")
    await deny_evil(hs, room_id, {"allow": ["*"], "deny": ["other.test"]})
    assert (await evil.request(hs, "GET", path, query=query)).status_code == 200
    await deny_evil(hs, room_id, {"allow": ["good.test", "ours.test"]})   # an allow list
    assert errcode(await evil.request(hs, "GET", path, query=query)) == (403, "M_FORBIDDEN")
    assert (await good.request(hs, "GET", path, query=query)).status_code == 200


@pytest.mark.parametrize("content", [
    {"allow": ["*"], "deny": [1, None, {"x": 1}, ["evil.test"], "evil.test"]},
    {"allow": [42, "*"], "deny": ["EVIL.TEST"], "allow_ip_literals": "no"},
    {"allow": ["*.test", True], "deny": ["ev?l.*"]},
])
async def test_acl_with_non_string_entries(world, hs, content):
    """Hostile ACL content (non-string entries, odd case, globs): the string entries apply,
    the rest is ignored, nothing fails."""
    room_id, evil, evil_room, good, _ = await acl_room(world, hs)
    eid = await deny_evil(hs, room_id, content)
    path, query = f"{FED}/v1/state_ids/{q(room_id)}", [("event_id", eid)]
    assert errcode(await evil.request(hs, "GET", path, query=query)) == (403, "M_FORBIDDEN")
    assert (await good.request(hs, "GET", path, query=query)).status_code == 200


async def test_acl_received_over_federation_applies(world, hs):
    """The ACL comes from another server of the room (its admin has the power): applied."""
    room_id, evil, evil_room, good, good_room = await acl_room(world, hs)
    pl = await hs.api.state(room_id)
    pl = next(e for e in pl if e["type"] == "m.room.power_levels")
    users = dict(pl["content"].get("users", {}), **{good.user("fred"): 100})
    await hs.api.send(room_id, hs.user("alice"), "m.room.power_levels",
                      dict(pl["content"], users=users), state_key="")
    await wait_for(lambda: any(e.get("type") == "m.room.power_levels" and good.user("fred") in
                               e["content"].get("users", {}) for e in good.received_pdus()),
                   what="power levels at the good server")
    acl_id, acl = good_room.build("fred", "m.room.server_acl", DENY_EVIL, state_key="")
    r = await good.send_transaction(hs, [acl])
    assert r.status_code == 200, r.text
    await hs.wait_live(room_id, acl_id)
    r = await evil.request(hs, "GET", f"{FED}/v1/state_ids/{q(room_id)}", query=[("event_id", acl_id)])
    assert errcode(r) == (403, "M_FORBIDDEN")


async def test_acl_denying_ourselves_is_refused(hs):
    room_id = await hs.api.create_room(hs.user("alice"), room_version="12")
    with pytest.raises(MatrixError) as exc:
        await deny_evil(hs, room_id, {"allow": ["*"], "deny": ["ours.test"]})
    assert exc.value.status == 400
    assert not [e for e in await hs.api.state(room_id) if e["type"] == "m.room.server_acl"]
