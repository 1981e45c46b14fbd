"""State before and after events, and the room's current state.

The state before an event is the resolution (v2 / v2.1 by room version) of the states
after each of its prev_events; the state after adds the event itself if it is an accepted
state event. Events are loaded (with their auth chains) before resolving, so the pure
resolution code never waits on I/O.
"""
from __future__ import annotations

import time

from services.pdu import stateres


async def load_auth_closure(storage, event_ids) -> dict[str, dict]:
    """The events `event_ids` and everything reachable through their auth_events."""
    loaded: dict[str, dict] = {}
    todo = set(event_ids)
    while todo:
        got = await storage.events(list(todo))
        loaded.update(got)
        todo = {a for ev in got.values() for a in ev.get("auth_events", [])
                if a not in loaded}
        todo -= set(got)
        missing = todo - set(await storage.records(list(todo))) if todo else set()
        todo -= missing
    return loaded


async def resolve(storage, room_version: str, maps: list[dict]) -> dict:
    """Resolve state maps ((type, state_key) -> event_id) into one."""
    distinct = []
    for m in maps:
        if m not in distinct:
            distinct.append(m)
    if not distinct:
        return {}
    if len(distinct) == 1:
        return dict(distinct[0])
    ids = {e for m in distinct for e in m.values()}
    started = time.perf_counter()
    events = await load_auth_closure(storage, ids)
    resolved = stateres.resolve_state(room_version, distinct, events.get)
    metrics = getattr(storage, "metrics", None)
    if metrics is not None:
        metrics.histogram("fedstack_state_resolution_seconds", "Time to resolve two or more "
                          "distinct state maps (loading their auth chains included)").observe(
            time.perf_counter() - started)
    return resolved


def state_spec(base_group: int | None, base: dict, new: dict) -> dict:
    """A StateSpec storing `new` as a delta on `base` (group `base_group`) when it only adds
    or replaces entries, else as a full snapshot."""
    if base_group is not None and all(k in new for k in base):
        delta = [[t, sk, e] for (t, sk), e in new.items() if base.get((t, sk)) != e]
        return {"base": {"group": base_group}, "delta": delta}
    return {"base": None, "delta": [[t, sk, e] for (t, sk), e in new.items()]}
