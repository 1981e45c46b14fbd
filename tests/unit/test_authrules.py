"""Authorisation rules, room versions 10, 11, 12: one small allowed/refused test per rule."""
from __future__ import annotations

import itertools

import pytest

from services.pdu.authrules import (
    AuthError,
    auth_types_for_event,
    check_auth,
    check_auth_events_list,
    get_named_level,
    get_required_power_level,
    get_user_power_level,
)

VERSIONS = ["10", "11", "12"]
ALICE = "@alice:a.example"     # creator (admin)
BOB = "@bob:b.example"         # moderator, PL 50
CAROL = "@carol:c.example"     # joined, PL 0
DAVE = "@dave:d.example"       # not in the room
EVE = "@eve:e.example"         # banned

_ids = itertools.count()


class Room:
    """A small room: create, alice (creator) joined, PL, join rules, bob/carol joined,
    eve banned. State is a map (type, state_key) -> event dict."""

    def __init__(self, rv: str, join_rule: str | None = "public", pl: dict | None = None,
                 create_content: dict | None = None, with_pl: bool = True):
        self.rv = rv
        content = {"room_version": rv}
        if rv == "10":
            content["creator"] = ALICE
        content.update(create_content or {})
        self.create = {"event_id": f"$create{next(_ids)}", "type": "m.room.create", "sender": ALICE,
                       "state_key": "", "content": content, "prev_events": [], "auth_events": [],
                       "origin_server_ts": 0}
        if rv == "12":
            self.room_id = "!" + self.create["event_id"][1:]
        else:
            self.room_id = "!room:a.example"
            self.create["room_id"] = self.room_id
        self.state: dict = {("m.room.create", ""): self.create}
        self.set(self.ev("m.room.member", ALICE, {"membership": "join"}, ALICE))
        if with_pl:
            self.set(self.ev("m.room.power_levels", ALICE, pl if pl is not None else self.default_pl(), ""))
        if join_rule is not None:
            self.set(self.ev("m.room.join_rules", ALICE, {"join_rule": join_rule}, ""))
        for u in (BOB, CAROL):
            self.set(self.ev("m.room.member", u, {"membership": "join"}, u))
        self.set(self.ev("m.room.member", ALICE, {"membership": "ban"}, EVE))

    def default_pl(self) -> dict:
        users = {BOB: 50}
        if self.rv != "12":
            users[ALICE] = 100
        return {"users": users, "users_default": 0, "events_default": 0, "state_default": 50,
                "ban": 50, "kick": 50, "redact": 50, "invite": 0,
                "events": {"m.room.power_levels": 100, "m.room.name": 50}}

    def ev(self, etype: str, sender: str, content: dict, state_key: str | None = None, **extra) -> dict:
        e = {"event_id": f"$e{next(_ids)}", "room_id": self.room_id, "type": etype, "sender": sender,
             "content": content, "origin_server_ts": 1, "prev_events": ["$prev"], "auth_events": []}
        if state_key is not None:
            e["state_key"] = state_key
        e.update(extra)
        return e

    def set(self, e: dict) -> dict:
        self.state[(e["type"], e["state_key"])] = e
        return e

    def member(self, user: str, membership: str, sender: str | None = None, **content) -> dict:
        return self.ev("m.room.member", sender or user, dict(content, membership=membership), user)

    def pl(self, sender: str, **changes) -> dict:
        c = self.default_pl()
        c.update(changes)
        return self.ev("m.room.power_levels", sender, c, "")

    def check(self, e: dict) -> None:
        check_auth(e, self.state, self.rv, self.create)

    def allowed(self, e: dict) -> None:
        self.check(e)

    def refused(self, e: dict, match: str | None = None) -> None:
        with pytest.raises(AuthError, match=match):
            self.check(e)


def _create(rv: str, **over) -> dict:
    content = {"room_version": rv}
    if rv == "10":
        content["creator"] = ALICE
    e = {"event_id": "$newcreate", "type": "m.room.create", "sender": ALICE, "state_key": "",
         "content": content, "prev_events": [], "auth_events": [], "origin_server_ts": 0}
    if rv != "12":
        e["room_id"] = "!new:a.example"
    for k, v in over.items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = v
    return e


all_versions = pytest.mark.parametrize("rv", VERSIONS)


# ================================================================== rule: create

@all_versions
def test_create_allowed(rv):
    check_auth(_create(rv), {}, rv)


@all_versions
def test_create_with_prev_events_refused(rv):
    with pytest.raises(AuthError, match="prev_events"):
        check_auth(_create(rv, prev_events=["$x"]), {}, rv)


@pytest.mark.parametrize("rv", ["10", "11"])
def test_create_room_id_domain_mismatch_refused(rv):
    with pytest.raises(AuthError, match="domain"):
        check_auth(_create(rv, room_id="!new:elsewhere.example"), {}, rv)


def test_create_with_room_id_refused_v12():
    with pytest.raises(AuthError, match="room_id"):
        check_auth(_create("12", room_id="!new:a.example"), {}, "12")


@all_versions
def test_create_unknown_room_version_refused(rv):
    e = _create(rv)
    e["content"]["room_version"] = "999"
    with pytest.raises(AuthError, match="room_version"):
        check_auth(e, {}, rv)


def test_create_without_creator_refused_v10():
    e = _create("10")
    del e["content"]["creator"]
    with pytest.raises(AuthError, match="creator"):
        check_auth(e, {}, "10")


@pytest.mark.parametrize("rv", ["11", "12"])
def test_create_without_creator_allowed_v11_plus(rv):
    check_auth(_create(rv), {}, rv)


def test_create_additional_creators_valid_allowed_v12():
    e = _create("12")
    e["content"]["additional_creators"] = [BOB]
    check_auth(e, {}, "12")


@pytest.mark.parametrize("bad", ["@bob:b.example", ["not-a-user"], [1], [BOB, "bob"],
                                 ["@bob:exa mple.org"], ["@bob:"], ["@b\x00ob:b.example"]])
def test_create_additional_creators_invalid_refused_v12(bad):
    e = _create("12")
    e["content"]["additional_creators"] = bad
    with pytest.raises(AuthError, match="additional_creators"):
        check_auth(e, {}, "12")


# ====================================================== auth events selection (9.1)

@all_versions
def test_auth_types_create_is_empty(rv):
    assert auth_types_for_event(_create(rv), rv) == []


@all_versions
def test_auth_types_message(rv):
    r = Room(rv)
    got = auth_types_for_event(r.ev("m.room.message", CAROL, {"body": "hi"}), rv)
    base = [("m.room.power_levels", ""), ("m.room.member", CAROL)]
    assert got == (base if rv == "12" else [("m.room.create", "")] + base)


@all_versions
def test_auth_types_join(rv):
    r = Room(rv)
    got = set(auth_types_for_event(r.member(DAVE, "join"), rv))
    expected = {("m.room.power_levels", ""), ("m.room.member", DAVE), ("m.room.join_rules", "")}
    if rv != "12":
        expected.add(("m.room.create", ""))
    assert got == expected
    assert ("m.room.create", "") not in got or rv != "12"


@all_versions
def test_auth_types_join_authorised_via(rv):
    r = Room(rv)
    got = auth_types_for_event(r.member(DAVE, "join", join_authorised_via_users_server=BOB), rv)
    assert ("m.room.member", BOB) in got


@all_versions
def test_auth_types_kick_has_target_no_join_rules(rv):
    r = Room(rv)
    got = auth_types_for_event(r.member(CAROL, "leave", sender=BOB), rv)
    assert ("m.room.member", CAROL) in got and ("m.room.member", BOB) in got
    assert ("m.room.join_rules", "") not in got


@all_versions
def test_auth_types_third_party_invite_token(rv):
    r = Room(rv)
    e = r.member(DAVE, "invite", sender=BOB,
                 third_party_invite={"display_name": "d", "signed": {"mxid": DAVE, "token": "tok"}})
    got = auth_types_for_event(e, rv)
    assert ("m.room.third_party_invite", "tok") in got and ("m.room.join_rules", "") in got


def test_auth_types_v12_never_selects_create():
    r = Room("12")
    for e in (r.member(DAVE, "join"), r.ev("m.room.topic", ALICE, {"topic": "t"}, "")):
        assert ("m.room.create", "") not in auth_types_for_event(e, "12")


# =============================================== rule: the event's own auth_events

def _with_auth(r: Room, e: dict, keys) -> tuple[dict, list[dict]]:
    auth = [r.state[k] for k in keys]
    e["auth_events"] = [a["event_id"] for a in auth]
    return e, auth


def _good_auth_keys(rv, user):
    keys = [("m.room.power_levels", ""), ("m.room.member", user)]
    return keys if rv == "12" else [("m.room.create", "")] + keys


@all_versions
def test_auth_events_list_allowed(rv):
    r = Room(rv)
    e, auth = _with_auth(r, r.ev("m.room.message", CAROL, {}), _good_auth_keys(rv, CAROL))
    check_auth_events_list(e, auth, rv, r.create)


@all_versions
def test_auth_events_list_duplicate_refused(rv):
    r = Room(rv)
    e, auth = _with_auth(r, r.ev("m.room.message", CAROL, {}), _good_auth_keys(rv, CAROL))
    other_pl = r.pl(ALICE)
    auth.append(other_pl)
    e["auth_events"].append(other_pl["event_id"])
    with pytest.raises(AuthError, match="duplicate"):
        check_auth_events_list(e, auth, rv, r.create)


@all_versions
def test_auth_events_list_unexpected_entry_refused(rv):
    r = Room(rv)
    keys = _good_auth_keys(rv, CAROL) + [("m.room.join_rules", "")]
    e, auth = _with_auth(r, r.ev("m.room.message", CAROL, {}), keys)
    with pytest.raises(AuthError, match="unexpected"):
        check_auth_events_list(e, auth, rv, r.create)


def test_auth_events_list_create_refused_v12():
    r = Room("12")
    keys = [("m.room.create", "")] + _good_auth_keys("12", CAROL)
    e, auth = _with_auth(r, r.ev("m.room.message", CAROL, {}), keys)
    with pytest.raises(AuthError, match="create"):
        check_auth_events_list(e, auth, "12", r.create)


@pytest.mark.parametrize("rv", ["10", "11"])
def test_auth_events_list_without_create_refused(rv):
    r = Room(rv)
    e, auth = _with_auth(r, r.ev("m.room.message", CAROL, {}), _good_auth_keys("12", CAROL))
    with pytest.raises(AuthError, match="no m.room.create"):
        check_auth_events_list(e, auth, rv, r.create)


@all_versions
def test_auth_events_list_rejected_entry_refused(rv):
    r = Room(rv)
    e, auth = _with_auth(r, r.ev("m.room.message", CAROL, {}), _good_auth_keys(rv, CAROL))
    auth[-1] = dict(auth[-1], rejected=True)
    with pytest.raises(AuthError, match="rejected"):
        check_auth_events_list(e, auth, rv, r.create)


@all_versions
def test_auth_events_list_missing_entry_refused(rv):
    r = Room(rv)
    e, auth = _with_auth(r, r.ev("m.room.message", CAROL, {}), _good_auth_keys(rv, CAROL))
    with pytest.raises(AuthError, match="missing or rejected"):
        check_auth_events_list(e, auth[:-1], rv, r.create)


@all_versions
def test_auth_events_list_other_room_refused(rv):
    r = Room(rv)
    e, auth = _with_auth(r, r.ev("m.room.message", CAROL, {}), _good_auth_keys(rv, CAROL))
    auth[-1] = dict(auth[-1], room_id="!other:x.example")
    with pytest.raises(AuthError, match="another room"):
        check_auth_events_list(e, auth, rv, r.create)


@all_versions
def test_auth_events_list_create_event_exempt(rv):
    check_auth_events_list(_create(rv), [], rv)


# ===================================================== create lookup, room_id, federate

@pytest.mark.parametrize("rv", ["10", "11"])
def test_no_create_event_refused(rv):
    r = Room(rv)
    del r.state[("m.room.create", "")]
    with pytest.raises(AuthError, match="no m.room.create"):
        check_auth(r.ev("m.room.message", CAROL, {}), r.state, rv)


def test_v12_create_comes_from_argument():
    r = Room("12")
    del r.state[("m.room.create", "")]
    e = r.ev("m.room.message", CAROL, {})
    check_auth(e, r.state, "12", r.create)
    with pytest.raises(AuthError, match="no m.room.create"):
        check_auth(e, r.state, "12")


def test_v12_room_id_must_match_create_refused():
    r = Room("12")
    r.refused(r.ev("m.room.message", CAROL, {}, room_id="!somethingelse"), "room_id")


@all_versions
def test_federate_false_other_server_refused(rv):
    r = Room(rv, create_content={"m.federate": False})
    r.refused(r.ev("m.room.message", CAROL, {}), "m.federate")


@all_versions
def test_federate_false_same_server_allowed(rv):
    r = Room(rv, create_content={"m.federate": False})
    r.set(r.member("@ann:a.example", "join"))
    r.allowed(r.ev("m.room.message", "@ann:a.example", {}))


# ======================================================================= membership

@all_versions
def test_member_without_membership_refused(rv):
    r = Room(rv)
    r.refused(r.ev("m.room.member", DAVE, {}, DAVE), "membership")


@all_versions
def test_member_without_state_key_refused(rv):
    r = Room(rv)
    r.refused(r.ev("m.room.member", DAVE, {"membership": "join"}), "state_key")


@all_versions
def test_join_creator_first_join_allowed(rv):
    r = Room(rv, join_rule=None, with_pl=False)
    del r.state[("m.room.member", ALICE)]
    e = r.member(ALICE, "join")
    e["prev_events"] = [r.create["event_id"]]
    r.allowed(e)


@all_versions
def test_join_non_creator_after_create_refused(rv):
    r = Room(rv, join_rule=None, with_pl=False)
    e = r.member(DAVE, "join")
    e["prev_events"] = [r.create["event_id"]]
    r.refused(e)


def test_join_first_join_uses_content_creator_v10():
    r = Room("10", join_rule=None, with_pl=False, create_content={"creator": CAROL})
    e = r.member(CAROL, "join")
    e["prev_events"] = [r.create["event_id"]]
    r.allowed(e)


@all_versions
def test_join_sender_not_state_key_refused(rv):
    r = Room(rv)
    r.refused(r.member(DAVE, "join", sender=CAROL), "sender does not match")


@all_versions
def test_join_banned_refused(rv):
    r = Room(rv)
    r.refused(r.member(EVE, "join"), "banned")


@all_versions
@pytest.mark.parametrize("rule", ["invite", "knock"])
def test_join_invite_only_invited_allowed(rv, rule):
    r = Room(rv, join_rule=rule)
    r.set(r.member(DAVE, "invite", sender=BOB))
    r.allowed(r.member(DAVE, "join"))


@all_versions
@pytest.mark.parametrize("rule", ["invite", "knock"])
def test_join_invite_only_uninvited_refused(rv, rule):
    r = Room(rv, join_rule=rule)
    r.refused(r.member(DAVE, "join"), rule)


@all_versions
def test_join_missing_join_rules_means_invite(rv):
    r = Room(rv, join_rule=None)
    r.refused(r.member(DAVE, "join"))


@all_versions
@pytest.mark.parametrize("rule", ["restricted", "knock_restricted"])
def test_join_restricted_authorised_allowed(rv, rule):
    r = Room(rv, join_rule=rule)
    r.allowed(r.member(DAVE, "join", join_authorised_via_users_server=CAROL))


@all_versions
@pytest.mark.parametrize("rule", ["restricted", "knock_restricted"])
def test_join_restricted_invited_allowed(rv, rule):
    r = Room(rv, join_rule=rule)
    r.set(r.member(DAVE, "invite", sender=BOB))
    r.allowed(r.member(DAVE, "join"))


@all_versions
def test_join_restricted_without_authoriser_refused(rv):
    r = Room(rv, join_rule="restricted")
    r.refused(r.member(DAVE, "join"), "join_authorised_via_users_server")


@all_versions
def test_join_restricted_authoriser_below_invite_level_refused(rv):
    r = Room(rv, join_rule="restricted")
    r.set(r.pl(ALICE, invite=50))
    r.refused(r.member(DAVE, "join", join_authorised_via_users_server=CAROL), "cannot invite")


@all_versions
def test_join_restricted_authoriser_not_joined_refused(rv):
    r = Room(rv, join_rule="restricted")
    r.set(r.member(CAROL, "leave"))
    r.refused(r.member(DAVE, "join", join_authorised_via_users_server=CAROL), "not joined")


@all_versions
def test_join_public_allowed(rv):
    r = Room(rv)
    r.allowed(r.member(DAVE, "join"))


@all_versions
def test_join_unknown_join_rule_refused(rv):
    r = Room(rv, join_rule="private")
    r.refused(r.member(DAVE, "join"), "does not allow")


@all_versions
def test_invite_third_party_refused(rv):
    r = Room(rv)
    r.set(r.ev("m.room.third_party_invite", BOB, {"public_key": "abc"}, "tok"))
    e = r.member(DAVE, "invite", sender=BOB,
                 third_party_invite={"display_name": "d", "signed": {"mxid": DAVE, "token": "tok",
                                                                      "signatures": {}}})
    r.refused(e, "no signature in signed matches")


@all_versions
def test_invite_allowed(rv):
    r = Room(rv)
    r.allowed(r.member(DAVE, "invite", sender=CAROL))


@all_versions
def test_invite_sender_not_joined_refused(rv):
    r = Room(rv)
    r.refused(r.member(CAROL, "invite", sender=DAVE), "sender is not joined")


@all_versions
@pytest.mark.parametrize("target", [CAROL, EVE])
def test_invite_target_joined_or_banned_refused(rv, target):
    r = Room(rv)
    r.refused(r.member(target, "invite", sender=BOB), "already")


@all_versions
def test_invite_below_invite_level_refused(rv):
    r = Room(rv)
    r.set(r.pl(ALICE, invite=50))
    r.refused(r.member(DAVE, "invite", sender=CAROL), "invite level")


@all_versions
@pytest.mark.parametrize("current", ["join", "invite", "knock"])
def test_leave_self_allowed(rv, current):
    r = Room(rv)
    r.set(r.member(DAVE, current, sender=BOB if current == "invite" else DAVE))
    r.allowed(r.member(DAVE, "leave"))


@all_versions
@pytest.mark.parametrize("who", [DAVE, EVE])
def test_leave_self_when_not_member_or_banned_refused(rv, who):
    r = Room(rv)
    r.refused(r.member(who, "leave"), "cannot leave")


@all_versions
def test_kick_allowed(rv):
    r = Room(rv)
    r.allowed(r.member(CAROL, "leave", sender=BOB))


@all_versions
def test_kick_sender_not_joined_refused(rv):
    r = Room(rv)
    r.set(r.member(BOB, "leave"))
    r.refused(r.member(CAROL, "leave", sender=BOB), "not joined")


@all_versions
def test_kick_target_not_below_sender_refused(rv):
    r = Room(rv)
    r.set(r.pl(ALICE, users={**r.default_pl()["users"], CAROL: 50}))
    r.refused(r.member(CAROL, "leave", sender=BOB), "kick")


@all_versions
def test_kick_below_kick_level_refused(rv):
    r = Room(rv)
    r.set(r.pl(ALICE, kick=75))
    r.refused(r.member(CAROL, "leave", sender=BOB), "kick")


@all_versions
def test_unban_below_ban_level_refused(rv):
    r = Room(rv)
    r.set(r.pl(ALICE, ban=75))
    r.refused(r.member(EVE, "leave", sender=BOB), "ban level")


@all_versions
def test_unban_allowed(rv):
    r = Room(rv)
    r.allowed(r.member(EVE, "leave", sender=BOB))


@all_versions
def test_ban_allowed(rv):
    r = Room(rv)
    r.allowed(r.member(CAROL, "ban", sender=BOB))


@all_versions
def test_ban_sender_not_joined_refused(rv):
    r = Room(rv)
    r.refused(r.member(CAROL, "ban", sender=DAVE), "not joined")


@all_versions
def test_ban_below_ban_level_refused(rv):
    r = Room(rv)
    r.refused(r.member(BOB, "ban", sender=CAROL), "ban")


@all_versions
def test_ban_target_equal_power_refused(rv):
    r = Room(rv)
    r.set(r.pl(ALICE, users={**r.default_pl()["users"], CAROL: 50}))
    r.refused(r.member(CAROL, "ban", sender=BOB), "ban")


@all_versions
def test_ban_of_higher_target_refused(rv):
    # Nobody below the creator can ban the creator (infinite in v12, 100 before).
    r = Room(rv)
    r.refused(r.member(ALICE, "ban", sender=BOB), "ban")


@all_versions
@pytest.mark.parametrize("rule", ["knock", "knock_restricted"])
def test_knock_allowed(rv, rule):
    r = Room(rv, join_rule=rule)
    r.allowed(r.member(DAVE, "knock"))


@all_versions
@pytest.mark.parametrize("rule", ["public", "invite", "restricted"])
def test_knock_wrong_join_rule_refused(rv, rule):
    r = Room(rv, join_rule=rule)
    r.refused(r.member(DAVE, "knock"), "knock")


@all_versions
def test_knock_sender_not_state_key_refused(rv):
    r = Room(rv, join_rule="knock")
    r.refused(r.member(DAVE, "knock", sender=CAROL), "sender does not match")


@all_versions
@pytest.mark.parametrize("who", [CAROL, EVE, "invited"])
def test_knock_when_joined_banned_or_invited_refused(rv, who):
    r = Room(rv, join_rule="knock")
    if who == "invited":
        r.set(r.member(DAVE, "invite", sender=BOB))
        who = DAVE
    r.refused(r.member(who, "knock"), "already")


@all_versions
def test_unknown_membership_refused(rv):
    r = Room(rv)
    r.refused(r.member(DAVE, "wander"), "unknown membership")


# ==================================================================== other events

@all_versions
def test_message_sender_not_joined_refused(rv):
    r = Room(rv)
    r.refused(r.ev("m.room.message", DAVE, {"body": "x"}), "not joined")


@all_versions
def test_message_allowed(rv):
    r = Room(rv)
    r.allowed(r.ev("m.room.message", CAROL, {"body": "x"}))


@all_versions
def test_third_party_invite_event_allowed(rv):
    r = Room(rv)
    r.allowed(r.ev("m.room.third_party_invite", CAROL, {"public_key": "k"}, "tok"))


@all_versions
def test_third_party_invite_event_below_invite_level_refused(rv):
    r = Room(rv)
    r.set(r.pl(ALICE, invite=50))
    r.refused(r.ev("m.room.third_party_invite", CAROL, {"public_key": "k"}, "tok"), "invite level")


@all_versions
def test_state_event_below_state_default_refused(rv):
    r = Room(rv)
    r.refused(r.ev("m.room.topic", CAROL, {"topic": "t"}, ""), "required")


@all_versions
def test_state_event_at_state_default_allowed(rv):
    r = Room(rv)
    r.allowed(r.ev("m.room.topic", BOB, {"topic": "t"}, ""))


@all_versions
def test_events_override_refused(rv):
    r = Room(rv)
    r.set(r.pl(ALICE, events={"m.room.message": 10}))
    r.refused(r.ev("m.room.message", CAROL, {}), "required")


@all_versions
def test_events_default_refused(rv):
    r = Room(rv)
    r.set(r.pl(ALICE, events_default=1))
    r.refused(r.ev("m.room.message", CAROL, {}), "required")


@all_versions
def test_redaction_is_ordinary_allowed(rv):
    r = Room(rv)
    r.allowed(r.ev("m.room.redaction", CAROL, {"redacts": "$x"}, redacts="$x"))


@all_versions
def test_redaction_with_events_level_refused(rv):
    r = Room(rv)
    r.set(r.pl(ALICE, events={"m.room.redaction": 50}))
    r.refused(r.ev("m.room.redaction", CAROL, {"redacts": "$x"}), "required")


@all_versions
def test_state_key_user_id_of_other_refused(rv):
    r = Room(rv)
    r.refused(r.ev("m.custom", BOB, {}, CAROL), "state_key")


@all_versions
def test_state_key_own_user_id_allowed(rv):
    r = Room(rv)
    r.allowed(r.ev("m.custom", BOB, {}, BOB))


@all_versions
def test_no_power_levels_creator_can_send_state(rv):
    r = Room(rv, with_pl=False)
    r.allowed(r.ev("m.room.name", ALICE, {"name": "n"}, ""))


@all_versions
def test_no_power_levels_others_cannot_send_state(rv):
    r = Room(rv, with_pl=False)
    r.refused(r.ev("m.room.name", CAROL, {"name": "n"}, ""), "required")


# ==================================================================== power levels

@all_versions
@pytest.mark.parametrize("field", ["users_default", "events_default", "state_default", "ban",
                                   "redact", "kick", "invite"])
@pytest.mark.parametrize("bad", ["50", True, 50.0])
def test_pl_non_integer_level_refused(rv, field, bad):
    r = Room(rv)
    r.refused(r.pl(ALICE, **{field: bad}), "integer")


@all_versions
@pytest.mark.parametrize("field", ["events", "notifications"])
@pytest.mark.parametrize("bad", [{"m.room.name": "50"}, {"x": True}, [50]])
def test_pl_events_notifications_not_integers_refused(rv, field, bad):
    r = Room(rv)
    r.refused(r.pl(ALICE, **{field: bad}), field)


@all_versions
def test_pl_notifications_integers_allowed(rv):
    r = Room(rv)
    r.allowed(r.pl(ALICE, notifications={"room": 50}))


@all_versions
@pytest.mark.parametrize("users", [{"not-a-user": 10}, {CAROL: "10"}, {CAROL: False}, ["x"]])
def test_pl_bad_users_refused(rv, users):
    r = Room(rv)
    r.refused(r.pl(ALICE, users=users), "users|user ID|integer")


def test_pl_creator_in_users_refused_v12():
    r = Room("12")
    r.refused(r.pl(ALICE, users={ALICE: 100, BOB: 50}), "creator")


def test_pl_additional_creator_in_users_refused_v12():
    r = Room("12", create_content={"additional_creators": [CAROL]})
    r.refused(r.pl(ALICE, users={BOB: 50, CAROL: 10}), "creator")


def test_pl_creator_in_users_first_pl_refused_v12():
    r = Room("12", with_pl=False)
    r.refused(r.pl(ALICE, users={ALICE: 100}), "creator")


@pytest.mark.parametrize("rv", ["10", "11"])
def test_pl_creator_in_users_allowed_before_v12(rv):
    r = Room(rv)
    r.allowed(r.pl(ALICE))


@all_versions
def test_pl_first_allowed(rv):
    r = Room(rv, with_pl=False)
    r.allowed(r.pl(ALICE))


@all_versions
def test_pl_raise_level_above_own_refused(rv):
    r = Room(rv)
    r.set(r.pl(ALICE, events={"m.room.power_levels": 50}))
    r.refused(r.pl(BOB, events={"m.room.power_levels": 50}, ban=60), "ban")


@all_versions
def test_pl_change_level_above_own_refused(rv):
    r = Room(rv)
    r.set(r.pl(ALICE, events={"m.room.power_levels": 50}, kick=75))
    r.refused(r.pl(BOB, events={"m.room.power_levels": 50}, kick=40), "kick")


@all_versions
def test_pl_remove_level_above_own_refused(rv):
    r = Room(rv)
    r.set(r.pl(ALICE, events={"m.room.power_levels": 50}, kick=75))
    c = r.default_pl()
    c["events"] = {"m.room.power_levels": 50}
    del c["kick"]
    r.refused(r.ev("m.room.power_levels", BOB, c, ""), "kick")


@all_versions
def test_pl_change_level_within_own_allowed(rv):
    r = Room(rv)
    r.set(r.pl(ALICE, events={"m.room.power_levels": 50}))
    r.allowed(r.pl(BOB, events={"m.room.power_levels": 50}, kick=40))


@all_versions
def test_pl_events_entry_added_above_own_refused(rv):
    r = Room(rv)
    r.set(r.pl(ALICE, events={"m.room.power_levels": 50}))
    r.refused(r.pl(BOB, events={"m.room.power_levels": 50, "m.room.topic": 60}), "events")


@all_versions
def test_pl_events_entry_changed_from_above_own_refused(rv):
    r = Room(rv)
    r.set(r.pl(ALICE, events={"m.room.power_levels": 50, "m.room.topic": 60}))
    r.refused(r.pl(BOB, events={"m.room.power_levels": 50, "m.room.topic": 10}), "events")


@all_versions
def test_pl_events_entry_removed_above_own_refused(rv):
    r = Room(rv)
    r.set(r.pl(ALICE, events={"m.room.power_levels": 50, "m.room.topic": 60}))
    r.refused(r.pl(BOB, events={"m.room.power_levels": 50}), "events")


@all_versions
def test_pl_notifications_entry_above_own_refused(rv):
    r = Room(rv)
    r.set(r.pl(ALICE, events={"m.room.power_levels": 50}))
    r.refused(r.pl(BOB, events={"m.room.power_levels": 50}, notifications={"room": 60}), "notifications")


@all_versions
def test_pl_events_entry_within_own_allowed(rv):
    r = Room(rv)
    r.set(r.pl(ALICE, events={"m.room.power_levels": 50}))
    r.allowed(r.pl(BOB, events={"m.room.power_levels": 50, "m.room.topic": 50}))


@all_versions
def test_pl_demote_peer_refused(rv):
    r = Room(rv)
    users = {**r.default_pl()["users"], CAROL: 50}
    r.set(r.pl(ALICE, users=users, events={"m.room.power_levels": 50}))
    r.refused(r.pl(BOB, users={**users, CAROL: 0}, events={"m.room.power_levels": 50}), "users|level of")


@all_versions
def test_pl_demote_self_allowed(rv):
    r = Room(rv)
    r.set(r.pl(ALICE, events={"m.room.power_levels": 50}))
    users = {**r.default_pl()["users"], BOB: 10}
    r.allowed(r.pl(BOB, users=users, events={"m.room.power_levels": 50}))


@all_versions
def test_pl_promote_above_own_refused(rv):
    r = Room(rv)
    r.set(r.pl(ALICE, events={"m.room.power_levels": 50}))
    users = {**r.default_pl()["users"], CAROL: 60}
    r.refused(r.pl(BOB, users=users, events={"m.room.power_levels": 50}), "above your own")


@all_versions
def test_pl_promote_to_own_level_allowed(rv):
    r = Room(rv)
    r.set(r.pl(ALICE, events={"m.room.power_levels": 50}))
    users = {**r.default_pl()["users"], CAROL: 50}
    r.allowed(r.pl(BOB, users=users, events={"m.room.power_levels": 50}))


@all_versions
def test_pl_remove_lower_user_allowed(rv):
    r = Room(rv)
    users = {**r.default_pl()["users"], CAROL: 10}
    r.set(r.pl(ALICE, users=users, events={"m.room.power_levels": 50}))
    r.allowed(r.pl(BOB, events={"m.room.power_levels": 50}))


@all_versions
def test_pl_sender_below_pl_event_level_refused(rv):
    r = Room(rv)
    r.refused(r.pl(BOB), "required")


def test_pl_v12_creator_infinite_power_allowed():
    r = Room("12")
    r.allowed(r.pl(ALICE, users={BOB: 1000000}, ban=999999))


def test_pl_v12_additional_creator_infinite_power_allowed():
    r = Room("12", create_content={"additional_creators": [CAROL]})
    r.set(r.pl(ALICE, users={BOB: 50}))
    r.allowed(r.ev("m.room.power_levels", CAROL, {"users": {BOB: 9000}}, ""))


# ========================================================================== helpers

@all_versions
def test_user_power_level_helper(rv):
    r = Room(rv)
    assert get_user_power_level(BOB, r.state, rv, r.create) == 50
    assert get_user_power_level(CAROL, r.state, rv, r.create) == 0
    expected_alice = float("inf") if rv == "12" else 100
    assert get_user_power_level(ALICE, r.state, rv, r.create) == expected_alice


@all_versions
def test_user_power_level_users_default(rv):
    r = Room(rv)
    r.set(r.pl(ALICE, users_default=7))
    assert get_user_power_level(DAVE, r.state, rv, r.create) == 7


@all_versions
def test_user_power_level_without_power_levels(rv):
    r = Room(rv, with_pl=False)
    assert get_user_power_level(ALICE, r.state, rv, r.create) == (float("inf") if rv == "12" else 100)
    assert get_user_power_level(BOB, r.state, rv, r.create) == 0


def test_user_power_level_additional_creators_v12():
    r = Room("12", create_content={"additional_creators": [CAROL]})
    assert get_user_power_level(CAROL, r.state, "12", r.create) == float("inf")


@pytest.mark.parametrize("rv", ["10", "11"])
def test_additional_creators_have_no_meaning_before_v12(rv):
    r = Room(rv, create_content={"additional_creators": [CAROL]})
    assert get_user_power_level(CAROL, r.state, rv, r.create) == 0


def test_v11_creator_is_create_sender_not_content_creator():
    r = Room("11", with_pl=False, create_content={"creator": CAROL})
    assert get_user_power_level(ALICE, r.state, "11", r.create) == 100
    assert get_user_power_level(CAROL, r.state, "11", r.create) == 0


def test_v10_creator_is_content_creator():
    r = Room("10", with_pl=False, create_content={"creator": CAROL})
    assert get_user_power_level(CAROL, r.state, "10", r.create) == 100
    assert get_user_power_level(ALICE, r.state, "10", r.create) == 0


@all_versions
def test_required_level_defaults(rv):
    assert get_required_power_level("m.room.topic", True, {}, rv) == 50
    assert get_required_power_level("m.room.message", False, {}, rv) == 0
    assert get_named_level("invite", {}) == 0
    assert get_named_level("kick", {}) == 50
    assert get_named_level("ban", {}) == 50
    assert get_named_level("redact", {}) == 50


@all_versions
def test_required_level_from_events(rv):
    r = Room(rv)
    assert get_required_power_level("m.room.name", True, r.state, rv) == 50
    assert get_required_power_level("m.room.power_levels", True, r.state, rv) == 100


def test_unsupported_room_version_refused():
    r = Room("11")
    with pytest.raises(AuthError, match="unsupported"):
        check_auth(r.ev("m.room.message", CAROL, {}), r.state, "9")


# ============================================ third-party invites (v10-v12 rule 4.4.1)

def _tpi_room(rv: str, key_content=None, sender: str = BOB, token: str = "tok"):
    """A room with an m.room.third_party_invite (by `sender`, state_key `token`) whose
    public key is the identity server's; returns (room, identity server key)."""
    from shared.crypto import SigningKey
    key = SigningKey.generate("0")
    r = Room(rv)
    content = key_content(key) if key_content else {"display_name": "d***@e.example",
                                                   "public_key": key.public_key_base64}
    r.set(r.ev("m.room.third_party_invite", sender, content, token))
    return r, key


def _tpi_invite(r: Room, key, *, target: str = DAVE, sender: str = BOB, signed: dict | None = None,
                sign_as: str = "id.example", after_signing=None) -> dict:
    from shared.crypto import sign_json
    signed = dict(signed if signed is not None else {"mxid": target, "token": "tok"})
    if key is not None:
        sign_json(signed, sign_as, key)
    if after_signing:
        after_signing(signed)
    return r.member(target, "invite", sender=sender,
                    third_party_invite={"display_name": "d***@e.example", "signed": signed})


@all_versions
def test_third_party_invite_signed_by_public_key_allowed(rv):
    r, key = _tpi_room(rv)
    r.allowed(_tpi_invite(r, key))


@all_versions
def test_third_party_invite_key_in_public_keys_urlsafe_allowed(rv):
    """The key may be listed only in public_keys, and in URL-safe base64."""
    from shared.crypto import encode_base64
    r, key = _tpi_room(rv, lambda k: {"public_key": encode_base64(b"\x01" * 32),
                                      "public_keys": [{"public_key": "not base64!"},
                                                      {"public_key": encode_base64(bytes(k.verify_key),
                                                                                   urlsafe=True)}]})
    r.allowed(_tpi_invite(r, key))


@all_versions
def test_third_party_invite_skips_the_ordinary_invite_rules(rv):
    """The third-party path replaces the ordinary invite rules: the invite level does not
    apply to the member event (it applied to the m.room.third_party_invite)."""
    r, key = _tpi_room(rv, sender=CAROL)
    r.set(r.ev("m.room.power_levels", ALICE, dict(r.default_pl(), invite=50), ""))
    r.allowed(_tpi_invite(r, key, sender=CAROL))


@all_versions
@pytest.mark.parametrize("case, match", [
    ("target banned", "target is banned"),
    ("no signed", "no signed object"),
    ("third_party_invite not an object", "no signed object"),
    ("no token", "no mxid or token"),
    ("no mxid", "no mxid or token"),
    ("mxid is not the state_key", "mxid is not the state_key"),
    ("no m.room.third_party_invite for the token", "no m.room.third_party_invite"),
    ("sender did not send the m.room.third_party_invite", "did not send"),
    ("signed by another key", "no signature in signed matches"),
    ("signed block altered after signing", "no signature in signed matches"),
    ("signature key is not ed25519", "no signature in signed matches"),
    ("no signatures", "no signature in signed matches"),
    ("m.room.third_party_invite has no public key", "no signature in signed matches"),
])
def test_third_party_invite_refused(rv, case, match):
    from shared.crypto import SigningKey
    r, key = _tpi_room(rv)
    if case == "target banned":
        e = _tpi_invite(r, key, target=EVE)
    elif case == "no signed":
        e = r.member(DAVE, "invite", sender=BOB, third_party_invite={"display_name": "d"})
    elif case == "third_party_invite not an object":
        e = r.member(DAVE, "invite", sender=BOB, third_party_invite="tok")
    elif case == "no token":
        e = _tpi_invite(r, key, signed={"mxid": DAVE})
    elif case == "no mxid":
        e = _tpi_invite(r, key, signed={"token": "tok"})
    elif case == "mxid is not the state_key":
        e = _tpi_invite(r, key, signed={"mxid": CAROL, "token": "tok"})
    elif case == "no m.room.third_party_invite for the token":
        e = _tpi_invite(r, key, signed={"mxid": DAVE, "token": "other"})
    elif case == "sender did not send the m.room.third_party_invite":
        e = _tpi_invite(r, key, sender=CAROL)
    elif case == "signed by another key":
        e = _tpi_invite(r, SigningKey.generate("0"))
    elif case == "signed block altered after signing":
        e = _tpi_invite(r, key, after_signing=lambda s: s.__setitem__("extra", "x"))
    elif case == "signature key is not ed25519":
        def rename(s):
            s["signatures"]["id.example"] = {"curve25519:0": s["signatures"]["id.example"]["ed25519:0"]}
        e = _tpi_invite(r, key, after_signing=rename)
    elif case == "no signatures":
        e = _tpi_invite(r, None)
    else:
        r, key = _tpi_room(rv, lambda k: {"display_name": "d"})
        e = _tpi_invite(r, key)
    r.refused(e, match)


@all_versions
def test_third_party_invite_auth_events_may_cite_the_token_event(rv):
    """The token's m.room.third_party_invite is a valid auth event of the invite."""
    r, key = _tpi_room(rv)
    e = _tpi_invite(r, key)
    auth = [r.state[k] for k in auth_types_for_event(e, rv) if k in r.state]
    assert ("m.room.third_party_invite", "tok") in [(a["type"], a["state_key"]) for a in auth]
    e["auth_events"] = [a["event_id"] for a in auth]
    check_auth_events_list(e, auth, rv, r.create)
    check_auth(e, {(a["type"], a["state_key"]): a for a in auth}, rv, r.create)


# ================================================== historical user IDs (issue #12.2, #12.8)

@pytest.mark.parametrize("uid", ["@élodie:b.example", "@john doe:b.example", "@:b.example"])
def test_additional_creators_may_be_historical_user_ids_v12(uid):
    e = _create("12")
    e["content"]["additional_creators"] = [uid]
    check_auth(e, {}, "12")


@all_versions
@pytest.mark.parametrize("uid", ["@élodie:b.example", "@john doe:b.example", "@:b.example"])
def test_power_levels_naming_historical_user_ids_allowed(rv, uid):
    r = Room(rv)
    users = dict(r.default_pl()["users"], **{uid: 10})
    r.allowed(r.pl(ALICE, users=users))


@all_versions
@pytest.mark.parametrize("uid", ["@bob:exa mple.org", "@bob", "bob:b.example", "@a\x00:b.example"])
def test_power_levels_naming_invalid_user_ids_refused(rv, uid):
    r = Room(rv)
    users = dict(r.default_pl()["users"], **{uid: 10})
    r.refused(r.pl(ALICE, users=users), match="valid user ID")


@all_versions
def test_historical_sender_joins_a_public_room(rv):
    r = Room(rv)
    r.allowed(r.member("@élodie:d.example", "join"))
