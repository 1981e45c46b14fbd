"""Spaces (`/hierarchy`) and jump-to-date (`/timestamp_to_event`) for rooms we hold.

Invariants (spec, server-server API "Spaces" and "Timestamp to event"):
- A room is accessible to a requesting server if its history is world_readable, its join
  rule is public, knock or knock_restricted, the server has a joined member in it, or
  (restricted / knock_restricted) it has a joined member in one of the allowed rooms that
  we hold. `origin` None (our own domain API) sees every room.
- /hierarchy of a room that is not accessible, or unknown, is 404 M_NOT_FOUND (nothing
  about a private room leaks to a server with no member). Its answer: `room` (the room's
  summary, room_type, allowed_room_ids when restricted, children_state: the stripped
  m.space.child events with a non-empty `via` list of strings), `children` (the summaries
  of the children we hold and the server may see), `inaccessible_children` (those we hold
  and it may not). With suggested_only, only children marked `suggested: true`.
- /timestamp_to_event answers, for a server with a joined or invited member (and the
  room's ACL allowing it), the live event closest to `ts` in direction `dir` (f: the first
  at or after it, b: the last at or before it), else 404 M_NOT_FOUND; bad parameters 400.
"""
from __future__ import annotations

from services.pdu.directory import room_summary
from services.pdu.restricted import RESTRICTED, allowed_rooms
from shared.errors import MatrixError
from shared.events import server_of

OPEN_RULES = ("public", "knock", "knock_restricted")
STREAM_PAGE = 1000


def _c(ev) -> dict:
    c = (ev or {}).get("content")
    return c if isinstance(c, dict) else {}


def _joined_servers(state_events: dict) -> set[str]:
    out = set()
    for (t, sk), ev in state_events.items():
        if t == "m.room.member" and _c(ev).get("membership") == "join" and isinstance(sk, str) and ":" in sk:
            out.add(server_of(sk))
    return out


async def accessible(storage, summary: dict, state_events: dict, origin: str | None) -> bool:
    if origin is None or summary["world_readable"] or summary["join_rule"] in OPEN_RULES:
        return True
    if origin in _joined_servers(state_events):
        return True
    if summary["join_rule"] in RESTRICTED:
        for room_id in allowed_rooms(state_events):
            found = await room_summary(storage, room_id)
            if found is not None and origin in _joined_servers(found[1]):
                return True
    return False


def _child_events(state_events: dict, suggested_only: bool) -> list[dict]:
    out = []
    for (t, sk), ev in sorted(state_events.items(), key=lambda kv: str(kv[0][1])):
        if t != "m.space.child" or not isinstance(sk, str) or not sk.startswith("!"):
            continue
        content = _c(ev)
        via = content.get("via")
        if not isinstance(via, list) or not via or not all(isinstance(v, str) for v in via):
            continue   # no via: the child was removed
        if suggested_only and content.get("suggested") is not True:
            continue
        out.append({"type": t, "state_key": sk, "content": content, "sender": ev.get("sender"),
                    "origin_server_ts": ev.get("origin_server_ts")})
    return out


def _entry(summary: dict, state_events: dict) -> dict:
    out = dict(summary)
    if summary["join_rule"] in RESTRICTED:
        out["allowed_room_ids"] = allowed_rooms(state_events)
    return out


async def hierarchy(storage, acls, origin: str | None, room_id: str, suggested_only: bool) -> dict:
    found = await room_summary(storage, room_id)
    if found is None or (origin is not None and not await acls.allows(room_id, origin)) \
            or not await accessible(storage, found[0], found[1], origin):
        raise MatrixError(404, "M_NOT_FOUND", "Unknown room or not accessible")
    summary, state_events = found
    children_state = _child_events(state_events, suggested_only)
    room = dict(_entry(summary, state_events), children_state=children_state)
    children, inaccessible = [], []
    for ev in children_state:
        child = await room_summary(storage, ev["state_key"])
        if child is None:
            continue
        if await accessible(storage, child[0], child[1], origin) and \
                (origin is None or await acls.allows(ev["state_key"], origin)):
            children.append(_entry(*child))
        else:
            inaccessible.append(ev["state_key"])
    return {"room": room, "children": children, "inaccessible_children": inaccessible}


async def timestamp_to_event(tx, room_id: str, ts, direction) -> dict:
    if direction not in ("f", "b"):
        raise MatrixError(400, "M_INVALID_PARAM", "dir must be f or b")
    if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
        raise MatrixError(400, "M_INVALID_PARAM", "ts must be a non-negative integer")
    best, after = None, 0
    while True:
        page = await tx.stream(after, STREAM_PAGE, room_id)
        for item in page["events"]:
            ev = item["event"]
            t = ev.get("origin_server_ts")
            if not isinstance(t, int):
                continue
            if direction == "f" and t >= ts and (best is None or t < best[1]):
                best = (ev["event_id"], t)
            elif direction == "b" and t <= ts and (best is None or t >= best[1]):
                best = (ev["event_id"], t)
        if not page["events"]:
            break
        after = page["next"]
    if best is None:
        raise MatrixError(404, "M_NOT_FOUND", "No event found")
    return {"event_id": best[0], "origin_server_ts": best[1]}
