"""Knocking (issue #14, room versions 7+): the federation `make_knock` / `send_knock` other
servers make of rooms we hold (forwarded by transport with the verified origin), and the
internal `POST /rooms/{room_id}/knock` of a local user, on a room we hold or through a
remote server's make_knock / send_knock (the fake transport plays remote.test).

Contract (services/pdu/federation.py, membership.py): as for joins, a knock template only
for a room whose join rule allows knocking (else 403), a `ver` list holding the room's
version (else 400 M_INCOMPATIBLE_ROOM_VERSION), a user of the asking server (else 403);
send_knock takes only the knock named in the path and answers the room's stripped state
(`knock_room_state`); refused knocks store nothing. A knock through a remote is stored
with our signature and the stripped state it was answered in unsigned.knock_room_state;
a remote's refusal is passed on, a template that is not our knock is 502."""
from __future__ import annotations

import time

import pytest

from shared.contracts import pdu as c
from shared.crypto import SigningKey
from shared.events import compute_event_id, sign_event, verify_event_signature
from shared.room_versions import get_room_version
from tests.contract.pdu.conftest import REMOTE
from tests.contract.pdu.test_public_rooms import new_room, state_event
from tests.contract.pdu.test_with_fakes import ALICE, q, state

# Rooms here are made as the in-process service's own server (hs.test): not against
# --base-url, whose service has another name.
pytestmark = pytest.mark.usefixtures("inprocess")

HEADERS = {c.ORIGIN_HEADER: REMOTE}
FRED = f"@fred:{REMOTE}"
VERS = [("ver", "10"), ("ver", "11"), ("ver", "12")]


async def knock_room(client, rule="knock") -> str:
    room = await new_room(client, preset="private_chat", name="Knock here")
    await state_event(client, room, "m.room.join_rules", {"join_rule": rule})
    return room


async def make_knock(client, room, user=FRED, params=VERS, headers=HEADERS):
    return await client.get(c.FEDERATION + f"/v1/make_knock/{q(room)}/{q(user)}", params=params,
                            headers=headers)


def signed(template: dict, key: SigningKey, version="12", server=REMOTE, **content) -> tuple[str, dict]:
    rv = get_room_version(version)
    ev = dict(template, content=dict(template["content"], **content),
              origin_server_ts=int(time.time() * 1000), hashes={}, signatures={})
    sign_event(ev, server, key, rv)
    return compute_event_id(ev, rv), ev


async def send_knock(client, room, eid, body, headers=HEADERS):
    return await client.put(c.FEDERATION + f"/v1/send_knock/{q(room)}/{q(eid)}", json=body, headers=headers)


# ------------------------------------------------------------------ as the resident

@pytest.mark.parametrize("rule", ["knock", "knock_restricted"])
async def test_make_knock_template(service_client, rule):
    room = await knock_room(service_client, rule)
    st = await state(service_client, room)
    resp = await make_knock(service_client, room)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["room_version"] == "12"
    ev = body["event"]
    assert ev["type"] == "m.room.member" and ev["room_id"] == room and ev["origin"] == "hs.test"
    assert ev["sender"] == ev["state_key"] == FRED and ev["content"] == {"membership": "knock"}
    ids = {e["event_id"] for e in st.values()}
    assert ev["prev_events"] and set(ev["prev_events"]) <= ids and set(ev["auth_events"]) <= ids
    by_id = {e["event_id"]: k[0] for k, e in st.items()}
    assert {by_id[e] for e in ev["auth_events"]} >= {"m.room.join_rules", "m.room.power_levels"}


async def test_send_knock_stores_the_knock_and_answers_the_stripped_state(service_client, recorder,
                                                                         fake_transport):
    room = await knock_room(service_client)
    template = (await make_knock(service_client, room)).json()["event"]
    eid, ev = signed(template, fake_transport.remote_key, reason="let me in")
    resp = await send_knock(service_client, room, eid, ev)
    assert resp.status_code == 200, resp.text
    stripped = resp.json()["knock_room_state"]
    assert {e["type"] for e in stripped} == {"m.room.create", "m.room.join_rules", "m.room.name"}
    for e in stripped:
        assert e["state_key"] == "" and e.get("room_id", room) == room and e["sender"] == ALICE
        assert isinstance(e["content"], dict) and "event_id" not in e
    join_rules = next(e for e in stripped if e["type"] == "m.room.join_rules")
    assert join_rules["content"] == {"join_rule": "knock"}
    member = (await state(service_client, room))[("m.room.member", FRED)]
    assert member["event_id"] == eid
    assert member["content"] == {"membership": "knock", "reason": "let me in"}
    stored = recorder.persisted_events()[eid]
    assert not stored.get("rejected") and not stored.get("outlier")


async def test_make_knock_refusals(service_client, service):
    room = await knock_room(service_client)
    invite_only = await new_room(service_client, preset="private_chat")
    public = await new_room(service_client)
    for target, kw, status, errcode in (
            (invite_only, {}, 403, "M_FORBIDDEN"),                      # join rule invite
            (public, {}, 403, "M_FORBIDDEN"),                           # join rule public
            (room, {"user": "@fred:other.test"}, 403, "M_FORBIDDEN"),   # not the asker's user
            (room, {"user": "fred"}, 400, "M_INVALID_PARAM"),
            (room, {"params": [("ver", "10"), ("ver", "11")]}, 400, "M_INCOMPATIBLE_ROOM_VERSION"),
            ("!unknown:hs.test", {}, 404, "M_NOT_FOUND"),
            (room, {"headers": None}, 401, "M_UNAUTHORIZED")):
        resp = await make_knock(service_client, target, **kw)
        assert (resp.status_code, resp.json().get("errcode")) == (status, errcode), (target, kw, resp.text)
        if errcode == "M_INCOMPATIBLE_ROOM_VERSION":
            assert resp.json()["room_version"] == "12"
    resp = await service_client.get(c.FEDERATION + f"/v1/make_knock/{q(room)}/{q(FRED)}", headers=HEADERS)
    assert resp.status_code == 400, resp.text                           # ver is required


async def test_send_knock_refusals_store_nothing(service_client, recorder, fake_transport):
    room = await knock_room(service_client)
    template = (await make_knock(service_client, room)).json()["event"]
    key = fake_transport.remote_key
    eid, good = signed(template, key)
    join_id, as_join = signed(dict(template, content={"membership": "join"}), key)
    other_id, other_room = signed(dict(template, room_id="!" + "O" * 43), key)
    n = len(recorder.persists)
    for path_room, path_eid, body, headers, status, errcode in (
            (room, join_id, as_join, HEADERS, 400, "M_INVALID_PARAM"),          # not a knock
            (room, "$" + "x" * 43, good, HEADERS, 400, "M_INVALID_PARAM"),      # another event ID
            (room, other_id, other_room, HEADERS, 400, "M_INVALID_PARAM"),      # another room
            (room, eid, good, {c.ORIGIN_HEADER: "other.test"}, 403, "M_FORBIDDEN"),
            (room, eid, [], HEADERS, 400, "M_BAD_JSON"),
            (room, eid, "knock", HEADERS, 400, "M_BAD_JSON"),
            ("!unknown:hs.test", eid, good, HEADERS, 404, "M_NOT_FOUND"),
            (room, eid, good, None, 401, "M_UNAUTHORIZED")):
        resp = await send_knock(service_client, path_room, path_eid, body, headers=headers)
        assert (resp.status_code, resp.json().get("errcode")) == (status, errcode), (errcode, resp.text)
    assert recorder.persists[n:] == []
    assert ("m.room.member", FRED) not in await state(service_client, room)


async def test_a_knock_the_auth_rules_refuse_is_403_and_not_live(service_client, fake_transport):
    """A knock built by hand on a public room (make_knock would refuse it)."""
    public = await new_room(service_client)
    resp = await service_client.get(c.FEDERATION + f"/v1/make_join/{q(public)}/{q(FRED)}",
                                    params=VERS, headers=HEADERS)
    template = dict(resp.json()["event"], content={"membership": "knock"})
    eid, ev = signed(template, fake_transport.remote_key)
    resp = await send_knock(service_client, public, eid, ev)
    assert resp.status_code == 403 and resp.json()["errcode"] == "M_FORBIDDEN", resp.text
    assert ("m.room.member", FRED) not in await state(service_client, public)


# ------------------------------------------------------------------ as the knocker

async def test_local_knock_on_a_room_we_hold(service_client):
    room = await knock_room(service_client)
    bob = "@bob:hs.test"
    resp = await service_client.post(c.KNOCK.format(room_id=q(room)), json={"user_id": bob, "reason": "hi"})
    assert resp.status_code == 200, resp.text
    eid = c.EventIdResponse.model_validate(resp.json()).event_id
    member = (await state(service_client, room))[("m.room.member", bob)]
    assert member["event_id"] == eid and member["content"] == {"membership": "knock", "reason": "hi"}
    invite_only = await new_room(service_client, preset="private_chat")
    resp = await service_client.post(c.KNOCK.format(room_id=q(invite_only)), json={"user_id": bob})
    assert resp.status_code == 403 and resp.json()["errcode"] == "M_FORBIDDEN"


REMOTE_ROOM = "!knockme:remote.test"


def remote_template(user: str, **over) -> dict:
    return {"room_version": "10", "event": dict({
        "type": "m.room.member", "room_id": REMOTE_ROOM, "sender": user, "state_key": user,
        "content": {"membership": "knock"}, "origin": REMOTE, "origin_server_ts": 1,
        "depth": 7, "prev_events": ["$" + "P" * 43], "auth_events": ["$" + "A" * 43, "$" + "B" * 43]},
        **over)}


def stripped_create() -> dict:
    return {"type": "m.room.create", "state_key": "", "sender": FRED, "room_id": REMOTE_ROOM,
            "content": {"room_version": "10", "creator": FRED}}


async def test_knock_through_a_remote_server(service, service_client, recorder, fake_transport):
    bob = "@bob:hs.test"
    asked = []

    async def remote(method, path, query, body):
        asked.append((method, path, [tuple(p) for p in query], body))
        if "/make_knock/" in path:
            return 200, remote_template(bob)
        return 200, {"knock_room_state": [stripped_create(), "junk", 5]}
    fake_transport.remote = remote
    resp = await service_client.post(c.KNOCK.format(room_id=q(REMOTE_ROOM)),
                                     json={"user_id": bob, "servers": [REMOTE], "reason": "please"})
    assert resp.status_code == 200, resp.text
    eid = resp.json()["event_id"]
    (m1, p1, q1, b1), (m2, p2, _q2, b2) = asked
    assert (m1, p1, b1) == ("GET", f"/_matrix/federation/v1/make_knock/{q(REMOTE_ROOM)}/{q(bob)}", None)
    assert ("ver", "10") in q1 and ("ver", "12") in q1 and all(k == "ver" for k, _ in q1)
    assert (m2, p2) == ("PUT", f"/_matrix/federation/v1/send_knock/{q(REMOTE_ROOM)}/{q(eid)}")
    rv = get_room_version("10")
    assert compute_event_id(b2, rv) == eid and b2["content"] == {"membership": "knock", "reason": "please"}
    key = SigningKey.load(service.settings.path("signing_key"))
    assert verify_event_signature(b2, rv, "hs.test", {key.key_id: key.verify_key})
    [req] = [p for p in recorder.persists if any(e["event_id"] == eid for e in p.get("events", []))]
    assert req["rooms"] == [{"room_id": REMOTE_ROOM, "room_version": "10"}]
    stored = req["events"][0]
    assert not stored["outlier"] and stored["event"]["unsigned"] == {"knock_room_state": [stripped_create()]}


@pytest.mark.parametrize("answer,status,errcode", [
    ((403, {"errcode": "M_FORBIDDEN", "error": "no knocking"}), 403, "M_FORBIDDEN"),
    ((200, "template-not-knock"), 502, "M_UNKNOWN"),
    ((200, {"room_version": "6", "event": {}}), 400, "M_INCOMPATIBLE_ROOM_VERSION"),
    ((0, None), 502, "M_UNKNOWN")])
async def test_knock_refused_or_garbled_by_the_remote_stores_nothing(service_client, recorder,
                                                                    fake_transport, answer, status, errcode):
    bob = "@bob:hs.test"
    asked = []

    async def remote(method, path, query, body):
        asked.append(path)
        if answer[1] == "template-not-knock":
            return 200, remote_template(bob, content={"membership": "join"})
        return answer
    fake_transport.remote = remote
    n = len(recorder.persists)
    resp = await service_client.post(c.KNOCK.format(room_id=q(REMOTE_ROOM)), json={"user_id": bob})
    assert (resp.status_code, resp.json()["errcode"]) == (status, errcode), resp.text
    assert all("/make_knock/" in p for p in asked) and asked         # no send_knock
    assert recorder.persists[n:] == []


async def test_knock_refusals_that_ask_nobody(service_client, fake_transport):
    async def remote(method, path, query, body):
        raise AssertionError(f"nothing may be asked: {method} {path}")
    fake_transport.remote = remote
    for room, body, status, errcode in (
            ("!noserver", {"user_id": "@bob:hs.test"}, 404, "M_NOT_FOUND"),
            (REMOTE_ROOM, {"user_id": FRED, "servers": [REMOTE]}, 403, "M_FORBIDDEN"),
            (REMOTE_ROOM, {"servers": [REMOTE]}, 400, "M_BAD_JSON"),
            (REMOTE_ROOM, {"user_id": "@bob:hs.test", "servers": "remote.test"}, 400, "M_BAD_JSON")):
        resp = await service_client.post(c.KNOCK.format(room_id=q(room)), json=body)
        assert (resp.status_code, resp.json()["errcode"]) == (status, errcode), (body, resp.text)
    assert fake_transport.requests == []
