"""Which servers have joined members in a room, asked of the pdu service (which holds room
state) and cached here for the inbound EDU checks.

Invariants:
- An entry is dropped when this service persists a state event of that room (every
  membership change is one, and all persists pass through here), and in any case after
  TTL_S; an answer that was being fetched while its room was invalidated is not cached.
- An unknown room is cached as None (no server is joined). The pdu service being
  unreachable is not cached: the caller's request fails and is retried.
"""
from __future__ import annotations

import time

TTL_S = 60.0
MAX_ROOMS = 10_000


class RoomServers:
    def __init__(self, pdu, clock=time.monotonic):
        self.pdu = pdu
        self.clock = clock
        self._cache: dict[str, tuple[float, frozenset | None]] = {}
        self._generation: dict[str, int] = {}

    async def get(self, room_id: str) -> frozenset | None:
        hit = self._cache.get(room_id)
        if hit is not None and self.clock() - hit[0] < TTL_S:
            return hit[1]
        gen = self._generation.get(room_id, 0)
        servers = await self.pdu.room_servers(room_id)
        value = frozenset(servers) if servers is not None else None
        if self._generation.get(room_id, 0) == gen:
            if len(self._cache) >= MAX_ROOMS:
                self._cache.clear()
            self._cache[room_id] = (self.clock(), value)
        return value

    def invalidate(self, room_id) -> None:
        self._cache.pop(room_id, None)
        self._generation[room_id] = self._generation.get(room_id, 0) + 1
        if len(self._generation) > MAX_ROOMS:
            self._generation.clear()

    def persisted(self, events) -> None:
        """A persist request's events: forget the rooms whose state they change."""
        for ev in events:
            if "state_key" in (ev.get("event") or {}):
                self.invalidate(ev.get("room_id"))
