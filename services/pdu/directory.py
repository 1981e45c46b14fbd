"""Room summaries and the public room list, from each room's current state.

Invariants:
- A summary has the spec's PublishedRoomsChunk fields: room_id, num_joined_members,
  world_readable (history_visibility world_readable), guest_can_join (guest_access
  can_join), join_rule (default invite); name, topic, canonical_alias, avatar_url and
  room_type only when the state holds them as strings. A room we hold no state of has none.
- The public list is the rooms the homeserver published (`PUT /v1/rooms/{id}/visibility`)
  that we still hold, most joined members first (then room ID), filtered by the generic
  search term (case-insensitive, in name, topic or canonical alias) and by the requesting
  server's standing in each room's server ACL; `since` / `next_batch` are offsets ("o<n>")
  into that order, a bad token 400 M_INVALID_PARAM.
"""
from __future__ import annotations

from shared.errors import MatrixError

MAX_LIMIT = 500


def _c(state_events: dict, t: str) -> dict:
    c = (state_events.get((t, "")) or {}).get("content")
    return c if isinstance(c, dict) else {}


def summary_of(room_id: str, state_events: dict) -> dict:
    joined = sum(1 for (t, _sk), e in state_events.items()
                 if t == "m.room.member" and (e.get("content") or {}).get("membership") == "join")
    jr = _c(state_events, "m.room.join_rules").get("join_rule")
    out = {"room_id": room_id, "num_joined_members": joined,
           "world_readable": _c(state_events, "m.room.history_visibility").get("history_visibility")
           == "world_readable",
           "guest_can_join": _c(state_events, "m.room.guest_access").get("guest_access") == "can_join",
           "join_rule": jr if isinstance(jr, str) else "invite"}
    for key, t, field in (("name", "m.room.name", "name"), ("topic", "m.room.topic", "topic"),
                          ("canonical_alias", "m.room.canonical_alias", "alias"),
                          ("avatar_url", "m.room.avatar", "url"), ("room_type", "m.room.create", "type")):
        v = _c(state_events, t).get(field)
        if isinstance(v, str) and v:
            out[key] = v
    return out


async def room_summary(storage, room_id: str) -> tuple[dict, dict] | None:
    """(summary, current state events) of a room we hold, else None."""
    room = await storage.room(room_id)
    if room is None or room["current_state_group"] is None:
        return None
    state_events = await storage.state_events(await storage.state_map(room["current_state_group"]))
    return summary_of(room_id, state_events), state_events


def _offset(since) -> int:
    if since in (None, ""):
        return 0
    if isinstance(since, str) and since.startswith("o") and since[1:].isdigit():
        return int(since[1:])
    raise MatrixError(400, "M_INVALID_PARAM", "unknown since token")


def _matches(summary: dict, term) -> bool:
    if not isinstance(term, str) or not term:
        return True
    term = term.casefold()
    return any(term in summary.get(k, "").casefold() for k in ("name", "topic", "canonical_alias"))


async def public_rooms(storage, tx, acls, origin: str | None, limit, since, search_term) -> dict:
    start = _offset(since)
    limit = MAX_LIMIT if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0 \
        else min(limit, MAX_LIMIT)
    rooms = []
    for room_id in await tx.published_rooms():
        found = await room_summary(storage, room_id)
        if found is None:
            continue
        if origin is not None and not await acls.allows(room_id, origin):
            continue
        if _matches(found[0], search_term):
            rooms.append(found[0])
    rooms.sort(key=lambda s: (-s["num_joined_members"], s["room_id"]))
    out = {"chunk": rooms[start:start + limit], "total_room_count_estimate": len(rooms)}
    if start + limit < len(rooms):
        out["next_batch"] = f"o{start + limit}"
    if start > 0:
        out["prev_batch"] = f"o{max(0, start - limit)}"
    return out
