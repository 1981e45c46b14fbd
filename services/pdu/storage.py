"""The pdu layer's view of stored rooms, events and state, through the transaction service.

Events and state groups are immutable once stored, so they are cached here (bounded LRU),
which keeps this layer stateless in the sense that matters: any replica may answer.
Event dicts handed to auth and state resolution carry their `event_id`.
"""
from __future__ import annotations

from collections import OrderedDict


class LRU(OrderedDict):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def put(self, k, v):
        self[k] = v
        self.move_to_end(k)
        while len(self) > self.size:
            self.popitem(last=False)


def with_id(record: dict) -> dict:
    ev = dict(record["event"])
    ev["event_id"] = record["event_id"]
    if record.get("rejected"):
        ev["rejected"] = True
    return ev


def wire(event: dict) -> dict:
    """The event as sent over federation (no event_id, no local flags)."""
    return {k: v for k, v in event.items() if k not in ("event_id", "rejected")}


class Storage:
    def __init__(self, tx):
        self.tx = tx
        self._records = LRU(20000)
        self._groups = LRU(2000)

    async def room(self, room_id: str) -> dict | None:
        return await self.tx.get_room(room_id)

    async def records(self, event_ids) -> dict[str, dict]:
        """Stored records by id; only non-outlier records are cached (an outlier may still
        be upgraded into the room's DAG view)."""
        out = {e: self._records[e] for e in event_ids if e in self._records}
        want = [e for e in dict.fromkeys(event_ids) if e not in out]
        if want:
            for eid, rec in (await self.tx.get_events(want)).items():
                out[eid] = rec
                if not rec["outlier"]:
                    self._records.put(eid, rec)
        return out

    def forget(self, event_id: str) -> None:
        self._records.pop(event_id, None)

    def remember(self, record: dict) -> None:
        self._records.put(record["event_id"], record)

    async def events(self, event_ids) -> dict[str, dict]:
        return {e: with_id(r) for e, r in (await self.records(event_ids)).items()}

    async def state_map(self, group: int | None) -> dict[tuple[str, str], str]:
        if group is None:
            return {}
        if group not in self._groups:
            got = await self.tx.state_groups([group])
            self._groups.put(group, {(t, sk): e for t, sk, e in got[group]})
        return self._groups[group]

    async def state_events(self, state: dict) -> dict[tuple[str, str], dict]:
        evs = await self.events(list(state.values()))
        return {k: evs[e] for k, e in state.items() if e in evs}
