"""Catalogue: Event validation.

Events a fake remote sends (in /send, in answers to our get_missing_events, in a
send_join answer, through invite/send_join/send_leave) that must be dropped, rejected,
redacted or soft-failed; each case checks what got stored, what is live (the messaging
events endpoint), the room's forward extremities, what subscriptions were given, and
that nothing was forwarded.
"""
from __future__ import annotations

import pytest

from shared.crypto import SigningKey
from shared.errors import MatrixError
from tests.fakes.remote import FED, Fault, Reply, now_ms, q, wait_for
from tests.hostile.conftest import (delivered, errcode, joined_room, sentinel, subscribe,
                                    wait_delivered)

GME = FED + "/v1/get_missing_events/{room_id}"


async def send_then_settle(hs, remote, froom, pdus) -> dict:
    """Send `pdus` in one transaction; return its entries once the relay handled them."""
    r = await remote.send_transaction(hs, pdus)
    assert r.status_code == 200, r.text
    await sentinel(hs, remote, froom)
    return r.json()["pdus"]


# --------------------------------------------------------------------------- signatures

@pytest.mark.parametrize("how", ["unsigned", "other key same id", "unknown key id",
                                 "signed as another server", "signature garbage"])
async def test_events_without_a_valid_signature_of_the_senders_server_are_dropped(hs, remote, how):
    room, froom = await joined_room(hs, remote)
    sid = await subscribe(hs, room)
    before = await hs.extremities(room)
    kw = {}
    if how == "unsigned":
        kw["sign"] = False
    elif how == "other key same id":
        kw["key"] = SigningKey(SigningKey.generate().seed, remote.key.version)
    elif how == "unknown key id":
        kw["key"] = SigningKey.generate("unknown")
    elif how == "signed as another server":
        kw["signer"] = "third.test:8448"
    eid, ev = froom.message("fred", how, add=False, **kw)
    if how == "signature garbage":
        ev["signatures"][remote.server_name][remote.key.key_id] = "A" * 86
    entries = await send_then_settle(hs, remote, froom, [ev])
    assert entries == {eid: {}}          # staged, then dropped by the pdu layer
    await hs.assert_absent(room, eid)
    assert eid not in delivered(hs, sid)
    assert eid not in before


@pytest.mark.parametrize("fault", ["500", "down", "garbage"])
async def test_event_whose_senders_keys_cannot_be_fetched_is_dropped(world, hs, remote, fault):
    dark = await world.remote("dark.test:8448")
    if fault == "500":
        dark.keys_route.fail_always(Fault.http(500))
    elif fault == "down":
        dark.down = True
    else:
        dark.keys_route.fail_always(Fault.malformed(b"{\"server_name\": "))
    room, froom = await joined_room(hs, remote)
    eid, ev = froom.build(dark.user("eve"), "m.room.message", {"body": "from the dark"}, add=False,
                          signer=dark.server_name, key=dark.key)
    entries = await send_then_settle(hs, remote, froom, [ev])
    assert entries == {eid: {}}
    await hs.assert_absent(room, eid)
    if fault != "down":
        assert dark.keys_route.calls


async def test_content_hash_mismatch_is_redacted_then_processed(hs, remote):
    room, froom = await joined_room(hs, remote)
    sid = await subscribe(hs, room)
    eid, ev = froom.message("fred", "original")
    ev["content"] = {"msgtype": "m.text", "body": "changed after signing"}
    r = await remote.send_transaction(hs, [ev])
    assert r.json() == {"pdus": {eid: {}}}
    await wait_delivered(hs, sid, eid)
    rec = (await hs.records(eid))[eid]
    assert rec["event"]["content"] == {} and not rec["rejected"]
    assert [e for e in hs.receiver.events(sid) if e["event_id"] == eid][0]["content"] == {}
    assert await hs.extremities(room) == [eid]


# --------------------------------------------------------------------------- canonical JSON

NON_CANONICAL = {
    "float in content": lambda ev: ev["content"].__setitem__("n", 1.5),
    "float zero": lambda ev: ev["content"].__setitem__("n", 0.0),
    "int above 2^53-1": lambda ev: ev["content"].__setitem__("n", 2**53),
    "int below -(2^53-1)": lambda ev: ev["content"].__setitem__("n", -(2**53)),
    "huge int nested": lambda ev: ev["content"].__setitem__("deep", {"a": [1, {"b": 10**30}]}),
    "float in unsigned": lambda ev: ev.__setitem__("unsigned", {"age": 1.5}),
    "float depth": lambda ev: ev.__setitem__("depth", 3.0),
    "float origin_server_ts": lambda ev: ev.__setitem__("origin_server_ts", 1.0e12),
}


@pytest.mark.parametrize("version", ["10", "12"])
async def test_non_canonical_numbers_in_send_are_rejected(hs, remote, version):
    room, froom = await joined_room(hs, remote, version)
    bad = []
    for what, spoil in NON_CANONICAL.items():
        eid, ev = froom.message("fred", what, add=False)
        spoil(ev)
        bad.append((what, eid, ev))
    good, gev = froom.message("fred", "good")
    r = await remote.send_transaction(hs, [ev for *_, ev in bad] + [gev])
    assert r.status_code == 200
    entries = r.json()["pdus"]
    assert entries[good] == {}
    for what, eid, _ev in bad:
        if eid in entries:                         # an ID that cannot be computed: no entry
            assert "error" in entries[eid], what
    await hs.wait_live(room, good)
    assert await hs.records(*[eid for _, eid, _ in bad]) == {}


async def test_non_canonical_event_from_get_missing_events_is_rejected(hs, remote):
    room, froom = await joined_room(hs, remote)
    before = await hs.extremities(room)
    gap, gap_ev = froom.message("fred", "the gap")
    spoiled = dict(gap_ev, content=dict(gap_ev["content"], n=2**60))
    remote.route("POST", GME, lambda req: {"events": [spoiled]})
    eid, ev = froom.message("fred", "needs the gap")
    r = await remote.send_transaction(hs, [ev])
    assert r.json() == {"pdus": {eid: {}}}
    await wait_for(lambda: remote.calls("POST", GME), what="get_missing_events")
    await sentinel_after_gap(hs, remote, froom, before)
    await hs.assert_absent(room, gap, eid)


async def sentinel_after_gap(hs, remote, froom, extremities):
    """A sentinel built on the extremities we still have (the fake's own view has moved
    on to events we refused)."""
    eid, ev = froom.message("fred", "sentinel", prev_events=extremities, add=False)
    r = await remote.send_transaction(hs, [ev])
    assert r.json() == {"pdus": {eid: {}}}
    await hs.wait_live(froom.room_id, eid)
    assert await hs.extremities(froom.room_id) == [eid]


async def test_non_canonical_events_in_a_send_join_answer_are_not_stored(world, hs, remote):
    froom = remote.create_room(version="11")
    topic, topic_ev = froom.build("creator", "m.room.topic", {"topic": "t"}, state_key="")
    name, name_ev = froom.build("creator", "m.room.name", {"name": "n"}, state_key="")

    def spoil(resp):
        for e in resp["state"]:
            if e["type"] == "m.room.topic":
                e["content"]["n"] = 0.5
            if e["type"] == "m.room.name":
                e["content"]["n"] = 2**64
    remote.serve_joins(froom, response=spoil)
    await hs.api.join(froom.room_id, hs.user("alice"), servers=[remote.server_name])
    assert await hs.records(topic, name) == {}
    state = {(e["type"], e["state_key"]) for e in await hs.api.state(froom.room_id)}
    assert ("m.room.topic", "") not in state and ("m.room.member", hs.user("alice")) in state


async def test_non_canonical_invite_and_send_join_are_refused(hs, remote):
    room, froom = await joined_room(hs, remote, "11")
    other = remote.create_room(version="11")
    alice = hs.user("alice")
    iid, inv = other.build("creator", "m.room.member", {"membership": "invite"},
                           state_key=alice, add=False)
    inv["content"]["n"] = 1.5
    r = await remote.request(hs, "PUT", f"{FED}/v2/invite/{q(other.room_id)}/{q(iid)}",
                             {"room_version": "11", "event": inv, "invite_room_state": []})
    assert errcode(r) == (400, "M_BAD_JSON"), r.text
    assert await hs.records(iid) == {}
    ginny = remote.user("ginny")
    jid, join = froom.build(ginny, "m.room.member", {"membership": "join"}, state_key=ginny, add=False)
    join["content"]["n"] = 2**53
    r = await remote.request(hs, "PUT", f"{FED}/v2/send_join/{q(room)}/{q(jid)}", join)
    assert errcode(r) == (400, "M_BAD_JSON"), r.text
    await hs.assert_absent(room, jid)


async def test_non_canonical_event_from_backfill_is_rejected(world, hs, remote):
    """Our backfill (history from before we joined), where the API exists."""
    froom = remote.create_room(version="12")
    old, old_ev = froom.message("creator", "old history")
    remote.serve_joins(froom)
    room = froom.room_id
    await hs.api.join(room, hs.user("alice"), servers=[remote.server_name])
    spoiled = dict(old_ev, content=dict(old_ev["content"], n=0.25))
    remote.route("GET", FED + "/v1/backfill/{room_id}",
                 lambda req: {"origin": remote.server_name, "origin_server_ts": now_ms(),
                              "pdus": [spoiled]})
    status, body = await hs.api.request("POST", f"/v1/rooms/{q(room)}/backfill", {"limit": 10})
    if status == 404 and (body or {}).get("errcode") == "M_UNRECOGNIZED":
        pytest.skip("no backfill API in this tree")
    assert status == 200, body
    assert old not in [e.get("event_id") for e in body["events"]]
    assert await hs.records(old) == {}


# --------------------------------------------------------------------------- size limits

@pytest.mark.parametrize("version", ["11", "12"])
async def test_oversized_events_and_ids_are_rejected(hs, remote, version):
    room, froom = await joined_room(hs, remote, version)
    long_local = "f" * 250
    bad = {
        "over 65536 bytes": froom.message("fred", "x" * 65_600, add=False),
        "type over 255 bytes": froom.build("fred", "m." + "t" * 260, {"body": "x"}, add=False),
        "state_key over 255 bytes": froom.build("fred", "m.room.topic", {"topic": "x"},
                                                state_key="s" * 256, add=False),
        "state_key over 255 bytes in UTF-8": froom.build("fred", "m.room.topic", {"topic": "x"},
                                                         state_key="é" * 128, add=False),
        "sender over 255 bytes": froom.build(remote.user(long_local), "m.room.message",
                                             {"body": "x"}, add=False),
    }
    good, gev = froom.message("fred", "just under", extra=None)
    r = await remote.send_transaction(hs, [ev for _, ev in bad.values()] + [gev])
    entries = r.json()["pdus"]
    for what, (eid, _ev) in bad.items():
        assert "error" in entries[eid], what
    assert entries[good] == {}
    await hs.wait_live(room, good)
    assert await hs.records(*[eid for eid, _ in bad.values()]) == {}


async def test_event_of_exactly_the_limit_is_accepted(hs, remote):
    from shared.canonical import canonical_json
    room, froom = await joined_room(hs, remote)
    eid, ev = froom.message("fred", "", add=False)
    size = len(canonical_json(ev))
    eid, ev = froom.message("fred", "y" * (65536 - size))
    assert len(canonical_json(ev)) == 65536
    await send_then_settle(hs, remote, froom, [ev])
    assert eid in await hs.live_ids(room)


# --------------------------------------------------------------------------- auth chain

async def test_event_citing_a_rejected_auth_event_is_rejected(hs, remote):
    room, froom = await joined_room(hs, remote)
    sid = await subscribe(hs, room)
    pl_key = ("m.room.power_levels", "")
    pl = froom.events[froom.state[pl_key]]["content"]
    grab = dict(pl, users=dict(pl["users"], **{remote.user("fred"): 100}))
    rejected, rev = froom.build("fred", "m.room.power_levels", grab, state_key="", add=False)
    fred_member = froom.state[("m.room.member", remote.user("fred"))]
    cites, cev = froom.message("fred", "cites the rejected power levels", prev_events=[rejected],
                               auth_events=[rejected, fred_member], add=False)
    await send_then_settle(hs, remote, froom, [rev, cev])
    recs = await hs.assert_not_live(room, rejected, cites)
    assert recs[rejected]["rejected"] and recs[cites]["rejected"]
    assert "rejected" in recs[cites]["rejected"]
    assert rejected not in delivered(hs, sid) and cites not in delivered(hs, sid)
    pl_now = [e for e in await hs.api.state(room) if e["type"] == "m.room.power_levels"][0]
    assert remote.user("fred") not in pl_now["content"]["users"]


@pytest.mark.parametrize("answer", ["404", "500", "empty", "unrelated", "not json", "reset"])
async def test_unfetchable_prev_events_leave_the_room_unchanged(hs, remote, answer):
    room, froom = await joined_room(hs, remote)
    sid = await subscribe(hs, room)
    before = await hs.extremities(room)
    gap, _ = froom.message("fred", "never sent")
    eid, ev = froom.message("fred", "after a gap")
    replies = {"404": Fault.http(404, {"errcode": "M_NOT_FOUND", "error": "no"}),
               "500": Fault.http(500), "empty": {"events": []},
               "unrelated": {"events": [froom.events[before[0]]]},
               "not json": Fault.malformed(b"{\"events\": ["), "reset": Fault.reset()}
    remote.route("POST", GME, lambda req: replies[answer])
    r = await remote.send_transaction(hs, [ev])
    assert r.json() == {"pdus": {eid: {}}}
    await wait_for(lambda: remote.calls("POST", GME), what="get_missing_events")
    await sentinel_after_gap(hs, remote, froom, before)
    await hs.assert_absent(room, gap, eid)
    assert eid not in delivered(hs, sid)


# --------------------------------------------------------------------------- other rooms

@pytest.mark.parametrize("version", ["11", "12"])
async def test_prev_events_in_another_room_are_rejected(hs, remote, version):
    room1, f1 = await joined_room(hs, remote, version)
    room2, f2 = await joined_room(hs, remote, version)
    before = await hs.extremities(room1)
    eid, ev = f1.message("fred", "prev from room 2", prev_events=f2.extremities, add=False)
    await send_then_settle(hs, remote, f1, [ev])
    await hs.assert_not_live(room1, eid)
    await hs.assert_not_live(room2, eid)
    assert await hs.extremities(room2) == sorted(f2.extremities)


@pytest.mark.parametrize("version", ["11", "12"])
async def test_auth_events_in_another_room_are_rejected(hs, remote, version):
    room1, f1 = await joined_room(hs, remote, version)
    room2, f2 = await joined_room(hs, remote, version)
    foreign = [f2.state[k] for k in (("m.room.create", ""), ("m.room.power_levels", ""),
                                     ("m.room.member", remote.user("fred")))
               if k in f2.state and not (k[0] == "m.room.create" and version == "12")]
    eid, ev = f1.message("fred", "auth from room 2", auth_events=foreign, add=False)
    await send_then_settle(hs, remote, f1, [ev])
    recs = await hs.assert_not_live(room1, eid)
    assert not recs or recs[eid]["rejected"]


@pytest.mark.parametrize("room_id", ["other", "../stream", "!x?y", "%2e%2e"])
async def test_get_missing_events_answer_from_another_room_is_not_taken(hs, remote, room_id):
    room1, f1 = await joined_room(hs, remote)
    room2, f2 = await joined_room(hs, remote)
    before = await hs.extremities(room1)
    gap, gap_ev = f1.message("fred", "gap")
    eid, ev = f1.message("fred", "needs the gap")
    if room_id == "other":
        stray_id, stray = f2.message("fred", "stray", add=False)
    else:
        stray_id, stray = None, dict(gap_ev, room_id=room_id)
    remote.route("POST", GME, lambda req: {"events": [stray]})
    r = await remote.send_transaction(hs, [ev])
    assert r.json() == {"pdus": {eid: {}}}
    await sentinel_after_gap(hs, remote, f1, before)   # the relay is not wedged
    await hs.assert_absent(room1, gap, eid)
    if stray_id:
        assert await hs.records(stray_id) == {}


# --------------------------------------------------------------------------- membership endpoints

@pytest.fixture
async def observed(world, hs, remote):
    """Our room with the fake (fred) and an observer server joined; returns
    (room, fake room, observer). The observer sees what we forward."""
    observer = await world.remote("observer.test:8448")
    room, froom = await joined_room(hs, remote, "11")
    await observer.join(hs, room, "olga")
    return room, froom, observer


async def assert_nothing_forwarded(hs, room, observer, *event_ids):
    """A later local message reaches the observer; nothing refused got there before it."""
    marker = await hs.api.send(room, hs.user("alice"), "m.room.message", {"body": "marker"})
    await wait_for(lambda: marker in observer.received_event_ids(), what="marker at the observer")
    assert not set(observer.received_event_ids()) & set(event_ids)


def member_event(froom, user, membership, **kw):
    return froom.build(user, "m.room.member", {"membership": membership}, state_key=kw.pop("state_key", user),
                       add=False, **kw)


@pytest.mark.parametrize("endpoint", ["send_join", "send_leave"])
@pytest.mark.parametrize("case", ["wrong membership", "state_key of another user", "user of a third server",
                                  "room differs from path", "event_id differs from path", "not a member event"])
async def test_send_join_and_send_leave_refuse_events_that_are_not_theirs(world, hs, remote, observed, endpoint, case):
    room, froom, observer = observed
    other_room = await hs.api.create_room(hs.user("alice"), room_version="11", preset="public_chat")
    want = "join" if endpoint == "send_join" else "leave"
    ginny = remote.user("ginny") if endpoint == "send_join" else remote.user("fred")
    path_room = room
    if case == "wrong membership":
        eid, ev = member_event(froom, ginny, "leave" if want == "join" else "join")
        expect = (400, "M_INVALID_PARAM")
    elif case == "state_key of another user":
        eid, ev = member_event(froom, ginny, want, state_key=remote.user("harry"))
        expect = (400, "M_INVALID_PARAM")
    elif case == "user of a third server":
        eve = "@eve:third.test:8448"
        eid, ev = member_event(froom, eve, want)
        expect = (403, "M_FORBIDDEN")
    elif case == "room differs from path":
        eid, ev = member_event(froom, ginny, want)
        path_room = other_room
        expect = (400, "M_INVALID_PARAM")
    elif case == "event_id differs from path":
        eid, ev = member_event(froom, ginny, want)
        eid = froom.extremities[0]
        expect = (400, "M_INVALID_PARAM")
    else:
        eid, ev = froom.build(ginny, "m.room.topic", {"topic": "x", "membership": want}, state_key="",
                              add=False)
        expect = (400, "M_INVALID_PARAM")
    real_id = froom.event_id(ev)
    r = await remote.request(hs, "PUT", f"{FED}/v2/{endpoint}/{q(path_room)}/{q(eid)}", ev)
    assert errcode(r) == expect, r.text
    if real_id not in froom.events:
        assert await hs.records(real_id) == {}
    await assert_nothing_forwarded(hs, room, observer, real_id)


@pytest.mark.parametrize("case", ["wrong membership", "invitee not ours", "sender of a third server",
                                  "room differs from path", "unsupported room version",
                                  "event_id differs from path"])
async def test_invite_refuses_events_that_are_not_an_invite_for_us(hs, remote, case):
    froom = remote.create_room(version="11")
    alice = hs.user("alice")
    version, path_room, path_id = "11", froom.room_id, None
    if case == "wrong membership":
        eid, ev = member_event(froom, "creator", "join", state_key=alice)
        expect = (400, "M_INVALID_PARAM")
    elif case == "invitee not ours":
        eid, ev = member_event(froom, "creator", "invite", state_key="@bob:third.test:8448")
        expect = (403, "M_FORBIDDEN")
    elif case == "sender of a third server":
        eid, ev = member_event(froom, "@eve:third.test:8448", "invite", state_key=alice)
        expect = (403, "M_FORBIDDEN")
    elif case == "room differs from path":
        eid, ev = member_event(froom, "creator", "invite", state_key=alice)
        path_room = "!elsewhere:" + remote.server_name
        expect = (400, "M_INVALID_PARAM")
    elif case == "unsupported room version":
        eid, ev = member_event(froom, "creator", "invite", state_key=alice)
        version = "9"
        expect = (400, "M_INCOMPATIBLE_ROOM_VERSION")
    else:
        eid, ev = member_event(froom, "creator", "invite", state_key=alice)
        path_id = froom.extremities[0]
        expect = (400, "M_INVALID_PARAM")
    r = await remote.request(hs, "PUT", f"{FED}/v2/invite/{q(path_room)}/{q(path_id or eid)}",
                             {"room_version": version, "event": ev, "invite_room_state": []})
    assert errcode(r) == expect, r.text
    assert await hs.records(eid) == {}
    assert await hs.tx.get_room(froom.room_id) is None


# --------------------------------------------------------------------------- templates

TEMPLATES = {
    "wrong membership": lambda t: t["content"].__setitem__("membership", "invite"),
    "wrong sender": lambda t: t.__setitem__("sender", "@mallory:remote.test:8448"),
    "wrong state_key": lambda t: t.__setitem__("state_key", "@mallory:remote.test:8448"),
    "wrong room": lambda t: t.__setitem__("room_id", "!other:remote.test:8448"),
    "wrong type": lambda t: t.__setitem__("type", "m.room.power_levels"),
    "content not an object": lambda t: t.__setitem__("content", "join"),
    "no content": lambda t: t.pop("content"),
    "float in template": lambda t: t["content"].__setitem__("n", 0.5),
    "huge int in template": lambda t: t.__setitem__("depth", 2**64),
}


@pytest.mark.parametrize("case", list(TEMPLATES))
async def test_make_join_template_that_is_not_our_join_is_never_signed(hs, remote, case):
    froom = remote.create_room(version="11")
    make, send = remote.serve_joins(froom, template=TEMPLATES[case])
    with pytest.raises(MatrixError) as exc:
        await hs.api.join(froom.room_id, hs.user("alice"), servers=[remote.server_name])
    assert (exc.value.status, exc.value.errcode) == (502, "M_UNKNOWN"), exc.value
    assert make.calls and not send.calls
    assert await hs.tx.get_room(froom.room_id) is None


async def test_make_join_answer_with_an_unsupported_room_version_is_not_used(hs, remote):
    froom = remote.create_room(version="11")
    make, send = remote.serve_joins(froom)
    remote.route("GET", make.pattern, lambda req: {"room_version": "9", "event": {}})
    with pytest.raises(MatrixError) as exc:
        await hs.api.join(froom.room_id, hs.user("alice"), servers=[remote.server_name])
    assert (exc.value.status, exc.value.errcode) == (400, "M_INCOMPATIBLE_ROOM_VERSION")
    assert not send.calls


@pytest.mark.parametrize("case", ["wrong membership", "wrong sender", "wrong room", "content not an object",
                                  "float in template"])
async def test_make_leave_template_that_is_not_our_leave_is_never_signed(hs, remote, case):
    froom = remote.create_room(version="11")
    alice = hs.user("alice")
    iid, inv = member_event(froom, "creator", "invite", state_key=alice)
    r = await remote.request(hs, "PUT", f"{FED}/v2/invite/{q(froom.room_id)}/{q(iid)}",
                             {"room_version": "11", "event": inv, "invite_room_state": []})
    assert r.status_code == 200, r.text
    froom.add(r.json()["event"])
    make, send = remote.serve_leaves(froom, template=TEMPLATES[case])
    with pytest.raises(MatrixError) as exc:
        await hs.api.leave(froom.room_id, alice)
    assert (exc.value.status, exc.value.errcode) == (502, "M_UNKNOWN"), exc.value
    assert make.calls and not send.calls


# --------------------------------------------------------------------------- soft fail

async def test_soft_failed_event_is_stored_but_neither_delivered_nor_an_extremity(hs, remote):
    room, froom = await joined_room(hs, remote)
    sid = await subscribe(hs, room)
    fred = remote.user("fred")
    join = froom.state[("m.room.member", fred)]
    pl = froom.state[("m.room.power_levels", "")]
    auth_at_join = [pl, join]                  # v12: the create event is not listed
    ban = await hs.api.moderate("ban", room, hs.user("alice"), fred)
    await wait_for(lambda: ban in remote.received_event_ids(), what="the ban at the fake")
    await wait_delivered(hs, sid, ban)
    eid, ev = froom.message("fred", "sent as if not banned", prev_events=[join], auth_events=auth_at_join,
                            add=False)
    r = await remote.send_transaction(hs, [ev])
    assert r.json() == {"pdus": {eid: {}}}
    rec = await wait_for(lambda: hs.records(eid), what="the soft-failed event stored")
    assert rec[eid]["soft_failed"] and not rec[eid]["rejected"]
    await hs.assert_not_live(room, eid)
    assert await hs.extremities(room) == [ban]
    alice_msg = await hs.api.send(room, hs.user("alice"), "m.room.message", {"body": "later"})
    await wait_delivered(hs, sid, alice_msg)
    assert eid not in delivered(hs, sid)
    assert eid not in (await hs.records(alice_msg))[alice_msg]["event"]["prev_events"]
