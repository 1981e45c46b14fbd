"""Paging back through a room's history from before we joined it: `/backfill` from a
server in the room.

Invariants:
- Only events of this room, in its room version's format, signed as their room version
  requires, are kept; each is auth-checked against its own auth_events (with the auth
  chain we already store); one that fails is stored as rejected and not returned, one whose
  auth events we cannot find is neither stored nor returned.
- Events are stored as outliers: they never enter the room's current state or extremities
  and are never delivered to subscriptions (the live stream holds no outliers).
- Pages go backwards: `next` names the prev_events of the page that are neither in it
  nor part of our live timeline; null when the history is exhausted.
"""
from __future__ import annotations

import logging
from urllib.parse import quote

from services.pdu.keyring import SignatureFailed
from services.pdu.membership import check_auth_chain
from services.pdu.acl import RoomAcls
from services.pdu.rooms import create_event_of, joined_servers
from services.pdu.state import load_auth_closure
from services.pdu.storage import wire
from shared.errors import MatrixError
from shared.events import EventFormatError, compute_event_id, validate_event_format
from shared.room_versions import get_room_version

log = logging.getLogger("fedstack.pdu.backfill")

MAX_LIMIT = 100


class Backfiller:
    def __init__(self, storage, tx, keyring, server_name: str, *, acls=None):
        self.storage = storage
        self.acls = acls or RoomAcls(storage)
        self.tx = tx
        self.keyring = keyring
        self.server_name = server_name

    async def backfill(self, room_id: str, from_ids: list[str] | None, limit: int) -> dict:
        room = await self.storage.room(room_id)
        if room is None or room["current_state_group"] is None:
            raise MatrixError(404, "M_NOT_FOUND", "unknown room")
        rv = get_room_version(room["room_version"])
        limit = max(1, min(limit, MAX_LIMIT))
        if from_ids is None:   # start before the oldest event of our live timeline
            first = (await self.tx.stream(0, 1, room_id))["events"]
            from_ids = first[0]["event"].get("prev_events", []) if first else []
        from_ids = [e for e in from_ids if isinstance(e, str)]
        if not from_ids:
            return {"events": [], "next": None}
        state_events = await self.storage.state_events(
            await self.storage.state_map(room["current_state_group"]))
        create = create_event_of(state_events)
        current = await self.storage.state_map(room["current_state_group"])
        servers = sorted(await self.acls.filter(current, await joined_servers(self.storage, current))
                         - {self.server_name})   # never ask a server the room's ACL denies
        pdus, errors = None, []
        for server in servers:
            resp = await self.tx.federation_request(
                server, "GET", f"/_matrix/federation/v1/backfill/{quote(room_id, safe='')}",
                query=[("v", e) for e in from_ids] + [("limit", str(limit))])
            body = resp.get("body")
            if resp.get("status") == 200 and isinstance(body, dict) and isinstance(body.get("pdus"), list):
                pdus = body["pdus"]
                break
            errors.append(f"{server}: {resp.get('status')} {resp.get('error') or body}")
        if pdus is None:
            raise MatrixError(502, "M_UNKNOWN", "backfill failed: " + "; ".join(errors or ["no server"]))

        batch: dict[str, dict] = {}
        for ev in pdus[:limit]:
            if not isinstance(ev, dict):
                continue
            try:
                validate_event_format(ev, rv)
                eid = compute_event_id(ev, rv)
                if ev.get("room_id", "!" + eid[1:]) != room_id:
                    continue
                batch[eid] = await self.keyring.check_event(ev, rv)
            except (EventFormatError, SignatureFailed) as exc:
                log.info("backfill from %s: dropped an event: %s", servers, exc)
        known = await load_auth_closure(self.storage, {a for ev in batch.values()
                                                       for a in ev.get("auth_events", [])} - set(batch))
        context = {e: wire(ev) for e, ev in known.items()}
        rejected = check_auth_chain({**context, **batch}, rv, create)
        keep = {e: ev for e, ev in batch.items() if e not in rejected}
        bad = {e: ev for e, ev in batch.items()
               if e in rejected and all(a in batch or a in known for a in ev.get("auth_events", []))}
        have = await self.storage.records(list(batch))
        await self.storage.persist({"events": [
            {"event_id": e, "room_id": room_id, "event": ev, "outlier": True,
             "rejected": rejected.get(e)}
            for e, ev in {**keep, **bad}.items() if e not in have]})

        prevs = {p for ev in batch.values() for p in ev.get("prev_events", []) if p not in batch}
        live = {e for e, r in (await self.storage.records(list(prevs))).items() if not r["outlier"]}
        nxt = sorted(prevs - live)
        events = sorted(({**ev, "event_id": e} for e, ev in keep.items()),
                        key=lambda ev: ev.get("depth", 0), reverse=True)
        return {"events": events, "next": nxt or None}
