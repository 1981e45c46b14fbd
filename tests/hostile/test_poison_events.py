"""Catalogue: one bad event never stops inbound federation (issue #12, item 1).

A validly signed PDU that makes processing fail (a `room_version` list in a v10/v11 create
event made the auth rules raise TypeError, the pdu service answered 500 and the relay
resent the same batch forever) must be dropped or rejected on its own: its inbox row is
consumed and every PDU staged after it is processed. The property test sends PDUs of a
joined fake user whose fields (top level and content) are replaced by arbitrary JSON, each
validly signed, and checks after each transaction that a normal message sent after it is
delivered.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.canonical import CanonicalJSONError
from shared.events import MAX_NESTING, compute_content_hash, sign_event
from tests.hostile.conftest import joined_room, sentinel, subscribe, wait_delivered

MAX = 2**53 - 1


@pytest.mark.parametrize("version", ["10", "11"])
@pytest.mark.parametrize("room_version", [["10"], {"v": "10"}, 10, None, True])
async def test_create_event_with_a_non_string_room_version_does_not_wedge_the_inbox(
        world, hs, remote, version, room_version):
    """The fake hosts the room (so a create event of its own server gets as far as the
    room_version rule); ours joins it, then the fake sends a second create event."""
    froom = remote.create_room(version=version)
    remote.serve_joins(froom)
    room = froom.room_id
    await hs.api.join(room, hs.user("alice"), servers=[remote.server_name])
    sid = await subscribe(hs, room)
    content = {"room_version": room_version}
    if version == "10":
        content["creator"] = remote.user("creator")
    eid, ev = froom.build("creator", "m.room.create", content, state_key="", prev_events=[],
                          auth_events=[], add=False)
    r = await remote.send_transaction(hs, [ev])
    assert r.status_code == 200, r.text
    assert r.json() == {"pdus": {eid: {}}}          # staged: it is well-formed
    good, good_ev = froom.message("creator", "after the poison")
    r = await remote.send_transaction(hs, [good_ev])
    assert r.status_code == 200, r.text
    await wait_delivered(hs, sid, good)             # processed after the poison
    recs = await hs.records(eid)
    assert all(rec["rejected"] for rec in recs.values()), recs   # dropped or rejected
    assert eid not in await hs.live_ids(room)


async def test_a_failure_processing_one_event_drops_only_that_event(world, hs, remote, monkeypatch):
    """The class of bug: any exception while processing one relayed event (here one the
    auth rules raise for a chosen event) drops that event; the next ones go on."""
    from services.pdu import inbound as inbound_mod

    room, froom = await joined_room(hs, remote)
    sid = await subscribe(hs, room)
    bad_id, bad = froom.message("fred", "explodes", add=False)
    real = inbound_mod.check_auth

    def exploding(event, *a, **kw):
        if event.get("content", {}).get("body") == "explodes":
            raise KeyError("a bug met by this event alone")
        return real(event, *a, **kw)

    monkeypatch.setattr(inbound_mod, "check_auth", exploding)
    ok_id, ok = froom.message("fred", "fine")
    r = await remote.send_transaction(hs, [bad, ok])
    assert r.status_code == 200, r.text
    await wait_delivered(hs, sid, ok_id)
    good = await sentinel(hs, remote, froom)
    await wait_delivered(hs, sid, good)
    assert bad_id not in await hs.live_ids(room)
    assert await hs.records(bad_id) == {}
    assert hs.pdu_app.state.svc.inbound.dropped["failed"] >= 1


# --------------------------------------------------------------------------- property

wire_text = st.text(st.one_of(st.characters(exclude_categories=["Cs"]),
                              st.sampled_from(["\x00", "@", ":", "!", "$", "\u2028", "é"])),
                    max_size=12)
wire_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-MAX, MAX),
              st.sampled_from([MAX + 1, -(MAX + 1), 2**63, 2**64, 10**30]),
              st.floats(allow_nan=False, allow_infinity=False), wire_text),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(wire_text, inner, max_size=4)),
    max_leaves=12)

TOP_FIELDS = ["type", "room_id", "sender", "state_key", "content", "depth", "prev_events",
              "auth_events", "origin_server_ts", "redacts", "origin", "membership", "unsigned"]
TEMPLATES = {
    "message": ("m.room.message", {"msgtype": "m.text", "body": "x"}, None),
    "create": ("m.room.create", {"room_version": "11"}, ""),
    "member": ("m.room.member", {"membership": "join"}, "@mallory:remote.test:8448"),
    "power_levels": ("m.room.power_levels", {"users": {}, "events": {}, "users_default": 0}, ""),
    "join_rules": ("m.room.join_rules", {"join_rule": "public", "allow": []}, ""),
    "redaction": ("m.room.redaction", {"redacts": "$x"}, None),
    "topic": ("m.room.topic", {"topic": "t"}, ""),
    "third_party_invite": ("m.room.member", {"membership": "invite", "third_party_invite": {}},
                           "@someone:remote.test:8448"),
}
CONTENT_KEYS = ["room_version", "membership", "users", "events", "users_default", "join_rule",
                "allow", "redacts", "third_party_invite", "join_authorised_via_users_server",
                "additional_creators", "creator", "ban", "kick", "invite", "state_default",
                "events_default", "m.federate", "body"]


@st.composite
def mutations(draw):
    """(template name, [(field path, new value)]): one to three fields replaced."""
    name = draw(st.sampled_from(sorted(TEMPLATES)))
    own = sorted(TEMPLATES[name][1])       # the template's own content keys, most often
    paths = st.one_of(st.sampled_from(TOP_FIELDS).map(lambda f: (f,)),
                      st.sampled_from(own).map(lambda k: ("content", k)),
                      st.sampled_from(CONTENT_KEYS).map(lambda k: ("content", k)))
    changes = draw(st.lists(st.tuples(paths, wire_json), min_size=1, max_size=3))
    return name, changes


def poisoned(froom, remote, name: str, changes) -> dict:
    etype, content, state_key = TEMPLATES[name]
    dag = {"prev_events": [], "auth_events": []} if etype == "m.room.create" else {}
    _eid, ev = froom.build("mallory", etype, dict(content), state_key=state_key, add=False, **dag)
    for path, value in changes:
        if path[0] == "content" and len(path) == 2:
            if not isinstance(ev.get("content"), dict):
                ev["content"] = {}
            ev["content"][path[1]] = value
        else:
            ev[path[0]] = value
    ev["hashes"], ev["signatures"] = {}, {}
    try:   # validly signed whenever the event can be signed at all
        sign_event(ev, remote.server_name, remote.key, froom.rv)
    except (CanonicalJSONError, TypeError, ValueError, AttributeError):
        try:
            ev["hashes"] = {"sha256": compute_content_hash(ev)}
        except Exception:  # noqa: BLE001 - unencodable: sent as it is
            pass
    return ev


@pytest.mark.parametrize("version", ["10", "11", "12"])
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(data=st.data())
async def test_arbitrary_signed_pdus_never_stop_the_inbox(hs, remote, version, data):
    """After each transaction of mutated PDUs, a normal message sent next is delivered."""
    if not hasattr(hs, "_poison_room"):
        # hosted by the fake, so that its users' create events reach every rule
        froom = remote.create_room(version=version)
        remote.serve_joins(froom)
        await hs.api.join(froom.room_id, hs.user("alice"), servers=[remote.server_name])
        _mid, mjoin = froom.build("mallory", "m.room.member", {"membership": "join"},
                                  state_key=remote.user("mallory"))
        sid = await subscribe(hs, froom.room_id)
        assert (await remote.send_transaction(hs, [mjoin])).status_code == 200
        hs._poison_room = (froom, sid)
    froom, sid = hs._poison_room
    batch = data.draw(st.lists(mutations(), min_size=1, max_size=3))
    pdus = [poisoned(froom, remote, name, changes) for name, changes in batch]
    r = await remote.send_transaction(hs, pdus)
    assert r.status_code == 200, r.text
    good, good_ev = froom.message("creator", "sentinel")
    assert (await remote.send_transaction(hs, [good_ev])).status_code == 200
    await wait_delivered(hs, sid, good)


# --------------------------------------------------------------------------- nesting

def nested(depth: int):
    """A JSON value of `depth` levels of objects and arrays (1 = a flat object)."""
    v: object = {"leaf": "x"}
    for i in range(depth - 1):
        v = [v] if i % 2 else {"n": v}
    return v


@pytest.mark.parametrize("depth", [150, 300, MAX_NESTING - 2])
async def test_deeply_nested_event_is_accepted_and_served(world, hs, remote, depth):
    """The spec sets no nesting limit: an event within 64 KiB is not dropped for depth
    alone (issue #12 item 7), and what we accepted we can store, deliver and serve."""
    room, froom = await joined_room(hs, remote)
    sid = await subscribe(hs, room)
    eid, ev = froom.message("fred", "deep", add=False)
    ev = dict(ev, content={"msgtype": "m.text", "body": "deep", "deep": nested(depth)})
    _eid, ev = froom.build("fred", "m.room.message", ev["content"])
    r = await remote.send_transaction(hs, [ev])
    assert r.status_code == 200, r.text
    assert r.json()["pdus"] == {_eid: {}}
    await wait_delivered(hs, sid, _eid)
    got = await remote.request(hs, "GET", f"/_matrix/federation/v1/event/{_eid}")
    assert got.status_code == 200, got.text
    assert got.json()["pdus"][0]["content"]["deep"] == nested(depth)
