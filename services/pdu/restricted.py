"""Restricted joins (room versions 8+, join rules `restricted` and `knock_restricted`), as
the resident server that authorises them.

Invariants:
- A join needs an authorising user only if the room's join rule is restricted or
  knock_restricted and the user is neither joined nor invited (else None).
- The user must be joined to one of the rooms of the join rule's `allow` list (entries of
  type `m.room_membership`), judged from our current state of those rooms: if we hold
  none of them, 400 M_UNABLE_TO_AUTHORISE_JOIN (another server may know); if the user is
  in none we hold, 403 M_FORBIDDEN.
- The authorising user is one of ours, joined to the room, with a power level at least
  the room's invite level: the most powerful (then the lowest user ID), so the choice is
  stable; none, 400 M_UNABLE_TO_GRANT_JOIN (the joiner should try another server).
- `check_authoriser` accepts a named authoriser only on those same terms (used for
  send_join before we add our signature): nothing is signed or stored otherwise.
"""
from __future__ import annotations

from services.pdu.authrules import get_named_level, get_user_power_level
from services.pdu.rooms import create_event_of
from shared.errors import MatrixError
from shared.events import is_valid_federation_user_id, server_of

RESTRICTED = ("restricted", "knock_restricted")


def _content(ev) -> dict:
    c = (ev or {}).get("content")
    return c if isinstance(c, dict) else {}


def _membership(state_events: dict, user_id: str) -> str | None:
    return _content(state_events.get(("m.room.member", user_id))).get("membership")


def needs_authoriser(state_events: dict, rv, user_id: str) -> bool:
    jr = _content(state_events.get(("m.room.join_rules", ""))).get("join_rule")
    return (rv.restricted and jr in RESTRICTED
            and _membership(state_events, user_id) not in ("join", "invite"))


def allowed_rooms(state_events: dict) -> list[str]:
    allow = _content(state_events.get(("m.room.join_rules", ""))).get("allow")
    return [a["room_id"] for a in allow if isinstance(a, dict) and a.get("type") == "m.room_membership"
            and isinstance(a.get("room_id"), str)] if isinstance(allow, list) else []


async def check_allowed(storage, state_events: dict, user_id: str) -> None:
    """The user is joined to one of the allowed rooms that we hold (see module doc)."""
    known = False
    for room_id in allowed_rooms(state_events):
        room = await storage.room(room_id)
        if room is None or room["current_state_group"] is None:
            continue
        known = True
        state = await storage.state_map(room["current_state_group"])
        eid = state.get(("m.room.member", user_id))
        ev = (await storage.events([eid])).get(eid) if eid else None
        if _content(ev).get("membership") == "join":
            return
    if not known:
        raise MatrixError(400, "M_UNABLE_TO_AUTHORISE_JOIN",
                          "This server is in none of the rooms the join rule allows: try another")
    raise MatrixError(403, "M_FORBIDDEN", "You are not joined to any of the rooms this room allows")


def _can_invite(state_events: dict, rv, user_id: str) -> bool:
    if _membership(state_events, user_id) != "join":
        return False
    pl = get_user_power_level(user_id, state_events, rv.identifier, create_event_of(state_events))
    return pl >= get_named_level("invite", state_events)


def local_authoriser(state_events: dict, rv, server_name: str) -> str:
    """The local user who may authorise a join (see module doc), or 400."""
    create = create_event_of(state_events)
    ours = [k[1] for k in state_events if k[0] == "m.room.member" and isinstance(k[1], str)
            and server_of(k[1]) == server_name and _can_invite(state_events, rv, k[1])]
    if not ours:
        raise MatrixError(400, "M_UNABLE_TO_GRANT_JOIN",
                          "No user of this server can invite to the room: try another server")
    return min(ours, key=lambda u: (-get_user_power_level(u, state_events, rv.identifier, create), u))


async def authoriser_for(storage, state_events: dict, rv, server_name: str, user_id: str) -> str | None:
    """make_join: the user to name in join_authorised_via_users_server (None: not needed)."""
    if not needs_authoriser(state_events, rv, user_id):
        return None
    await check_allowed(storage, state_events, user_id)
    return local_authoriser(state_events, rv, server_name)


async def check_authoriser(storage, state_events: dict, rv, server_name: str, user_id: str,
                           via) -> bool:
    """send_join: whether we must countersign the join, which names `via`. Raises when the
    room needs an authoriser and the join names none we can vouch for (not ours, cannot
    invite, the user not allowed), or names one of ours who cannot invite."""
    needed = needs_authoriser(state_events, rv, user_id)
    if via is None:
        if needed:
            raise MatrixError(403, "M_FORBIDDEN", "This room needs join_authorised_via_users_server")
        return False
    if not isinstance(via, str) or not is_valid_federation_user_id(via) or server_of(via) != server_name:
        if needed:
            raise MatrixError(400, "M_INVALID_PARAM",
                              "join_authorised_via_users_server is not a user of this server")
        return False   # another server's signature is required: the signature checks decide
    if needed:
        await check_allowed(storage, state_events, user_id)
    if not _can_invite(state_events, rv, via):
        raise MatrixError(403, "M_FORBIDDEN", "join_authorised_via_users_server cannot invite")
    return True
