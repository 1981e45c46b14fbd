"""Restricted joins as the resident and server ACLs (issue #14), on the federation routes
transport forwards (make_join, send_join and the rest) and on what the pdu service tells its
neighbours (the room's servers, the destinations of our events, relayed PDUs consumed).

Contract (services/pdu/restricted.py, federation.py, acl.py):
- make_join of a restricted / knock_restricted room names one of our users who can invite
  in join_authorised_via_users_server once the joiner is in an allowed room we hold; not in
  one: 403 M_FORBIDDEN; we hold none: 400 M_UNABLE_TO_AUTHORISE_JOIN; no user of ours can
  invite: 400 M_UNABLE_TO_GRANT_JOIN. send_join of such a join is signed by us, or refused
  with nothing stored when it names nobody, another server's user, or one who cannot invite.
- A server the room's m.room.server_acl denies (port-insensitively) is 403 M_FORBIDDEN on
  every federation request about the room; it drops out of the room's servers and of our
  events' destinations, and its relayed PDUs are consumed without being stored."""
from __future__ import annotations

import time

import pytest

from shared.contracts import pdu as c
from shared.crypto import SigningKey
from shared.events import compute_event_id, sign_event, verify_event_signature
from shared.room_versions import get_room_version
from tests.contract.pdu.conftest import REMOTE
from tests.contract.pdu.test_knock import VERS, signed
from tests.contract.pdu.test_public_rooms import new_room, state_event
from tests.contract.pdu.test_with_fakes import ALICE, q, remote_join, send, state

HEADERS = {c.ORIGIN_HEADER: REMOTE}
FRED = f"@fred:{REMOTE}"
GEORGE = f"@george:{REMOTE}"


async def room_v(client, version: str, preset: str) -> str:
    resp = await client.post(c.ROOMS, json={"creator": ALICE, "room_version": version, "preset": preset})
    assert resp.status_code == 200, resp.text
    return resp.json()["room_id"]


async def restricted_room(client, allow: list[str], version="12", rule="restricted") -> str:
    room = await room_v(client, version, "private_chat")
    await state_event(client, room, "m.room.join_rules", {
        "join_rule": rule, "allow": [{"type": "m.room_membership", "room_id": r} for r in allow]})
    return room


async def make_join(client, room, user=FRED):
    return await client.get(c.FEDERATION + f"/v1/make_join/{q(room)}/{q(user)}", params=VERS, headers=HEADERS)


async def send_join(client, room, eid, ev, headers=HEADERS):
    return await client.put(c.FEDERATION + f"/v2/send_join/{q(room)}/{q(eid)}", json=ev, headers=headers)


def our_keys(service) -> dict:
    key = SigningKey.load(service.settings.path("signing_key"))
    return {key.key_id: key.verify_key}


@pytest.mark.parametrize("version,rule", [("10", "knock_restricted"), ("11", "restricted"),
                                          ("12", "restricted")])
async def test_a_restricted_join_is_authorised_and_countersigned(service, service_client, recorder,
                                                                fake_transport, version, rule):
    space = await room_v(service_client, version, "public_chat")
    await remote_join(service_client, fake_transport, space, version, "fred")
    room = await restricted_room(service_client, [space], version, rule)
    resp = await make_join(service_client, room)
    assert resp.status_code == 200, resp.text
    template = resp.json()["event"]
    assert template["content"] == {"membership": "join", "join_authorised_via_users_server": ALICE}
    eid, ev = signed(template, fake_transport.remote_key, version)
    resp = await send_join(service_client, room, eid, ev)
    assert resp.status_code == 200, resp.text
    answered = resp.json()["event"]
    rv = get_room_version(version)
    assert set(answered["signatures"]) == {REMOTE, "hs.test"}
    assert verify_event_signature(answered, rv, "hs.test", our_keys(service))
    assert compute_event_id(answered, rv) == eid
    stored = recorder.persisted_events()[eid]
    assert "hs.test" in stored["event"]["signatures"] and not stored.get("rejected")
    assert (await state(service_client, room))[("m.room.member", FRED)]["event_id"] == eid


async def test_make_join_refusals_for_restricted_rooms(service_client, fake_transport):
    space = await room_v(service_client, "12", "public_chat")
    await remote_join(service_client, fake_transport, space, "12", "fred")
    room = await restricted_room(service_client, [space])
    resp = await make_join(service_client, room, GEORGE)                 # in no allowed room
    assert (resp.status_code, resp.json()["errcode"]) == (403, "M_FORBIDDEN"), resp.text
    unheld = await restricted_room(service_client, ["!" + "U" * 43])     # we hold no allowed room
    resp = await make_join(service_client, unheld)
    assert (resp.status_code, resp.json()["errcode"]) == (400, "M_UNABLE_TO_AUTHORISE_JOIN"), resp.text
    resp = await service_client.post(c.LEAVE.format(room_id=q(room)), json={"user_id": ALICE})
    assert resp.status_code == 200, resp.text
    resp = await make_join(service_client, room)                          # nobody of ours left to invite
    assert (resp.status_code, resp.json()["errcode"]) == (400, "M_UNABLE_TO_GRANT_JOIN"), resp.text


async def test_send_join_naming_no_valid_authoriser_stores_nothing(service_client, recorder, fake_transport):
    space = await room_v(service_client, "12", "public_chat")
    await remote_join(service_client, fake_transport, space, "12", "fred")
    room = await restricted_room(service_client, [space])
    bob = "@bob:hs.test"                                                  # joined, power 0 < invite 50
    assert (await service_client.post(c.INVITE.format(room_id=q(room)),
                                      json={"sender": ALICE, "user_id": bob})).status_code == 200
    assert (await service_client.post(c.JOIN.format(room_id=q(room)), json={"user_id": bob})).status_code == 200
    template = (await make_join(service_client, room)).json()["event"]
    key = fake_transport.remote_key
    n = len(recorder.persists)
    for content, status, errcode in (({"membership": "join"}, 403, "M_FORBIDDEN"),
                                     ({"membership": "join", "join_authorised_via_users_server": bob},
                                      403, "M_FORBIDDEN"),
                                     ({"membership": "join", "join_authorised_via_users_server": GEORGE},
                                      400, "M_INVALID_PARAM")):
        eid, ev = signed(dict(template, content=content), key)
        resp = await send_join(service_client, room, eid, ev)
        assert (resp.status_code, resp.json()["errcode"]) == (status, errcode), (content, resp.text)
    assert recorder.persists[n:] == []
    assert ("m.room.member", FRED) not in await state(service_client, room)


# ------------------------------------------------------------------ server ACLs

@pytest.fixture
async def acl_room(service_client, fake_transport):
    """A room remote.test's fred joined, then an ACL denying remote.test; IDs to ask about."""
    room = await room_v(service_client, "12", "public_chat")
    jid, _ = await remote_join(service_client, fake_transport, room, "12", "fred")
    msg = await send(service_client, room, {"sender": ALICE, "type": "m.room.message", "content": {"body": "x"}})
    return {"room": room, "join": jid, "msg": msg}


async def deny_remote(client, room):
    await state_event(client, room, "m.room.server_acl",
                      {"allow": ["*"], "deny": [REMOTE], "allow_ip_literals": False})


def acl_requests(r: dict, fake_transport, origin: str = REMOTE):
    """Every federation request about the room, for users of `origin` where it matters."""
    room, msg = q(r["room"]), q(r["msg"])
    george, fred = q(f"@george:{origin}"), q(f"@fred:{origin}")
    leave_id, leave = signed({"type": "m.room.member", "room_id": r["room"], "sender": FRED, "state_key": FRED,
                              "content": {"membership": "leave"}, "depth": 50,
                              "prev_events": [r["msg"]], "auth_events": [r["join"]]},
                             fake_transport.remote_key)
    return [("GET", f"/v1/event/{msg}", {}),
            ("GET", f"/v1/state/{room}", {"params": {"event_id": r["msg"]}}),
            ("GET", f"/v1/state_ids/{room}", {"params": {"event_id": r["msg"]}}),
            ("GET", f"/v1/event_auth/{room}/{msg}", {}),
            ("GET", f"/v1/backfill/{room}", {"params": {"v": r["msg"], "limit": 5}}),
            ("POST", f"/v1/get_missing_events/{room}",
             {"json": {"earliest_events": [], "latest_events": [r["msg"]], "limit": 5}}),
            ("GET", f"/v1/make_join/{room}/{george}", {"params": VERS}),
            ("GET", f"/v1/make_leave/{room}/{fred}", {}),
            ("GET", f"/v1/make_knock/{room}/{george}", {"params": VERS}),
            ("PUT", f"/v2/send_leave/{room}/{q(leave_id)}", {"json": leave}),
            ("PUT", f"/v2/send_join/{room}/{q(leave_id)}", {"json": leave}),
            ("PUT", f"/v1/send_knock/{room}/{q(leave_id)}", {"json": leave}),
            ("PUT", f"/v2/invite/{room}/{q(leave_id)}", {"json": {"room_version": "12", "event": leave}}),
            ("GET", f"/v1/timestamp_to_event/{room}", {"params": {"ts": 0, "dir": "f"}})]


async def test_a_denied_server_is_403_on_every_federation_request(service_client, fake_transport, acl_room):
    reads = acl_requests(acl_room, fake_transport)[:6]
    for method, sub, kw in reads:                       # allowed before the ACL
        resp = await service_client.request(method, c.FEDERATION + sub, headers=HEADERS, **kw)
        assert resp.status_code == 200, (sub, resp.text)
    await deny_remote(service_client, acl_room["room"])
    for origin in (REMOTE, REMOTE + ":8448"):
        for method, sub, kw in acl_requests(acl_room, fake_transport, origin):
            resp = await service_client.request(method, c.FEDERATION + sub,
                                                headers={c.ORIGIN_HEADER: origin}, **kw)
            assert (resp.status_code, resp.json().get("errcode")) == (403, "M_FORBIDDEN"), (origin, sub, resp.text)
            assert "banned" in resp.json()["error"], (sub, resp.text)


async def test_a_denied_server_leaves_the_room_servers_and_our_destinations(service_client, recorder,
                                                                          fake_transport, acl_room):
    path = c.ROOM_SERVERS.format(room_id=q(acl_room["room"]))
    assert (await service_client.get(path)).json()["servers"] == sorted(["hs.test", REMOTE])
    await deny_remote(service_client, acl_room["room"])
    assert (await service_client.get(path)).json()["servers"] == ["hs.test"]
    assert (await service_client.get(c.USER_SERVERS.format(user_id=q(ALICE)))).json()["servers"] == ["hs.test"]
    eid = await send(service_client, acl_room["room"], {"sender": ALICE, "type": "m.room.message",
                                                       "content": {"body": "not for them"}})
    assert recorder.persists[-1]["destinations"].get(eid, []) == []


async def test_relayed_pdus_of_a_denied_origin_are_consumed_not_stored(service_client, recorder,
                                                                     fake_transport, acl_room):
    await deny_remote(service_client, acl_room["room"])
    st = await state(service_client, acl_room["room"])
    rv = get_room_version("12")
    pdu = {"type": "m.room.message", "room_id": acl_room["room"], "sender": FRED, "content": {"body": "hi"},
           "origin_server_ts": int(time.time() * 1000), "depth": 100,
           "prev_events": [st[("m.room.server_acl", "")]["event_id"]],
           "auth_events": [st[("m.room.power_levels", "")]["event_id"], acl_room["join"]],
           "hashes": {}, "signatures": {}}
    sign_event(pdu, REMOTE, fake_transport.remote_key, rv)
    pid = compute_event_id(pdu, rv)
    n = len(recorder.persists)
    resp = await service_client.post(c.INBOUND, json={"items": [
        {"inbox_id": 951, "origin": REMOTE, "room_id": acl_room["room"], "pdu": pdu}]})
    assert resp.status_code == 200, resp.text
    later = recorder.persists[n:]
    assert [i for p in later for i in p.get("inbox_ids", [])] == [951]
    assert pid not in {e["event_id"] for p in later for e in p.get("events", [])}
