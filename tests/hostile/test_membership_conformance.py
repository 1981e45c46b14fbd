"""Catalogue: Membership conformance (joins, invites, third-party invites).

A fake remote, signing as itself, answers our join (send_join answers mixing in another
room's events), countersigns (or not) our invites, sends us invites with good and bad
invite_room_state, sends third-party invites into a room we share, and asks us to exchange
a third-party invite. Each case checks what we stored and what the room's state became.
"""
from __future__ import annotations

import pytest

from shared.crypto import SigningKey, sign_json
from shared.errors import MatrixError
from shared.events import compute_event_id, sign_event
from shared.room_versions import get_room_version
from tests.fakes.remote import FED, Fault, q
from tests.hostile.conftest import errcode, joined_room, sentinel

INVITE = FED + "/v2/invite/{room_id}/{event_id}"


def state_of(events) -> dict:
    return {(e["type"], e["state_key"]): e for e in events}


def chain_of(room, *event_ids) -> list[dict]:
    return [room.events[e] for e in room.auth_chain(list(event_ids))]


# ------------------------------------------------------- send_join answers (our joins)

async def test_send_join_answer_with_power_levels_of_another_room_is_refused(hs, remote):
    """The resident swaps the room's power levels for those of another room of its own
    (with that room's auth chain, so they pass the auth rules there): not our state."""
    froom = remote.create_room(version="11")
    other = remote.create_room("elsewhere", version="11")
    mallory = remote.user("mallory")
    pl_id, pl = other.build("elsewhere", "m.room.power_levels",
                            {"users": {remote.user("elsewhere"): 100, mallory: 100}}, state_key="")

    def swap(resp):
        resp["state"] = [pl if e["type"] == "m.room.power_levels" else e for e in resp["state"]]
        resp["auth_chain"] += chain_of(other, *pl["auth_events"])
    remote.serve_joins(froom, response=swap)
    with pytest.raises(MatrixError) as exc:
        await hs.api.join(froom.room_id, hs.user("alice"), servers=[remote.server_name])
    assert (exc.value.status, exc.value.errcode) == (502, "M_UNKNOWN"), exc.value
    assert await hs.tx.get_room(froom.room_id) is None
    assert await hs.records(pl_id) == {}


@pytest.mark.parametrize("version", ["11", "12"])
async def test_send_join_answer_with_the_create_event_of_another_room_is_refused(hs, remote, version):
    froom = remote.create_room(version=version)
    other = remote.create_room("elsewhere", version=version)
    other_create = other.events[other.state[("m.room.create", "")]]

    def swap(resp):
        resp["state"] = [other_create if e["type"] == "m.room.create" else e for e in resp["state"]]
    remote.serve_joins(froom, response=swap)
    with pytest.raises(MatrixError) as exc:
        await hs.api.join(froom.room_id, hs.user("alice"), servers=[remote.server_name])
    assert (exc.value.status, exc.value.errcode) == (502, "M_UNKNOWN"), exc.value
    assert await hs.tx.get_room(froom.room_id) is None


@pytest.mark.parametrize("version", ["10", "11", "12"])
async def test_send_join_answer_events_of_another_room_are_not_stored(hs, remote, version):
    """Another room's topic (with its auth chain, valid there) slipped into the state, and
    another room's message into the auth chain: the join works, neither is stored."""
    froom = remote.create_room(version=version)
    other = remote.create_room("elsewhere", version=version)
    topic_id, topic = other.build("elsewhere", "m.room.topic", {"topic": "elsewhere"}, state_key="")
    msg_id, msg = other.message("elsewhere", "elsewhere")
    foreign_chain = chain_of(other, *topic["auth_events"])

    def spoil(resp):
        resp["state"].append(topic)
        resp["auth_chain"] += [msg] + foreign_chain
    remote.serve_joins(froom, response=spoil)
    await hs.api.join(froom.room_id, hs.user("alice"), servers=[remote.server_name])
    foreign_ids = [topic_id, msg_id] + [other.event_id(e) for e in foreign_chain]
    assert await hs.records(*foreign_ids) == {}
    state = state_of(await hs.api.state(froom.room_id))
    assert ("m.room.topic", "") not in state
    assert ("m.room.member", hs.user("alice")) in state
    assert state[("m.room.power_levels", "")]["event_id"] == froom.state[("m.room.power_levels", "")]


# ------------------------------------------------------------ our invites (invite v2)

async def invite_room(hs, version="12") -> str:
    return await hs.api.create_room(hs.user("alice"), room_version=version, preset="private_chat")


def answer_invites(remote, change=None, *, key=None, after=None):
    """Answer /v2/invite, countersigning (with `key`, default the fake's own) the event
    after `change(event)` (which may return a replacement answer); `after(event)` then
    alters the countersigned event."""
    def handler(req):
        body = req.json
        ev = body["event"]
        rv = get_room_version(body["room_version"])
        if change is not None:
            out = change(ev)
            if out is not None:
                return out
        sign_event(ev, remote.server_name, key or remote.key, rv)
        if after is not None:
            after(ev)
        return {"event": ev}
    remote.handle_transactions()
    return remote.route("PUT", INVITE, handler)


async def test_invite_countersigned_by_the_invitee_is_committed(hs, remote):
    room = await invite_room(hs)
    carol = remote.user("carol")
    route = answer_invites(remote, lambda ev: ev.setdefault("unsigned", {}).update(age=5) and None)
    eid = await hs.api.invite(room, hs.user("alice"), carol)
    assert len(route.calls) == 1
    stored = (await hs.records(eid))[eid]["event"]
    assert set(stored["signatures"]) == {hs.server_name, remote.server_name}
    assert state_of(await hs.api.state(room))[("m.room.member", carol)]["content"]["membership"] == "invite"


@pytest.mark.parametrize("case", ["returned as sent (not countersigned)", "countersigned with another key",
                                  "signed as another server", "content changed (same event ID)",
                                  "origin_server_ts changed", "no event", "event not an object"])
async def test_invite_not_countersigned_as_sent_is_not_committed(hs, remote, case):
    room = await invite_room(hs)
    carol = remote.user("carol")
    before = await hs.live_ids(room)
    if case == "returned as sent (not countersigned)":
        route = answer_invites(remote, lambda ev: {"event": ev})
    elif case == "countersigned with another key":
        route = answer_invites(remote, key=SigningKey(SigningKey.generate().seed, remote.key.version))
    elif case == "signed as another server":
        def other_server(ev):
            sign_event(ev, "third.test:8448", remote.key, get_room_version("12"))
            return {"event": ev}
        route = answer_invites(remote, other_server)
    elif case == "content changed (same event ID)":
        # after signing: the redacted form (event ID, signatures) is unchanged, the hash is stale
        route = answer_invites(remote, after=lambda ev: ev["content"].update(displayname="Not Carol"))
    elif case == "origin_server_ts changed":
        route = answer_invites(remote, lambda ev: ev.update(origin_server_ts=ev["origin_server_ts"] + 1))
    elif case == "no event":
        route = answer_invites(remote, lambda ev: {})
    else:
        route = answer_invites(remote, lambda ev: {"event": "signed"})
    with pytest.raises(MatrixError) as exc:
        await hs.api.invite(room, hs.user("alice"), carol)
    assert (exc.value.status, exc.value.errcode) == (502, "M_UNKNOWN"), exc.value
    assert len(route.calls) == 1
    assert ("m.room.member", carol) not in state_of(await hs.api.state(room))
    assert await hs.live_ids(room) == before


@pytest.mark.parametrize("errcode_", ["M_INVALID_PARAM", "M_MISSING_PARAM"])
async def test_invitee_refusing_our_invite_room_state_is_a_server_error(hs, remote, errcode_):
    """Spec (invite v2, 400): such an error SHOULD fail the client's request with a 5xx."""
    room = await invite_room(hs)
    remote.route("PUT", INVITE, lambda req: Fault.http(400, {"errcode": errcode_, "error": "bad state"}))
    with pytest.raises(MatrixError) as exc:
        await hs.api.invite(room, hs.user("alice"), remote.user("carol"))
    assert exc.value.status == 502, exc.value
    assert ("m.room.member", remote.user("carol")) not in state_of(await hs.api.state(room))


# ------------------------------------------------- invites we receive: invite_room_state

def stripped(ev: dict) -> dict:
    return {k: ev[k] for k in ("type", "state_key", "sender", "content")}


async def put_invite(hs, remote, froom, invite_room_state, *, omit=False):
    alice = hs.user("alice")
    iid, inv = froom.build("creator", "m.room.member", {"membership": "invite"}, state_key=alice, add=False)
    body = {"room_version": froom.version, "event": inv}
    if not omit:
        body["invite_room_state"] = invite_room_state
    r = await remote.request(hs, "PUT", f"{FED}/v2/invite/{q(froom.room_id)}/{q(iid)}", body)
    return iid, r


def room_state_case(remote, froom, case):
    """invite_room_state for `case`, from `froom` (and another room of the fake)."""
    create = froom.events[froom.state[("m.room.create", "")]]
    jr = froom.events[froom.state[("m.room.join_rules", "")]]
    other = remote.create_room("elsewhere", version=froom.version)
    other_create = other.events[other.state[("m.room.create", "")]]
    other_jr = other.events[other.state[("m.room.join_rules", "")]]
    if case == "full PDUs":
        return [create, jr]
    if case == "full create, others stripped (as Synapse sends)":
        return [create, stripped(jr)]
    if case == "stripped only":
        return [stripped(create), stripped(jr)]
    if case == "empty":
        return []
    if case == "no create":
        return [jr]
    if case == "stripped create":
        return [stripped(create), jr]
    if case == "create of another room":
        return [other_create, jr]
    if case == "create signed by another key":
        bad = dict(create, signatures={})
        sign_event(bad, remote.server_name, SigningKey(SigningKey.generate().seed, remote.key.version),
                   froom.rv)
        return [bad, jr]
    if case == "a PDU of another room":
        return [create, other_jr]
    if case == "a stripped entry naming another room":
        return [create, dict(stripped(jr), room_id=other.room_id)]
    if case == "a PDU not of the room version's format":
        return [create, dict(jr, depth="1")]
    if case == "entry not an object":
        return [create, "m.room.join_rules"]
    if case == "entry without sender":
        return [create, {k: v for k, v in stripped(jr).items() if k != "sender"}]
    if case == "content not an object":
        return [create, dict(stripped(jr), content="public")]
    if case == "not a list":
        return {"m.room.create": create}
    raise AssertionError(case)


ACCEPTED = {"12": ["full PDUs", "full create, others stripped (as Synapse sends)"],
            "11": ["full PDUs", "full create, others stripped (as Synapse sends)", "stripped only",
                   "empty", "no create", "stripped create"]}
REFUSED = {"12": ["empty", "no create", "stripped create", "create of another room",
                  "create signed by another key", "a PDU of another room",
                  "a stripped entry naming another room", "a PDU not of the room version's format",
                  "entry not an object", "entry without sender", "content not an object", "not a list"],
           "11": ["create of another room", "create signed by another key", "a PDU of another room",
                  "a stripped entry naming another room", "a PDU not of the room version's format",
                  "entry not an object", "entry without sender", "content not an object", "not a list"]}


@pytest.mark.parametrize("version, case", [(v, c) for v in ACCEPTED for c in ACCEPTED[v]])
async def test_invite_with_acceptable_invite_room_state_is_countersigned(hs, remote, version, case):
    froom = remote.create_room(version=version)
    iid, r = await put_invite(hs, remote, froom, room_state_case(remote, froom, case))
    assert r.status_code == 200, r.text
    assert compute_event_id(r.json()["event"], froom.rv) == iid
    assert hs.server_name in r.json()["event"]["signatures"]
    assert iid in await hs.records(iid)


@pytest.mark.parametrize("version, case", [(v, c) for v in REFUSED for c in REFUSED[v]])
async def test_invite_with_bad_invite_room_state_is_refused(hs, remote, version, case):
    """Spec (PUT /v2/invite): MAY for v1-11, SHOULD for later versions; 400 M_INVALID_PARAM."""
    froom = remote.create_room(version=version)
    iid, r = await put_invite(hs, remote, froom, room_state_case(remote, froom, case))
    assert errcode(r) == (400, "M_INVALID_PARAM"), r.text
    assert await hs.records(iid) == {}
    assert await hs.tx.get_room(froom.room_id) is None


async def test_v12_invite_without_invite_room_state_is_refused(hs, remote):
    froom = remote.create_room(version="12")
    iid, r = await put_invite(hs, remote, froom, None, omit=True)
    assert errcode(r) == (400, "M_INVALID_PARAM"), r.text
    assert await hs.records(iid) == {}


# ------------------------------------------------------------- third-party invites

def identity_server_key() -> SigningKey:
    return SigningKey.generate("0")


def signed_block(mxid: str, token: str, key: SigningKey) -> dict:
    return sign_json({"mxid": mxid, "token": token}, "id.test", key)


@pytest.mark.parametrize("version", ["11", "12"])
async def test_third_party_invite_from_a_resident_is_accepted(hs, remote, version):
    """A 3pid invite sent into a room we share, signed by the identity server's key that
    the room's m.room.third_party_invite lists: live, not rejected."""
    room, froom = await joined_room(hs, remote, version)
    ids = identity_server_key()
    tpi_id, tpi = froom.build("fred", "m.room.third_party_invite",
                              {"display_name": "z***@example.org", "public_key": ids.public_key_base64,
                               "key_validity_url": "https://id.test/_matrix/identity/v2/pubkey/isvalid"},
                              state_key="tok")
    zed = "@zed:third.test:8448"
    inv_id, inv = froom.build("fred", "m.room.member",
                              {"membership": "invite",
                               "third_party_invite": {"display_name": "z***@example.org",
                                                      "signed": signed_block(zed, "tok", ids)}},
                              state_key=zed)
    r = await remote.send_transaction(hs, [tpi, inv])
    assert r.status_code == 200, r.text
    await sentinel(hs, remote, froom)
    recs = await hs.records(tpi_id, inv_id)
    assert not recs[inv_id]["rejected"] and not recs[inv_id]["soft_failed"], recs[inv_id]
    state = state_of(await hs.api.state(room))
    assert state[("m.room.member", zed)]["event_id"] == inv_id


@pytest.mark.parametrize("version", ["11", "12"])
async def test_exchange_third_party_invite_issues_the_invite(hs, remote, version):
    room = await hs.api.create_room(hs.user("alice"), room_version=version, preset="private_chat")
    alice, bob = hs.user("alice"), remote.user("bob")
    ids = identity_server_key()
    await hs.api.send(room, alice, "m.room.third_party_invite",
                      {"display_name": "b***@example.org", "public_key": ids.public_key_base64}, "tok")
    route = answer_invites(remote)
    body = {"type": "m.room.member", "room_id": room, "sender": alice, "state_key": bob,
            "content": {"membership": "invite",
                        "third_party_invite": {"display_name": "claimed by bob",
                                               "signed": signed_block(bob, "tok", ids)}}}
    r = await remote.request(hs, "PUT", f"{FED}/v1/exchange_third_party_invite/{q(room)}", body)
    assert r.status_code == 200 and r.json() == {}, r.text
    assert len(route.calls) == 1                      # countersigned by the invitee's server
    member = state_of(await hs.api.state(room))[("m.room.member", bob)]
    assert member["sender"] == alice and member["content"]["membership"] == "invite"
    tpi = member["content"]["third_party_invite"]
    assert tpi["display_name"] == "b***@example.org"  # the inviter's, not the claim
    assert tpi["signed"] == body["content"]["third_party_invite"]["signed"]
    stored = (await hs.records(member["event_id"]))[member["event_id"]]["event"]
    assert set(stored["signatures"]) == {hs.server_name, remote.server_name}


@pytest.mark.parametrize("case, expect", [
    ("signed by another key", (403, "M_FORBIDDEN")),
    ("token without m.room.third_party_invite", (403, "M_FORBIDDEN")),
    ("mxid is not the invitee", (403, "M_FORBIDDEN")),
    ("invitee not on the requesting server", (403, "M_FORBIDDEN")),
    ("room differs from path", (400, "M_INVALID_PARAM")),
    ("not an invite", (400, "M_INVALID_PARAM")),
    ("no signed block", (400, "M_MISSING_PARAM")),
    ("unknown room", (404, "M_NOT_FOUND")),
])
async def test_exchange_third_party_invite_refusals(hs, remote, case, expect):
    room = await hs.api.create_room(hs.user("alice"), room_version="12", preset="private_chat")
    alice, bob = hs.user("alice"), remote.user("bob")
    ids = identity_server_key()
    await hs.api.send(room, alice, "m.room.third_party_invite",
                      {"display_name": "b***@example.org", "public_key": ids.public_key_base64}, "tok")
    route = answer_invites(remote)
    path_room, target, token, key, mxid = room, bob, "tok", ids, bob
    content = {"membership": "invite"}
    if case == "signed by another key":
        key = identity_server_key()
    elif case == "token without m.room.third_party_invite":
        token = "other"
    elif case == "mxid is not the invitee":
        mxid = remote.user("mallory")
    elif case == "invitee not on the requesting server":
        target = mxid = "@bob:third.test:8448"
    elif case == "room differs from path":
        path_room = await hs.api.create_room(alice, room_version="12", preset="private_chat", name="other")
    elif case == "not an invite":
        content = {"membership": "join"}
    elif case == "unknown room":
        path_room = room = "!" + "A" * 43
    content = dict(content, third_party_invite={"display_name": "b",
                                                "signed": signed_block(mxid, token, key)})
    if case == "no signed block":
        content["third_party_invite"] = {"display_name": "b"}
    body = {"type": "m.room.member", "room_id": room, "sender": alice, "state_key": target,
            "content": content}
    before = state_of(await hs.api.state(path_room)) if case != "unknown room" else {}
    r = await remote.request(hs, "PUT", f"{FED}/v1/exchange_third_party_invite/{q(path_room)}", body)
    assert errcode(r) == expect, r.text
    assert not route.calls
    if case != "unknown room":
        assert state_of(await hs.api.state(path_room)).keys() == before.keys()
