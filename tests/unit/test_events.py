"""Event format, redaction, hashes, IDs and signatures for room versions 10, 11, 12."""
from __future__ import annotations

import copy

import pytest

from shared.crypto import SigningKey
from shared.events import (EventFormatError, check_content_hash, compute_content_hash,
                           compute_event_id, compute_reference_hash, event_signature_servers,
                           is_valid_federation_user_id, is_valid_server_name, is_valid_user_id, redact, room_id_from_create,
                           sender_server, server_of, sign_event, validate_event_format,
                           verify_event_signature)
from shared.room_versions import (DEFAULT_ROOM_VERSION, KNOWN_ROOM_VERSIONS, RoomVersion,
                                  UnsupportedRoomVersion, get_room_version)

V10, V11, V12 = (KNOWN_ROOM_VERSIONS[v] for v in ("10", "11", "12"))
ALL = [V10, V11, V12]
SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
KEY = SigningKey.from_seed(SEED, "1")
VKEYS = {"ed25519:1": KEY.verify_key}
V12_ROOM = "!" + "A" * 43

SPEC_EVENT = {"room_id": "!x:domain", "sender": "@a:domain", "origin": "domain",
              "origin_server_ts": 1000000, "signatures": {}, "hashes": {}, "type": "X",
              "content": {}, "prev_events": [], "auth_events": [], "depth": 3,
              "unsigned": {"age_ts": 1000000}}
SPEC_HASH = "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"
SPEC_SIG_V10 = "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"
SPEC_SIG_V11 = "Jxp+1glFcZM+nnHpY0EkedRR7u0VmKsJYGnQqIvqus3UvL5X/p1y6wSkLhGoTBel6MZ9lrMIzUqrjqFquWJKBw"


def ev(rv: RoomVersion, **fields) -> dict:
    """A well-formed unsigned message event for `rv` (fields override / None deletes)."""
    e = {"type": "m.room.message", "sender": "@alice:domain",
         "room_id": V12_ROOM if rv.room_id_is_create_id else "!room:domain",
         "origin_server_ts": 1_700_000_000_000, "content": {"body": "hi", "msgtype": "m.text"},
         "depth": 5, "prev_events": ["$prev"], "auth_events": ["$auth"],
         "hashes": {"sha256": "x"}, "signatures": {}}
    for k, v in fields.items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = v
    return e


def create_event(rv: RoomVersion) -> dict:
    content = {"room_version": rv.identifier}
    if rv.creator_in_content:
        content["creator"] = "@alice:domain"
    e = ev(rv, type="m.room.create", state_key="", content=content, prev_events=[],
           auth_events=[], depth=1, room_id=None if rv.room_id_is_create_id else "!room:domain")
    return sign_event(e, "domain", KEY, rv)


# --------------------------------------------------------------------------- room versions

def test_room_versions_table():
    assert set(KNOWN_ROOM_VERSIONS) == {"10", "11", "12"} and DEFAULT_ROOM_VERSION == "12"
    assert get_room_version("11") is V11
    assert (V10.redaction_v11, V11.redaction_v11, V12.redaction_v11) == (False, True, True)
    assert (V10.creator_in_content, V11.creator_in_content, V12.creator_in_content) == (True, False, False)
    assert [v.room_id_is_create_id for v in ALL] == [False, False, True]
    assert [v.create_in_auth_events for v in ALL] == [True, True, False]
    assert [v.privileged_creators for v in ALL] == [False, False, True]
    assert [v.state_res for v in ALL] == ["v2", "v2", "v2.1"]
    assert all(v.knock and v.restricted and v.knock_restricted and v.integer_power_levels for v in ALL)
    with pytest.raises(AttributeError):
        V10.identifier = "x"  # frozen


@pytest.mark.parametrize("bad", ["9", "1", "13", "org.matrix.msc", "", None, 12])
def test_unsupported_room_version(bad):
    with pytest.raises(UnsupportedRoomVersion):
        get_room_version(bad)
    assert issubclass(UnsupportedRoomVersion, KeyError)


# --------------------------------------------------------------------------- spec vectors

@pytest.mark.parametrize("rv,sig", [(V10, SPEC_SIG_V10), (V11, SPEC_SIG_V11), (V12, SPEC_SIG_V11)])
def test_spec_event_vector(rv, sig):
    e = sign_event(copy.deepcopy(SPEC_EVENT), "domain", KEY, rv)
    assert e["hashes"] == {"sha256": SPEC_HASH}
    assert e["signatures"] == {"domain": {"ed25519:1": sig}}
    assert e["unsigned"] == {"age_ts": 1000000}
    assert "event_id" not in e
    assert verify_event_signature(e, rv, "domain", VKEYS)
    assert check_content_hash(e)


def test_spec_vector_content_hash():
    assert compute_content_hash(SPEC_EVENT) == SPEC_HASH
    assert compute_content_hash(dict(SPEC_EVENT, age_ts=1, outlier=True,
                                     destinations=["a"], unsigned={"age": 1})) == SPEC_HASH
    # only unsigned, signatures, hashes and the legacy keys are left out: an event_id key
    # is covered like any other (as Synapse computes it), so a sender that put one in
    # its event and hashed it is checked against the same bytes
    with_id = dict(SPEC_EVENT, event_id="$x")
    assert compute_content_hash(with_id) != SPEC_HASH
    assert check_content_hash(dict(with_id, hashes={"sha256": compute_content_hash(with_id)}))


# --------------------------------------------------------------------------- ids round trip

@pytest.mark.parametrize("rv", ALL, ids=lambda rv: rv.identifier)
def test_event_id_round_trip(rv):
    e = sign_event(ev(rv), "domain", KEY, rv)
    eid = compute_event_id(e, rv)
    assert eid.startswith("$") and len(eid) == 44 and "+" not in eid and "/" not in eid
    assert check_content_hash(e) and verify_event_signature(e, rv, "domain", VKEYS)
    # event_id, unsigned and signatures do not change the ID
    assert compute_event_id(dict(e, event_id="$whatever", unsigned={"age": 1}), rv) == eid
    assert compute_event_id(dict(e, signatures={}), rv) == eid
    # an event_id key is ignored for the signature, not for the content hash
    with_id = dict(e, event_id=eid)
    assert verify_event_signature(with_id, rv, "domain", VKEYS) and not check_content_hash(with_id)
    # redaction keeps the ID and the signature but breaks the content hash
    r = redact(e, rv)
    assert compute_event_id(r, rv) == eid
    assert verify_event_signature(r, rv, "domain", VKEYS)
    assert not check_content_hash(r)
    # a changed redacted-away field breaks the hash only; a surviving field changes the ID
    edited = dict(e, content={"body": "evil"})
    assert compute_event_id(edited, rv) == eid and not check_content_hash(edited)
    assert verify_event_signature(edited, rv, "domain", VKEYS)
    moved = dict(e, depth=6)
    assert compute_event_id(moved, rv) != eid
    assert not verify_event_signature(moved, rv, "domain", VKEYS)
    assert compute_reference_hash(e, rv) == compute_reference_hash(r, rv)


def test_sign_event_ignores_event_id_and_merges_signatures():
    other = SigningKey.generate("b")
    e = sign_event(ev(V11, event_id="$ignored"), "other.example", other, V11)
    e = sign_event(e, "domain", KEY, V11)
    assert e["event_id"] == "$ignored"
    assert set(e["signatures"]) == {"other.example", "domain"}
    assert verify_event_signature(e, V11, "other.example", {other.key_id: other.verify_key})
    assert verify_event_signature(e, V11, "domain", VKEYS)
    bare = {k: v for k, v in e.items() if k != "event_id"}
    assert verify_event_signature(bare, V11, "domain", VKEYS)


@pytest.mark.parametrize("bad", ["another key's signature", "garbage", "short"])
def test_one_bad_signature_by_a_known_key_fails_the_event_whatever_the_others(bad):
    """All signatures of the server by keys we know must verify, not just one (issue #12.9)."""
    second = SigningKey.generate("2")
    e = sign_event(sign_event(ev(V11), "domain", KEY, V11), "domain", second, V11)
    both = {**VKEYS, second.key_id: second.verify_key}
    assert verify_event_signature(e, V11, "domain", both)
    forged = copy.deepcopy(e)
    sigs = forged["signatures"]["domain"]
    sigs[second.key_id] = {"another key's signature": sigs["ed25519:1"],
                           "garbage": "A" * 86, "short": "AAAA"}[bad]
    assert verify_event_signature(forged, V11, "domain", VKEYS)     # the bad key is not known
    assert not verify_event_signature(forged, V11, "domain", both)  # known, so it must verify


def test_v12_create_event_room_id():
    create = create_event(V12)
    assert "room_id" not in create
    validate_event_format(create, V12)
    room_id = room_id_from_create(create, V12)
    assert room_id == "!" + compute_event_id(create, V12)[1:]
    assert len(room_id) == 44 and ":" not in room_id
    msg = sign_event(ev(V12, room_id=room_id, auth_events=[]), "domain", KEY, V12)
    validate_event_format(msg, V12)
    assert verify_event_signature(create, V12, "domain", VKEYS)


@pytest.mark.parametrize("rv", [V10, V11], ids=lambda rv: rv.identifier)
def test_v10_v11_create_room_id(rv):
    create = create_event(rv)
    validate_event_format(create, rv)
    assert room_id_from_create(create, rv) == "!room:domain"
    with pytest.raises(EventFormatError):
        room_id_from_create({k: v for k, v in create.items() if k != "room_id"}, rv)


def test_v10_and_v11_ids_differ_for_same_event():
    e = dict(SPEC_EVENT)
    assert compute_event_id(e, V10) != compute_event_id(e, V11)  # `origin` survives only in v10
    assert compute_event_id(e, V11) == compute_event_id(e, V12)


def test_verify_event_signature_failures():
    e = sign_event(ev(V11), "domain", KEY, V11)
    assert not verify_event_signature(e, V11, "elsewhere", VKEYS)
    assert not verify_event_signature(e, V11, "domain", {})
    assert not verify_event_signature(e, V11, "domain", {"ed25519:2": KEY.verify_key})
    other = SigningKey.generate("1")
    assert not verify_event_signature(e, V11, "domain", {"ed25519:1": other.verify_key})
    bad = dict(e, signatures={"domain": {"ed25519:1": "!!"}})
    assert not verify_event_signature(bad, V11, "domain", VKEYS)
    assert not verify_event_signature(dict(e, signatures="x"), V11, "domain", VKEYS)
    assert not verify_event_signature(dict(e, depth=1.5), V11, "domain", VKEYS)
    # one good key among several is enough
    assert verify_event_signature(e, V11, "domain", {"ed25519:1": KEY.verify_key,
                                                     "ed25519:2": other.verify_key})


def test_check_content_hash_never_raises():
    assert not check_content_hash({})
    assert not check_content_hash({"hashes": {"sha256": 5}})
    assert not check_content_hash({"hashes": "x"})
    assert not check_content_hash({"f": 1.5, "hashes": {"sha256": "AAAA"}})


# --------------------------------------------------------------------------- redaction

TOP = {"event_id": "$e", "type": "m.room.message", "room_id": "!r:d", "sender": "@a:d",
       "state_key": "", "content": {}, "hashes": {"sha256": "h"}, "signatures": {"d": {}},
       "depth": 1, "prev_events": [], "prev_state": [], "auth_events": [], "origin": "d",
       "origin_server_ts": 1, "membership": "join", "unsigned": {"age": 1}, "redacts": "$x",
       "extra": 1, "age_ts": 5, "outlier": False, "destinations": []}
TOP_V10 = {"event_id", "type", "room_id", "sender", "state_key", "content", "hashes",
           "signatures", "depth", "prev_events", "prev_state", "auth_events", "origin",
           "origin_server_ts", "membership"}
TOP_V11 = TOP_V10 - {"origin", "membership", "prev_state"}


@pytest.mark.parametrize("rv,keys", [(V10, TOP_V10), (V11, TOP_V11), (V12, TOP_V11)])
def test_redaction_top_level_keys(rv, keys):
    r = redact(TOP, rv)
    assert set(r) == keys
    assert "unsigned" not in r and "redacts" not in r


FULL_CONTENT = {
    "m.room.member": {"membership": "join", "join_authorised_via_users_server": "@u:d",
                      "displayname": "A", "avatar_url": "mxc://x",
                      "third_party_invite": {"signed": {"mxid": "@a:d", "token": "t"},
                                             "display_name": "x"}},
    "m.room.create": {"creator": "@a:d", "room_version": "10", "m.federate": False,
                      "predecessor": {"room_id": "!o:d"}, "additional_creators": ["@b:d"]},
    "m.room.join_rules": {"join_rule": "restricted", "allow": [{"type": "m.room_membership"}],
                          "other": 1},
    "m.room.power_levels": {"ban": 50, "events": {"m.x": 1}, "events_default": 0, "kick": 50,
                            "redact": 50, "state_default": 50, "users": {"@a:d": 100},
                            "users_default": 0, "invite": 0, "notifications": {"room": 50}},
    "m.room.history_visibility": {"history_visibility": "shared", "other": 1},
    "m.room.redaction": {"redacts": "$x", "reason": "spam"},
    "m.room.message": {"body": "hi", "msgtype": "m.text"},
    "m.room.aliases": {"aliases": ["#a:d"]},
    "m.room.name": {"name": "secret"},
}


def _pick(etype, *keys):
    return {k: FULL_CONTENT[etype][k] for k in keys}


REDACTED_CONTENT = [
    # (type, v10 keeps, v11 keeps)
    ("m.room.member", _pick("m.room.member", "membership", "join_authorised_via_users_server"),
     dict(_pick("m.room.member", "membership", "join_authorised_via_users_server"),
          third_party_invite={"signed": {"mxid": "@a:d", "token": "t"}})),
    ("m.room.create", _pick("m.room.create", "creator"), FULL_CONTENT["m.room.create"]),
    ("m.room.join_rules", _pick("m.room.join_rules", "join_rule", "allow"),
     _pick("m.room.join_rules", "join_rule", "allow")),
    ("m.room.power_levels",
     _pick("m.room.power_levels", "ban", "events", "events_default", "kick", "redact",
           "state_default", "users", "users_default"),
     _pick("m.room.power_levels", "ban", "events", "events_default", "kick", "redact",
           "state_default", "users", "users_default", "invite")),
    ("m.room.history_visibility", _pick("m.room.history_visibility", "history_visibility"),
     _pick("m.room.history_visibility", "history_visibility")),
    ("m.room.redaction", {}, _pick("m.room.redaction", "redacts")),
    ("m.room.message", {}, {}),
    ("m.room.aliases", {}, {}),
    ("m.room.name", {}, {}),
]


@pytest.mark.parametrize("etype,v10,v11", REDACTED_CONTENT, ids=[r[0] for r in REDACTED_CONTENT])
def test_redaction_content_table(etype, v10, v11):
    event = {"type": etype, "content": copy.deepcopy(FULL_CONTENT[etype]), "state_key": ""}
    assert redact(event, V10)["content"] == v10
    assert redact(event, V11)["content"] == v11
    assert redact(event, V12)["content"] == v11


def test_redaction_v11_third_party_invite_without_signed_is_kept_empty():
    """As Synapse prunes it: an object third_party_invite stays, holding only `signed`
    (so `{}` without one); a non-object one goes. v10 keeps none of it."""
    e = {"type": "m.room.member", "content": {"membership": "invite", "third_party_invite": {"x": 1}}}
    assert redact(e, V11)["content"] == {"membership": "invite", "third_party_invite": {}}
    assert redact(e, V12)["content"] == {"membership": "invite", "third_party_invite": {}}
    assert redact(e, V10)["content"] == {"membership": "invite"}
    e["content"]["third_party_invite"] = "junk"
    assert redact(e, V11)["content"] == {"membership": "invite"}


def test_event_id_of_a_member_event_with_third_party_invite_without_signed():
    """The reference hash (so the event ID) covers the kept `{}`: without it our ID of
    such an event differs from every other server's."""
    base = ev(V11, type="m.room.member", state_key="@a:d", content={"membership": "invite"})
    with_tpi = dict(base, content={"membership": "invite", "third_party_invite": {"x": 1}})
    assert compute_event_id(with_tpi, V11) != compute_event_id(base, V11)
    assert compute_event_id(with_tpi, V10) == compute_event_id(base, V10)


def test_redact_returns_deep_copy():
    e = sign_event(ev(V11, type="m.room.create", state_key="", content={"a": {"b": [1]}}),
                   "domain", KEY, V11)
    r = redact(e, V11)
    r["content"]["a"]["b"].append(2)
    r["signatures"]["domain"]["ed25519:1"] = "changed"
    r["prev_events"].append("$new")
    assert e["content"] == {"a": {"b": [1]}}
    assert e["signatures"]["domain"]["ed25519:1"] != "changed"
    assert e["prev_events"] == ["$prev"]


def test_redact_tolerates_non_object_content():
    assert redact({"type": "m.room.member", "content": "x"}, V10)["content"] == {}
    assert redact({"type": "m.room.member"}, V11)["content"] == {}


# --------------------------------------------------------------------------- signature servers

@pytest.mark.parametrize("event,expected", [
    (ev(V11), {"domain"}),
    (ev(V11, sender="@bob:other.example:8448"), {"other.example:8448"}),
    (ev(V11, type="m.room.member", state_key="@x:y", content={"membership": "invite"}), {"domain"}),
    (ev(V11, type="m.room.member", state_key="@x:y",
        content={"membership": "invite", "third_party_invite": {"signed": {}}}), set()),
    (ev(V11, type="m.room.member", state_key="@alice:domain",
        content={"membership": "join", "join_authorised_via_users_server": "@mod:resident.org"}),
     {"domain", "resident.org"}),
    # any membership naming an authorising user needs that server's signature (#12.10)
    (ev(V11, type="m.room.member", state_key="@alice:domain",
        content={"membership": "leave", "join_authorised_via_users_server": "@mod:resident.org"}),
     {"domain", "resident.org"}),
    (ev(V11, type="m.room.member", state_key="@alice:domain",
        content={"membership": "invite", "join_authorised_via_users_server": "@mod:resident.org"}),
     {"domain", "resident.org"}),
    # historical user IDs are users like any other (#12.2)
    (ev(V11, sender="@john doe:other.example"), {"other.example"}),
    (ev(V11, type="m.room.member", state_key="@alice:domain",
        content={"membership": "join", "join_authorised_via_users_server": "garbage"}),
     {"domain", ""}),
    (ev(V11, sender="nonsense"), {""}),
    (ev(V11, type="m.room.message", content={"membership": "invite", "third_party_invite": {}}),
     {"domain"}),
])
def test_event_signature_servers(event, expected):
    assert event_signature_servers(event, V11) == expected


# --------------------------------------------------------------------------- identifiers

@pytest.mark.parametrize("name", ["example.org", "example.org:8448", "10.0.0.5", "10.0.0.5:8448",
                                  "[::1]", "[::1]:8448", "[2001:db8::ff00:42:8329]", "localhost",
                                  "a-b.c", "x:1"])
def test_valid_server_names(name):
    assert is_valid_server_name(name)


@pytest.mark.parametrize("name", ["", "example.org:", "example.org:123456", "exa mple.org",
                                  "ex_ample.org", "::1", "[::1", "[zz::1]", "example.org:80a",
                                  "a" * 256, "é.org", None, 5, "example.org:8448:1"])
def test_invalid_server_names(name):
    assert not is_valid_server_name(name)


@pytest.mark.parametrize("uid", ["@élodie:example.org", "@john doe:example.org", "@:example.org",
                                 "@a@b:example.org", "@\U0001f600:[::1]:8448", "@ALICE:example.org"])
def test_historical_user_ids_are_valid_over_federation(uid):
    """Spec appendix: servers MUST accept these over federation; we never create them."""
    assert is_valid_federation_user_id(uid)
    ascii_printable = uid[1:].split(":")[0] and all(0x21 <= ord(c) <= 0x7E for c in uid.split(":")[0])
    assert is_valid_user_id(uid) == bool(ascii_printable)


@pytest.mark.parametrize("uid", ["@a\x00b:example.org", "@a:exa mple.org", "@a", "a:example.org",
                                 "@\ud800:example.org", "@" + "a" * 250 + ":example.org", None, 7,
                                 "@bob:", "@bob:example.org:99999999"])
def test_invalid_federation_user_ids(uid):
    assert not is_valid_federation_user_id(uid)


def test_events_of_historical_senders_have_the_format():
    for sender in ("@élodie:domain", "@john doe:domain", "@:domain"):
        validate_event_format(sign_event(ev(V11, sender=sender), "domain", KEY, V11), V11)


def test_user_ids_and_server_of():
    assert is_valid_user_id("@alice:example.org")
    assert is_valid_user_id("@a=b/c+d:[::1]:8448")
    for bad in ["alice:example.org", "@:example.org", "@alice", "@alice:", "@al ice:x",
                "@alicé:x", "@a:" + "b" * 260, None, 3]:
        assert not is_valid_user_id(bad), bad
    assert server_of("@a:example.org:8448") == "example.org:8448"
    assert server_of("!r:d") == "d"
    assert sender_server({"sender": "@a:b.c"}) == "b.c"
    with pytest.raises(ValueError):
        server_of("!nocolon")


# --------------------------------------------------------------------------- validate format

@pytest.mark.parametrize("rv", ALL, ids=lambda rv: rv.identifier)
def test_valid_events_pass(rv):
    validate_event_format(ev(rv), rv)
    validate_event_format(ev(rv, state_key="", type="m.room.topic", event_id="$x"), rv)
    validate_event_format(ev(rv, depth=0, prev_events=["$a"] * 20, auth_events=["$b"] * 10), rv)
    validate_event_format(create_event(rv), rv)


BIG = "x" * 70000
REFUSALS = [
    ("not-dict", V11, None, "not a JSON object"),
    ("type-missing", V11, {"type": None}, "type"),
    ("type-int", V11, {"type": 5}, "type"),
    ("sender-missing", V11, {"sender": None}, "sender"),
    ("sender-invalid", V11, {"sender": "alice"}, "sender"),
    ("sender-bad-server", V11, {"sender": "@alice:bad server"}, "sender"),
    ("ts-missing", V11, {"origin_server_ts": None}, "origin_server_ts"),
    ("ts-str", V11, {"origin_server_ts": "1"}, "origin_server_ts"),
    ("ts-bool", V11, {"origin_server_ts": True}, "origin_server_ts"),
    ("ts-float", V11, {"origin_server_ts": 1.0}, "origin_server_ts"),
    ("content-missing", V11, {"content": None}, "content"),
    ("content-list", V11, {"content": []}, "content"),
    ("depth-missing", V11, {"depth": None}, "depth"),
    ("depth-negative", V11, {"depth": -1}, "depth"),
    ("depth-str", V11, {"depth": "1"}, "depth"),
    ("prev-missing", V11, {"prev_events": None}, "prev_events"),
    ("prev-not-list", V11, {"prev_events": "$a"}, "prev_events"),
    ("prev-too-many", V11, {"prev_events": ["$a"] * 21}, "prev_events"),
    ("prev-not-str", V11, {"prev_events": [["$a", {}]]}, "prev_events"),
    ("auth-missing", V11, {"auth_events": None}, "auth_events"),
    ("auth-too-many", V11, {"auth_events": ["$a"] * 11}, "auth_events"),
    ("auth-not-str", V11, {"auth_events": [1]}, "auth_events"),
    ("hashes-missing", V11, {"hashes": None}, "hashes"),
    ("hashes-no-sha256", V11, {"hashes": {}}, "hashes"),
    ("hashes-sha256-int", V11, {"hashes": {"sha256": 1}}, "hashes"),
    ("signatures-missing", V11, {"signatures": None}, "signatures"),
    ("signatures-list", V11, {"signatures": []}, "signatures"),
    ("state-key-int", V11, {"state_key": 0}, "state_key"),
    ("room-id-missing", V11, {"room_id": None}, "room_id"),
    ("room-id-no-bang", V11, {"room_id": "#r:domain"}, "room_id"),
    ("room-id-no-server-v10", V10, {"room_id": V12_ROOM}, "room_id"),
    ("room-id-no-server-v11", V11, {"room_id": "!abc"}, "room_id"),
    ("room-id-bad-server", V11, {"room_id": "!abc:bad server"}, "room_id"),
    ("room-id-v12-server", V12, {"room_id": "!room:domain"}, "room_id"),
    ("room-id-v12-short", V12, {"room_id": "!" + "A" * 42}, "room_id"),
    ("room-id-v12-std-b64", V12, {"room_id": "!" + "A" * 42 + "+"}, "room_id"),
    ("room-id-v12-missing", V12, {"room_id": None}, "room_id"),
    ("v12-create-with-room-id", V12, {"type": "m.room.create", "state_key": "",
                                      "room_id": V12_ROOM}, "must not have room_id"),
    ("type-too-long", V11, {"type": "t" * 256}, "type is longer"),
    ("type-too-long-utf8", V11, {"type": "é" * 128}, "type is longer"),
    ("state-key-too-long", V11, {"state_key": "s" * 256}, "state_key is longer"),
    ("room-id-too-long", V11, {"room_id": "!" + "r" * 250 + ":domain"}, "room_id is longer"),
    ("sender-too-long", V11, {"sender": "@" + "a" * 250 + ":domain"}, "sender"),
    ("float-in-content", V11, {"content": {"a": [{"b": 1.5}]}}, "canonical"),
    ("big-int-in-content", V11, {"content": {"n": 2**53}}, "canonical"),
    ("big-depth", V11, {"depth": 2**53}, "canonical"),
    ("float-in-unsigned", V11, {"unsigned": {"age": 0.5}}, "canonical"),
    ("too-big", V11, {"content": {"body": BIG}}, "more than 65536"),
]


@pytest.mark.parametrize("rv,patch,reason", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_validate_refusals(rv, patch, reason):
    event = "not an event" if patch is None else ev(rv, **patch)  # a None value deletes
    with pytest.raises(EventFormatError) as info:
        validate_event_format(event, rv)
    assert reason in str(info.value)


def test_size_limit_boundary():
    e = ev(V11, content={"body": ""})
    from shared.canonical import canonical_json
    base = len(canonical_json(e))
    e["content"]["body"] = "x" * (65536 - base)
    validate_event_format(e, V11)
    e["event_id"] = "$" + "e" * 43  # not on the wire, not counted
    validate_event_format(e, V11)
    e["content"]["body"] += "x"
    with pytest.raises(EventFormatError):
        validate_event_format(e, V11)


def test_cheap_checks_come_first():
    # a bad sender is reported even though the content is huge and non-canonical
    e = ev(V11, sender="bad", content={"f": 1.5, "body": BIG})
    with pytest.raises(EventFormatError, match="sender"):
        validate_event_format(e, V11)
