"""Building and signing our own events.

Invariants: prev_events are the room's forward extremities (at most MAX_PREV, newest by
depth first); depth = max(prev depths) + 1; auth_events are exactly what the auth-events
selection picks from the state before the event; the event is hashed and signed for its
room version, and its event_id is the reference hash.
"""
from __future__ import annotations

import time

from services.pdu.authrules import auth_types_for_event
from shared.events import compute_event_id, sign_event

MAX_PREV = 10


def auth_event_ids(event: dict, state: dict, rv) -> list[str]:
    ids = []
    for key in auth_types_for_event(event, rv.identifier):
        eid = state.get(key)
        if eid and eid not in ids:
            ids.append(eid)
    return ids


def build_event(*, rv, server_name: str, key, room_id: str | None, sender: str, type: str,
                content: dict, state_key: str | None, prev: list[dict], state: dict,
                extra: dict | None = None) -> dict:
    """A signed event (with its event_id set) on top of `prev` events, in `state`."""
    prev = sorted(prev, key=lambda e: e.get("depth", 0), reverse=True)[:MAX_PREV]
    ev = {"type": type, "sender": sender, "content": content,
          "origin_server_ts": int(time.time() * 1000),
          "prev_events": [p["event_id"] for p in prev],
          "depth": min(max([p.get("depth", 0) for p in prev], default=0) + 1, 2**53 - 1),
          "hashes": {}, "signatures": {}}
    if room_id is not None:
        ev["room_id"] = room_id
    if state_key is not None:
        ev["state_key"] = state_key
    if extra:
        ev.update(extra)
    ev["auth_events"] = auth_event_ids(ev, state, rv)
    sign_event(ev, server_name, key, rv)
    ev["event_id"] = compute_event_id(ev, rv)
    return ev


def sign_template(template: dict, *, rv, server_name: str, key) -> dict:
    """Sign a make_join/make_leave template we have checked; returns it with event_id."""
    ev = {k: v for k, v in template.items() if k not in ("hashes", "signatures", "unsigned", "event_id")}
    ev["origin_server_ts"] = int(time.time() * 1000)
    ev["hashes"], ev["signatures"] = {}, {}
    sign_event(ev, server_name, key, rv)
    ev["event_id"] = compute_event_id(ev, rv)
    return ev
