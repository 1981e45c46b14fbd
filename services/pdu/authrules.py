"""Authorisation rules for room versions 10, 11 and 12 (pure functions, no I/O).

Events are plain dicts that carry an ``event_id`` key. A *state map* given to these
functions maps ``(type, state_key)`` to an event dict.

Public API
----------
- :class:`AuthError` -- raised when an event is refused; the message names the rule.
- :func:`auth_types_for_event` -- the auth-events selection (which state keys an event cites).
- :func:`check_auth_events_list` -- the rule about the event's own ``auth_events`` list
  (v10/v11 rule 2, v12 rule 3).
- :func:`check_auth` -- every other rule, evaluated against a state map.
- :func:`get_user_power_level`, :func:`get_required_power_level`, :func:`get_named_level`,
  :func:`room_creators` -- helpers shared with state resolution.

What the caller is responsible for
----------------------------------
- Signatures. In particular the rule "if ``content.join_authorised_via_users_server`` is
  present the event must be validly signed by that user's server" is *not* checked here
  (this module never sees keys): the receipt pipeline must verify that signature before
  calling :func:`check_auth`. Here a restricted join is allowed when the authorising user
  is joined and has a power level >= the invite level.
- Rejection. :func:`check_auth_events_list` refuses auth events that carry
  ``"rejected": True``, but callers are expected to pass only the non-rejected auth events
  they hold; any id listed in ``event["auth_events"]`` that is not supplied is treated as
  missing-or-rejected and refused.
- v12: the create event is not in ``auth_events``. The caller passes the room's
  create event (the accepted event whose id is ``"$" + room_id[1:]``) as ``create_event``.
  :func:`check_auth` refuses events whose ``room_id`` is not ``"!" + create_event_id[1:]``.
- Third-party invites (``content.third_party_invite``) are checked here in full: the
  ``signed`` block's ed25519 signature is verified against the public keys of the room's
  ``m.room.third_party_invite`` event (pure crypto on data in hand, no key fetching).
  Whether the identity server has since revoked a key (``key_validity_url``) is not asked.
"""
from __future__ import annotations

from typing import Any, Mapping

from shared.events import is_valid_federation_user_id

from shared.crypto import verify_json_signature, verify_key_from_base64

__all__ = [
    "AuthError",
    "SUPPORTED_ROOM_VERSIONS",
    "KNOWN_ROOM_VERSIONS",
    "auth_types_for_event",
    "check_auth",
    "check_auth_events_list",
    "get_user_power_level",
    "get_required_power_level",
    "get_named_level",
    "room_creators",
    "find_create_event",
    "is_valid_user_id",
]

CREATE = "m.room.create"
MEMBER = "m.room.member"
POWER_LEVELS = "m.room.power_levels"
JOIN_RULES = "m.room.join_rules"
THIRD_PARTY_INVITE = "m.room.third_party_invite"

CREATE_KEY = (CREATE, "")
PL_KEY = (POWER_LEVELS, "")
JR_KEY = (JOIN_RULES, "")

SUPPORTED_ROOM_VERSIONS = frozenset({"10", "11", "12"})
# Versions a create event may name (content.room_version) without being refused.
KNOWN_ROOM_VERSIONS = frozenset(str(i) for i in range(1, 13))

# Top-level power-level properties that must be integers and whose changes are checked.
_LEVEL_KEYS = ("users_default", "events_default", "state_default", "ban", "redact", "kick", "invite")
_NAMED_DEFAULTS = {"invite": 0, "kick": 50, "ban": 50, "redact": 50}

INFINITE = float("inf")
MAX_THIRD_PARTY_CHECKS = 64     # (signature, public key) pairs a third-party invite may cost


class AuthError(Exception):
    """An event is not allowed by the authorisation rules; the message says which rule."""


# --------------------------------------------------------------------------- helpers

class _Rules:
    __slots__ = ("version", "creator_in_content", "privileged_creators", "create_in_auth_events")

    def __init__(self, version: str):
        self.version = version
        self.creator_in_content = version == "10"        # v10: content.creator
        self.privileged_creators = version == "12"       # v12: infinite PL, room_id = create id
        self.create_in_auth_events = version != "12"


def _rules(room_version: str) -> _Rules:
    if room_version not in SUPPORTED_ROOM_VERSIONS:
        raise AuthError(f"unsupported room version {room_version!r}")
    return _Rules(room_version)


def _is_int(value: Any) -> bool:
    """A real JSON integer (bools are not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _as_int(value: Any, default: int) -> int:
    """Lenient reading of a stored level (already validated when its event was accepted)."""
    if _is_int(value):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return default
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return default


def _domain(identifier: Any) -> str | None:
    if not isinstance(identifier, str) or ":" not in identifier:
        return None
    return identifier.split(":", 1)[1]


def is_valid_user_id(user_id: Any) -> bool:
    """A user ID as received over federation (historical grammar included: any localpart
    but ':' and NUL, possibly empty) with a valid server name, at most 255 bytes."""
    return is_valid_federation_user_id(user_id)


def _content(event: Mapping | None) -> dict:
    if not event:
        return {}
    c = event.get("content")
    return c if isinstance(c, dict) else {}


def _membership(auth_state: Mapping, user_id: Any) -> str:
    """Current membership of `user_id` in `auth_state` ("leave" when there is none)."""
    if not isinstance(user_id, str):
        return "leave"
    ev = auth_state.get((MEMBER, user_id))
    m = _content(ev).get("membership")
    return m if isinstance(m, str) else "leave"


def find_create_event(auth_state: Mapping, room_version: str,
                      create_event: dict | None = None) -> dict | None:
    """The create event to use: for v12 the `create_event` argument (falling back to the
    state map), for v10/v11 the state map's create event (falling back to the argument)."""
    in_state = auth_state.get(CREATE_KEY)
    if room_version == "12":
        return create_event if create_event is not None else in_state
    return in_state if in_state is not None else create_event


def _creator(create: dict | None, rules: _Rules) -> str | None:
    if not create:
        return None
    if rules.creator_in_content:
        c = _content(create).get("creator")
        return c if isinstance(c, str) else None
    s = create.get("sender")
    return s if isinstance(s, str) else None


def room_creators(create_event: dict | None, room_version: str) -> set[str]:
    """The room's creators: v12 create sender + content.additional_creators; v11 create sender;
    v10 content.creator."""
    rules = _Rules(room_version)
    out: set[str] = set()
    c = _creator(create_event, rules)
    if c:
        out.add(c)
    if rules.privileged_creators and create_event:
        extra = _content(create_event).get("additional_creators")
        if isinstance(extra, list):
            out.update(u for u in extra if isinstance(u, str))
    return out


def get_user_power_level(user_id: str, auth_state: Mapping, room_version: str,
                         create_event: dict | None = None) -> int | float:
    """Power level of `user_id`: ``inf`` for v12 creators; else ``users[user]`` →
    ``users_default`` → 0 when a power-levels event exists; without one the creator has 100
    and everybody else 0."""
    create = find_create_event(auth_state, room_version, create_event)
    rules = _Rules(room_version)
    if rules.privileged_creators and user_id in room_creators(create, room_version):
        return INFINITE
    pl = auth_state.get(PL_KEY)
    if pl is not None:
        content = _content(pl)
        users = content.get("users")
        if isinstance(users, dict) and user_id in users:
            return _as_int(users[user_id], 0)
        return _as_int(content.get("users_default", 0), 0)
    if user_id is not None and user_id == _creator(create, rules):
        return 100
    return 0


def get_required_power_level(event_type: str, is_state: bool, auth_state: Mapping,
                             room_version: str | None = None) -> int:
    """Level required to send an event of `event_type`: ``events[type]``, else
    ``state_default`` (50) for state events or ``events_default`` (0) otherwise; the same
    defaults apply when there is no power-levels event."""
    content = _content(auth_state.get(PL_KEY))
    events = content.get("events")
    if isinstance(events, dict) and event_type in events:
        return _as_int(events[event_type], 50 if is_state else 0)
    if is_state:
        return _as_int(content.get("state_default", 50), 50)
    return _as_int(content.get("events_default", 0), 0)


def get_named_level(name: str, auth_state: Mapping) -> int:
    """``invite`` (default 0), ``kick``/``ban``/``redact`` (default 50)."""
    default = _NAMED_DEFAULTS[name]
    return _as_int(_content(auth_state.get(PL_KEY)).get(name, default), default)


# ------------------------------------------------------------ auth events selection

def auth_types_for_event(event: dict, room_version: str) -> list[tuple[str, str]]:
    """The (type, state_key) pairs the auth-events selection picks for `event`.

    Create events pick nothing. Otherwise: the create event (v10/v11 only; never in v12),
    the power levels, the sender's membership; for membership events also the target's
    membership, the join rules (join/invite/knock), the third-party-invite token (invites
    with ``third_party_invite.signed.token``) and the authorising user's membership (joins
    with ``join_authorised_via_users_server``)."""
    if event.get("type") == CREATE:
        return []
    keys: list[tuple[str, str]] = []
    if room_version != "12":
        keys.append(CREATE_KEY)
    keys.append(PL_KEY)
    sender = event.get("sender")
    if isinstance(sender, str):
        keys.append((MEMBER, sender))
    if event.get("type") == MEMBER:
        content = _content(event)
        membership = content.get("membership")
        state_key = event.get("state_key")
        if isinstance(state_key, str):
            keys.append((MEMBER, state_key))
        if membership in ("join", "invite", "knock"):
            keys.append(JR_KEY)
        if membership == "invite":
            tpi = content.get("third_party_invite")
            signed = tpi.get("signed") if isinstance(tpi, dict) else None
            token = signed.get("token") if isinstance(signed, dict) else None
            if isinstance(token, str):
                keys.append((THIRD_PARTY_INVITE, token))
        if membership == "join":
            via = content.get("join_authorised_via_users_server")
            if isinstance(via, str):
                keys.append((MEMBER, via))
    out: list[tuple[str, str]] = []
    for k in keys:
        if k not in out:
            out.append(k)
    return out


def check_auth_events_list(event: dict, auth_events: list[dict], room_version: str,
                           create_event: dict | None = None) -> None:
    """The rule about the event's own ``auth_events`` (v10/v11 rule 2, v12 rule 3).

    `auth_events` are the events the caller holds for ``event["auth_events"]``; pass only
    non-rejected ones. Refuses: duplicate (type, state_key) pairs; entries the auth-events
    selection would not pick (in v12 that includes any create event); entries marked
    ``"rejected": True``; ids listed by the event that were not supplied (missing or
    rejected); supplied events the event does not list; (v10/v11) no create event;
    entries whose ``room_id`` differs from the event's. Create events are exempt.
    `create_event` is accepted for symmetry with :func:`check_auth` and is unused."""
    rules = _rules(room_version)
    if event.get("type") == CREATE:
        return
    listed = event.get("auth_events")
    listed = list(listed) if isinstance(listed, list) else []
    if len(set(listed)) != len(listed):
        raise AuthError("auth_events: the same event is listed twice")
    allowed = set(auth_types_for_event(event, room_version))
    seen: set[tuple[str, str]] = set()
    supplied: set[str] = set()
    room_id = event.get("room_id")
    has_create = False
    for a in auth_events:
        aid = a.get("event_id")
        if aid not in listed:
            raise AuthError(f"auth_events: {aid} is not listed in the event's auth_events")
        if aid in supplied:
            raise AuthError(f"auth_events: {aid} supplied twice")
        supplied.add(aid)
        key = (a.get("type"), a.get("state_key"))
        if key in seen:
            raise AuthError(f"auth_events: duplicate entry for {key}")
        seen.add(key)
        if a.get("rejected"):
            raise AuthError(f"auth_events: {aid} was rejected")
        if key not in allowed:
            if key == CREATE_KEY and not rules.create_in_auth_events:
                raise AuthError("auth_events: the create event must not be listed in this room version")
            raise AuthError(f"auth_events: unexpected entry {key} ({aid})")
        if key == CREATE_KEY:
            has_create = True
        if a.get("room_id") != room_id:
            raise AuthError(f"auth_events: {aid} belongs to another room")
    missing = [aid for aid in listed if aid not in supplied]
    if missing:
        raise AuthError(f"auth_events: {missing[0]} is missing or rejected")
    if rules.create_in_auth_events and not has_create:
        raise AuthError("auth_events: no m.room.create event")


# --------------------------------------------------------------------- the rules

def check_auth(event: dict, auth_state: Mapping[tuple[str, str], dict], room_version: str,
               create_event: dict | None = None) -> None:
    """Raise :class:`AuthError` unless `event` is allowed against `auth_state`.

    `auth_state` maps (type, state_key) to event dicts: either the event's auth events or
    the room state to check against. For v12 pass the room's create event as
    `create_event` (it is not among auth events); for v10/v11 it is looked up in
    `auth_state` (the argument is a fallback). The ``auth_events`` list itself is checked
    by :func:`check_auth_events_list`, and signatures (including that of
    ``join_authorised_via_users_server``) by the caller."""
    rules = _rules(room_version)
    etype = event.get("type")
    sender = event.get("sender")
    content = _content(event)

    # Rule 1: m.room.create
    if etype == CREATE:
        _check_create(event, content, rules)
        return

    create = find_create_event(auth_state, room_version, create_event)
    if create is None or create.get("type") != CREATE:
        raise AuthError("no m.room.create event")

    # v12 rule 2: the room ID is the create event's ID with the sigil '!'.
    if rules.privileged_creators:
        cid = create.get("event_id")
        if not isinstance(cid, str) or event.get("room_id") != "!" + cid[1:]:
            raise AuthError("room_id is not the ID of the room's m.room.create event")

    # m.federate
    if _content(create).get("m.federate", True) is False and _domain(sender) != _domain(create.get("sender")):
        raise AuthError("m.federate is false and the sender is not on the creator's server")

    sender_pl = get_user_power_level(sender, auth_state, room_version, create)

    # m.room.member
    if etype == MEMBER:
        _check_member(event, content, auth_state, rules, create, sender_pl)
        return

    # Sender must be joined.
    if _membership(auth_state, sender) != "join":
        raise AuthError(f"sender {sender} is not joined to the room")

    # m.room.third_party_invite
    if etype == THIRD_PARTY_INVITE:
        if sender_pl >= get_named_level("invite", auth_state):
            return
        raise AuthError("sender's power level is below the invite level (m.room.third_party_invite)")

    state_key = event.get("state_key")
    is_state = state_key is not None
    required = get_required_power_level(etype, is_state, auth_state, room_version)
    if required > sender_pl:
        raise AuthError(f"sender's power level {sender_pl} is below the {required} required for {etype}")

    if isinstance(state_key, str) and state_key.startswith("@") and state_key != sender:
        raise AuthError("state_key starting with '@' must be the sender")

    if etype == POWER_LEVELS:
        _check_power_levels(event, content, auth_state, rules, create, sender_pl)


def _check_create(event: dict, content: dict, rules: _Rules) -> None:
    if event.get("prev_events"):
        raise AuthError("m.room.create must not have prev_events")
    if rules.privileged_creators:
        if "room_id" in event:
            raise AuthError("m.room.create must not have a room_id in this room version")
    else:
        if _domain(event.get("room_id")) is None or _domain(event.get("room_id")) != _domain(event.get("sender")):
            raise AuthError("m.room.create: room_id domain does not match the sender's domain")
    if "room_version" in content and not (isinstance(content["room_version"], str)
                                          and content["room_version"] in KNOWN_ROOM_VERSIONS):
        raise AuthError(f"m.room.create: unknown room_version {content['room_version']!r}")
    if rules.creator_in_content and "creator" not in content:
        raise AuthError("m.room.create: content has no creator")
    if rules.privileged_creators and "additional_creators" in content:
        extra = content["additional_creators"]
        if not isinstance(extra, list) or not all(is_valid_user_id(u) for u in extra):
            raise AuthError("m.room.create: additional_creators must be a list of user IDs")


def _check_member(event: dict, content: dict, auth_state: Mapping, rules: _Rules,
                  create: dict, sender_pl: int | float) -> None:
    sender = event.get("sender")
    target = event.get("state_key")
    membership = content.get("membership")
    if not isinstance(target, str) or membership is None:
        raise AuthError("m.room.member without state_key or membership")
    # join_authorised_via_users_server signature: verified by the caller (see module doc).

    rv = rules.version
    target_membership = _membership(auth_state, target)
    sender_membership = _membership(auth_state, sender)
    jr = _content(auth_state.get(JR_KEY)).get("join_rule", "invite")

    if membership == "join":
        prev = event.get("prev_events")
        if (isinstance(prev, list) and len(prev) == 1 and prev[0] == create.get("event_id")
                and target == _creator(create, rules)):
            return
        if sender != target:
            raise AuthError("join: sender does not match state_key")
        if sender_membership == "ban":
            raise AuthError("join: sender is banned")
        if jr in ("invite", "knock"):
            if target_membership in ("invite", "join"):
                return
            raise AuthError(f"join: join rule is {jr} and the user is not invited")
        if jr in ("restricted", "knock_restricted"):
            if target_membership in ("join", "invite"):
                return
            via = content.get("join_authorised_via_users_server")
            if not isinstance(via, str):
                raise AuthError(f"join: join rule is {jr} and no join_authorised_via_users_server")
            if _membership(auth_state, via) != "join":
                raise AuthError("join: join_authorised_via_users_server is not joined to the room")
            if get_user_power_level(via, auth_state, rv, create) < get_named_level("invite", auth_state):
                raise AuthError("join: join_authorised_via_users_server cannot invite")
            return
        if jr == "public":
            return
        raise AuthError(f"join: join rule {jr!r} does not allow joining")

    if membership == "invite":
        if "third_party_invite" in content:
            _check_third_party_invite(event, content, auth_state, target_membership)
            return
        if sender_membership != "join":
            raise AuthError("invite: sender is not joined to the room")
        if target_membership in ("join", "ban"):
            raise AuthError(f"invite: target is already {target_membership}")
        if sender_pl >= get_named_level("invite", auth_state):
            return
        raise AuthError("invite: sender's power level is below the invite level")

    if membership == "leave":
        if sender == target:
            if target_membership in ("invite", "join", "knock"):
                return
            raise AuthError(f"leave: cannot leave from membership {target_membership}")
        if sender_membership != "join":
            raise AuthError("leave (kick): sender is not joined to the room")
        target_pl = get_user_power_level(target, auth_state, rv, create)
        if target_membership == "ban" and sender_pl < get_named_level("ban", auth_state):
            raise AuthError("unban: sender's power level is below the ban level")
        if sender_pl >= get_named_level("kick", auth_state) and target_pl < sender_pl:
            return
        raise AuthError("kick: sender's power level is below the kick level or not above the target's")

    if membership == "ban":
        if sender_membership != "join":
            raise AuthError("ban: sender is not joined to the room")
        target_pl = get_user_power_level(target, auth_state, rv, create)
        if sender_pl >= get_named_level("ban", auth_state) and target_pl < sender_pl:
            return
        raise AuthError("ban: sender's power level is below the ban level or not above the target's")

    if membership == "knock":
        if jr not in ("knock", "knock_restricted"):
            raise AuthError(f"knock: join rule {jr!r} does not allow knocking")
        if sender != target:
            raise AuthError("knock: sender does not match state_key")
        if sender_membership not in ("ban", "invite", "join"):
            return
        raise AuthError(f"knock: sender is already {sender_membership}")

    raise AuthError(f"unknown membership {membership!r}")


def _check_third_party_invite(event: dict, content: dict, auth_state: Mapping,
                              target_membership: str) -> None:
    """v10-v12 rule 4.4.1: an invite carrying ``third_party_invite`` is allowed iff the
    target is not banned, ``signed`` has ``mxid`` (= state_key) and ``token``, the room has
    an ``m.room.third_party_invite`` with that token as state_key sent by this sender, and
    one of its public keys verifies a signature in ``signed``."""
    if target_membership == "ban":
        raise AuthError("third-party invite: target is banned")
    tpi = content.get("third_party_invite")
    signed = tpi.get("signed") if isinstance(tpi, dict) else None
    if not isinstance(signed, dict):
        raise AuthError("third-party invite: no signed object")
    mxid, token = signed.get("mxid"), signed.get("token")
    if not isinstance(mxid, str) or not isinstance(token, str):
        raise AuthError("third-party invite: signed has no mxid or token")
    if mxid != event.get("state_key"):
        raise AuthError("third-party invite: signed.mxid is not the state_key")
    invite_event = auth_state.get((THIRD_PARTY_INVITE, token))
    if invite_event is None:
        raise AuthError("third-party invite: no m.room.third_party_invite for that token")
    if invite_event.get("sender") != event.get("sender"):
        raise AuthError("third-party invite: sender did not send the m.room.third_party_invite")
    if not _signed_by_any(signed, _third_party_public_keys(_content(invite_event))):
        raise AuthError("third-party invite: no signature in signed matches the invite's public keys")


def _third_party_public_keys(content: dict) -> list[str]:
    """``public_key`` and every ``public_keys[].public_key`` (base64 strings)."""
    keys = [content.get("public_key")]
    listed = content.get("public_keys")
    if isinstance(listed, list):
        keys += [k.get("public_key") for k in listed if isinstance(k, dict)]
    return [k for k in keys if isinstance(k, str)]


def _signed_by_any(signed: dict, public_keys: list[str]) -> bool:
    """Some ed25519 signature in ``signed.signatures`` verifies with one of `public_keys`
    (standard or URL-safe base64); at most MAX_THIRD_PARTY_CHECKS pairs are tried, so a
    block of many bogus signatures and keys cannot make one check costly."""
    sigs = signed.get("signatures")
    if not isinstance(sigs, dict):
        return False
    keys = []
    for pk in dict.fromkeys(public_keys):
        try:
            keys.append(verify_key_from_base64(pk))
        except ValueError:
            continue
    pairs = [(server, key_id, vk) for server, by_key in sigs.items() if isinstance(by_key, dict)
             for key_id in by_key if isinstance(key_id, str) and key_id.startswith("ed25519:")
             for vk in keys]
    return any(verify_json_signature(signed, server, key_id, vk)
               for server, key_id, vk in pairs[:MAX_THIRD_PARTY_CHECKS])


def _check_power_levels(event: dict, content: dict, auth_state: Mapping, rules: _Rules,
                        create: dict, sender_pl: int | float) -> None:
    for k in _LEVEL_KEYS:
        if k in content and not _is_int(content[k]):
            raise AuthError(f"power_levels: {k} is not an integer")
    for k in ("events", "notifications"):
        if k in content:
            v = content[k]
            if not isinstance(v, dict) or not all(_is_int(x) for x in v.values()):
                raise AuthError(f"power_levels: {k} must be an object of integers")
    users = content.get("users", {})
    if not isinstance(users, dict):
        raise AuthError("power_levels: users must be an object")
    for uid, lvl in users.items():
        if not is_valid_user_id(uid):
            raise AuthError(f"power_levels: {uid!r} in users is not a valid user ID")
        if not _is_int(lvl):
            raise AuthError(f"power_levels: level of {uid} is not an integer")
    if rules.privileged_creators:
        creators = room_creators(create, rules.version)
        listed = sorted(creators & set(users))
        if listed:
            raise AuthError(f"power_levels: room creator {listed[0]} must not be listed in users")

    old = auth_state.get(PL_KEY)
    if old is None:
        return
    old_content = _content(old)
    sender = event.get("sender")

    def changed(a: dict, b: dict, key: str) -> tuple[Any, Any] | None:
        o, n = a.get(key), b.get(key)
        if (key in a) == (key in b) and o == n:
            return None
        return (o if key in a else None), (n if key in b else None)

    for k in _LEVEL_KEYS:
        d = changed(old_content, content, k)
        if d is None:
            continue
        o, n = d
        if o is not None and _as_int(o, 0) > sender_pl:
            raise AuthError(f"power_levels: cannot change {k} from a level above your own")
        if n is not None and n > sender_pl:
            raise AuthError(f"power_levels: cannot set {k} above your own level")

    for k in ("events", "notifications"):
        old_map = old_content.get(k)
        old_map = old_map if isinstance(old_map, dict) else {}
        new_map = content.get(k)
        new_map = new_map if isinstance(new_map, dict) else {}
        for name in set(old_map) | set(new_map):
            d = changed(old_map, new_map, name)
            if d is None:
                continue
            o, n = d
            if o is not None and _as_int(o, 0) > sender_pl:
                raise AuthError(f"power_levels: cannot change {k}[{name!r}] from a level above your own")
            if n is not None and n > sender_pl:
                raise AuthError(f"power_levels: cannot set {k}[{name!r}] above your own level")

    old_users = old_content.get("users")
    old_users = old_users if isinstance(old_users, dict) else {}
    for uid in set(old_users) | set(users):
        d = changed(old_users, users, uid)
        if d is None:
            continue
        o, n = d
        if o is not None and uid != sender and _as_int(o, 0) >= sender_pl:
            raise AuthError(f"power_levels: cannot change the level of {uid}, who is not below you")
        if n is not None and n > sender_pl:
            raise AuthError(f"power_levels: cannot give {uid} a level above your own")
