"""The pdu layer's view of stored rooms, events and state, through the transaction service.

Events and state groups are immutable once stored, so they are cached here (bounded LRU),
which keeps this layer stateless in the sense that matters: any replica may answer.
Event dicts handed to auth and state resolution carry their `event_id`.
"""
from __future__ import annotations

import contextvars
import itertools
from collections import OrderedDict

from shared.errors import MatrixError


RECORDS_CACHED = 4000
GROUPS_CACHED = 500
ROOMS_CACHED = 2000


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
    """Rooms are cached too, refreshed from every persist answer; a persist refused for
    changed extremities (409, another writer) drops the cached room so it is re-read."""

    def __init__(self, tx):
        self.tx = tx
        # Sizes: the hot set is each room's recent events, its auth events and its state
        # maps; these bounds keep the process under 80 MB RSS after the benchmarks
        # (20,000 records took it to 127 MB) at no measured cost in throughput.
        self._records = LRU(RECORDS_CACHED)
        self._groups = LRU(GROUPS_CACHED)
        self._rooms = LRU(ROOMS_CACHED)
        self._batch: contextvars.ContextVar = contextvars.ContextVar("batch", default=None)
        self._provisional: dict[int, dict] = {}      # negative group id -> state map
        self._prov_ids = itertools.count(-1, -1)

    # -- write-behind batches ----------------------------------------------------------
    # Within `batch()`, persist calls of this task are answered at once from memory
    # (events remembered with provisional negative state-group ids whose maps are known
    # here) and sent as ONE persist call at the end. Callers hold the room lock for the
    # whole batch; if the final commit fails, every provisional record and room is
    # forgotten and the exception propagates, so nothing half-done stays visible.

    def batch(self) -> "_Batch":
        return _Batch(self)

    async def _defer(self, req: dict) -> dict:
        pending = self._batch.get()
        pending.reqs.append(req)
        out = {}
        for ev in req.get("events", []):
            gid = await self._prov_group(ev.get("state_after"), ev["event_id"], pending)
            if not ev.get("outlier"):
                self.remember({"event_id": ev["event_id"], "room_id": ev["room_id"],
                               "event": ev["event"], "outlier": False,
                               "rejected": ev.get("rejected"),
                               "soft_failed": bool(ev.get("soft_failed")),
                               "state_group": gid, "stream": None})
                pending.events.append(ev["event_id"])
            out[ev["event_id"]] = {"new": True, "stream": None, "state_group": gid}
        rooms = {}
        for r in req.get("rooms", []):
            info = dict(self._rooms.get(r["room_id"]) or {"room_id": r["room_id"],
                                                          "room_version": r.get("room_version"),
                                                          "extremities": [], "current_state_group": None})
            if r.get("extremities") is not None:
                info["extremities"] = list(r["extremities"])
            if r.get("current_state") is not None:
                info["current_state_group"] = await self._prov_group(r["current_state"], None, pending)
            self._rooms.put(r["room_id"], info)
            pending.rooms.add(r["room_id"])
            rooms[r["room_id"]] = info
        for red in req.get("redactions", []):
            self.forget(red["event_id"])
        return {"events": out, "rooms": rooms, "client_txn_event_id": None}

    async def _prov_group(self, spec, owner, pending) -> int | None:
        """The group id a StateSpec names; a new provisional id when it makes a group."""
        if spec is None:
            return None
        if "group" in spec:
            return spec["group"]
        if "same_as" in spec:
            rec = self._records.get(spec["same_as"])
            return rec["state_group"] if rec else None
        base = await self._prov_group(spec.get("base"), None, pending) if spec.get("base") else None
        if base is not None and not spec["delta"]:
            return base
        state = dict(await self.state_map(base))
        for t, sk, eid in spec["delta"]:
            state[(t, sk)] = eid
        gid = next(self._prov_ids)
        self._provisional[gid] = state
        pending.groups[gid] = (owner, spec)
        return gid

    def _translate(self, spec, pending):
        """A provisional spec in terms the transaction service knows (same_as events)."""
        if spec is None:
            return None
        if "group" in spec and spec["group"] is not None and spec["group"] < 0:
            owner, inner = pending.groups[spec["group"]]
            return {"same_as": owner} if owner else self._translate(inner, pending)
        if "delta" in spec:
            return {"base": self._translate(spec.get("base"), pending), "delta": spec["delta"]}
        return spec

    async def _flush(self, pending) -> dict | None:
        if not pending.reqs:
            return None
        merged = {"events": [], "rooms": [], "destinations": {}, "inbox_ids": [], "redactions": [],
                  "pending_redactions": []}
        rooms: dict[str, dict] = {}
        for req in pending.reqs:
            for ev in req.get("events", []):
                merged["events"].append(dict(ev, state_after=self._translate(ev.get("state_after"), pending)))
            for r in req.get("rooms", []):
                cur = rooms.setdefault(r["room_id"], {"room_id": r["room_id"]})
                for k, v in r.items():
                    if k == "expect_extremities" and "expect_extremities" in cur:
                        continue   # compare against what was stored before the batch
                    cur[k] = self._translate(v, pending) if k == "current_state" else v
            merged["destinations"].update(req.get("destinations") or {})
            merged["inbox_ids"] += list(req.get("inbox_ids") or [])
            merged["redactions"] += list(req.get("redactions") or [])
            merged["pending_redactions"] += list(req.get("pending_redactions") or [])
        merged["rooms"] = list(rooms.values())
        res = await self.tx.persist(merged)
        for eid in pending.events:
            rec = self._records.get(eid)
            sg = res["events"].get(eid, {}).get("state_group")
            if res["events"].get(eid, {}).get("redacted"):   # a pending redaction applied
                self.forget(eid)
            elif rec is not None and sg is not None:
                self._records.put(eid, dict(rec, state_group=sg, stream=res["events"][eid].get("stream")))
            elif rec is not None:
                self.forget(eid)
        for gid, (owner, _spec) in pending.groups.items():
            real = res["events"].get(owner, {}).get("state_group") if owner else None
            if real is not None:
                self._groups.put(real, self._provisional[gid])
        for room_id, info in (res.get("rooms") or {}).items():
            if info is not None:
                self._rooms.put(room_id, info)
        return res

    def _abort(self, pending) -> None:
        for eid in pending.events:
            self.forget(eid)
        for room_id in pending.rooms:
            self.forget_room(room_id)
        self._release(pending)

    def _release(self, pending) -> None:
        for gid in pending.groups:
            self._provisional.pop(gid, None)

    async def room(self, room_id: str) -> dict | None:
        room = self._rooms.get(room_id)
        if room is None:
            room = await self.tx.get_room(room_id)
            if room is not None:
                self._rooms.put(room_id, room)
        return room

    def forget_room(self, room_id: str) -> None:
        self._rooms.pop(room_id, None)

    async def persist(self, req: dict) -> dict:
        """Persist through the transaction service and keep the caches in step."""
        if self._batch.get() is not None:
            return await self._defer(req)
        try:
            res = await self.tx.persist(req)
        except MatrixError as exc:
            if exc.status == 409:
                for r in req.get("rooms", []):
                    self.forget_room(r["room_id"])
            raise
        for room_id, info in (res.get("rooms") or {}).items():
            if info is not None:
                self._rooms.put(room_id, info)
        for ev in req.get("events", []):
            out = res["events"].get(ev["event_id"], {})
            if out.get("redacted"):   # a pending redaction applied in the same commit
                self.forget(ev["event_id"])
            elif out.get("new") and not ev.get("outlier"):
                self.remember({"event_id": ev["event_id"], "room_id": ev["room_id"],
                               "event": ev["event"], "outlier": False,
                               "rejected": ev.get("rejected"),
                               "soft_failed": bool(ev.get("soft_failed")),
                               "state_group": out.get("state_group"), "stream": out["stream"]})
            elif ev["event_id"] in self._records and not out.get("new"):
                self.forget(ev["event_id"])
        for red in req.get("redactions", []):
            self.forget(red["event_id"])
        return res

    async def records(self, event_ids) -> dict[str, dict]:
        """Stored records by id, cached. A cached outlier is dropped from the cache when
        this replica stores the event again (upgraded into the DAG view, or redacted);
        another replica's upgrade is seen when the entry ages out of the LRU."""
        out = {e: self._records[e] for e in event_ids if e in self._records}
        want = [e for e in dict.fromkeys(event_ids) if e not in out]
        if want:
            for eid, rec in (await self.tx.get_events(want)).items():
                out[eid] = rec
                self._records.put(eid, rec)
        return out

    def forget(self, event_id: str) -> None:
        self._records.pop(event_id, None)

    def cached(self, event_id: str) -> bool:
        """Known to this process (stored, or in the current write-behind batch)."""
        return event_id in self._records

    def remember(self, record: dict) -> None:
        self._records.put(record["event_id"], record)

    async def events(self, event_ids) -> dict[str, dict]:
        return {e: with_id(r) for e, r in (await self.records(event_ids)).items()}

    async def state_map(self, group: int | None) -> dict[tuple[str, str], str]:
        if group is None:
            return {}
        if group < 0:
            return self._provisional[group]
        if group not in self._groups:
            got = await self.tx.state_groups([group])
            self._groups.put(group, {(t, sk): e for t, sk, e in got[group]})
        return self._groups[group]

    async def state_events(self, state: dict) -> dict[tuple[str, str], dict]:
        evs = await self.events(list(state.values()))
        return {k: evs[e] for k, e in state.items() if e in evs}


class _Batch:
    """`async with storage.batch():` — see Storage's write-behind notes."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self.reqs: list[dict] = []
        self.events: list[str] = []
        self.rooms: set[str] = set()
        self.groups: dict[int, tuple] = {}
        self._token = None

    async def __aenter__(self):
        self._token = self.storage._batch.set(self)
        return self

    async def __aexit__(self, exc_type, exc, tb):
        self.storage._batch.reset(self._token)
        if exc_type is not None:
            self.storage._abort(self)
            return False
        try:
            await self.storage._flush(self)
        except BaseException:
            self.storage._abort(self)
            raise
        # provisional maps stay until no cached record names them
        self.storage._release(self)
        return False
