"""Server ACLs of rooms, as the pdu layer applies them (matching: shared/server_acl.py).

Invariants:
- A room's ACL is the `m.room.server_acl` event of its current state; no such event (or
  a room we do not know) allows every server.
- Compiled ACLs are cached by the ACL event's ID: events are immutable, so an entry is
  never stale, and a room's answer changes exactly when its current state names another
  ACL event. On the inbound path a check is a cached room, a cached state map, two dict
  look-ups and the ACL's own per-server memo: no I/O once warm.
- `check` raises 403 M_FORBIDDEN for a denied server, before anything else is answered.
"""
from __future__ import annotations

from services.pdu.storage import LRU
from shared.errors import MatrixError
from shared.server_acl import ACL_EVENT, ServerAcl

ACLS_CACHED = 1000
KEY = (ACL_EVENT, "")


class RoomAcls:
    def __init__(self, storage):
        self.storage = storage
        self._by_event = LRU(ACLS_CACHED)

    def of_event(self, event: dict | None) -> ServerAcl | None:
        """The compiled ACL of an ACL event (a dict carrying its event_id), cached."""
        if event is None:
            return None
        eid = event.get("event_id")
        acl = self._by_event.get(eid) if eid else None
        if acl is None:
            acl = ServerAcl(event.get("content"))
            if eid:
                self._by_event.put(eid, acl)
        return acl

    def of_state_events(self, state_events: dict) -> ServerAcl | None:
        return self.of_event(state_events.get(KEY))

    async def of_state(self, state: dict) -> ServerAcl | None:
        """The ACL of a state map ((type, state_key) -> event_id)."""
        eid = state.get(KEY)
        if eid is None:
            return None
        acl = self._by_event.get(eid)
        if acl is None:
            acl = self.of_event((await self.storage.events([eid])).get(eid))
        return acl

    async def of_room(self, room_id: str) -> ServerAcl | None:
        room = await self.storage.room(room_id)
        if room is None or room["current_state_group"] is None:
            return None
        return await self.of_state(await self.storage.state_map(room["current_state_group"]))

    async def allows(self, room_id: str, server_name: str) -> bool:
        acl = await self.of_room(room_id)
        return acl is None or acl.allows(server_name)

    async def check(self, room_id: str, server_name: str) -> None:
        if not await self.allows(room_id, server_name):
            raise MatrixError(403, "M_FORBIDDEN", "Server is banned from room")

    async def filter(self, state: dict, servers) -> set[str]:
        """The servers of `servers` the ACL of `state` allows."""
        acl = await self.of_state(state)
        return set(servers) if acl is None else {s for s in servers if acl.allows(s)}
