"""Received PDUs: checked, completed, authorised, then stored with their state.

Pipeline per event (spec §5.6): format → signatures → content hash (redact on mismatch) →
missing prev_events fetched (get_missing_events from the origin) → auth against its own
auth_events (reject) → auth against the state before it (reject) → auth against the current
state (soft-fail). Then one commit stores the event, its state group, the room's new
extremities and current state, and removes the inbox rows it consumed.

Invariants: an event whose prev_events cannot all be obtained, or include an event of
another room, is not stored and changes nothing (auth_events of another room reject it, see
`check_auth_events_list`); a get_missing_events answer is only used for events of the room
we asked about; rejected events are stored as rejected and never enter state or
extremities; soft-failed events are stored but are neither extremities nor delivered, and
only if the room's extremities are still those the current state was read with (compare
and set, as for every accepted event): a stale view never soft-fails an event.
"""
from __future__ import annotations

import asyncio
import logging
from collections import Counter
from urllib.parse import quote

from services.pdu.acl import RoomAcls
from services.pdu.authrules import AuthError, check_auth, check_auth_events_list
from services.pdu.keyring import SignatureFailed
from shared.logs import request_id
from shared.metrics import Metrics
from services.pdu.redaction import pending_redaction, redaction_update, redacts_target
from services.pdu.rooms import create_event_of
from services.pdu.state import resolve, state_spec
from services.pdu.storage import wire
from shared.errors import MatrixError
from shared.events import EventFormatError, compute_event_id, validate_event_format
from shared.room_versions import get_room_version

log = logging.getLogger("fedstack.pdu.inbound")

GME_LIMIT = 20
GME_ROUNDS = 10


class EventDropped(Exception):
    pass


def is_infrastructure_failure(exc: BaseException) -> bool:
    """An error of the stack rather than of the event: the transaction service (or the
    network to it) unreachable, timing out, or failing with a 5xx. Only these make the
    relay retry; any other exception while processing one event drops that event."""
    if isinstance(exc, (OSError, asyncio.TimeoutError)):   # ConnectionError, TimeoutError
        return True
    return isinstance(exc, MatrixError) and exc.status >= 500


class InboundHandler:
    def __init__(self, storage, tx, keyring, rooms, server_name: str, *, acls=None):
        self.storage = storage
        self.acls = acls or RoomAcls(storage)
        self.tx = tx
        self.keyring = keyring
        self.rooms = rooms
        self.server_name = server_name
        self._absent: set[str] = set()
        self.dropped: Counter = Counter()     # reason class -> events dropped (never reset)
        self.m_pdus = (getattr(storage, "metrics", None) or Metrics("pdu")).counter(
            "fedstack_inbound_pdus_total", "Inbound PDUs per origin and outcome (transaction "
            "service: staged or unstaged; pdu service: accepted, rejected, soft_failed, "
            "dropped, duplicate)", ["origin", "outcome"])

    async def handle_batch(self, items: list[dict]) -> None:
        """Process relayed inbox items, in order per room; every inbox id is consumed.
        Each room's items are committed together (one write-behind batch); if that commit
        is refused (another writer moved the room on, or the store refused one of them),
        they are redone one by one. Only an infrastructure failure propagates (the relay
        then retries): one bad event never stops the others."""
        by_room: dict[str, list[dict]] = {}
        for item in items:
            by_room.setdefault(item["room_id"], []).append(item)
        for room_id, group in by_room.items():
            async with self.rooms.lock(room_id):
                self._absent = await self._prefetch(room_id, group)
                try:
                    async with self.storage.batch():
                        for item in group:
                            await self._counted(item)
                except MatrixError as exc:
                    if is_infrastructure_failure(exc):
                        raise
                    if exc.status != 409:
                        log.warning("batch of %d PDUs in %s refused (%s); one by one",
                                    len(group), room_id, exc)
                    self._absent = set()
                    for item in group:
                        await self._counted(item)

    async def _counted(self, item: dict) -> None:
        """`_receive_item` under the request id that staged the item (its log lines and
        hops carry it), and a drop counted under the item's origin."""
        token = request_id.set(item.get("request_id") or request_id.get())
        try:
            before = sum(self.dropped.values())
            await self._receive_item(item)
            if sum(self.dropped.values()) > before:
                self.m_pdus.labels(item["origin"], "dropped").inc()
        finally:
            request_id.reset(token)

    async def _prefetch(self, room_id: str, group: list[dict]) -> set[str]:
        """Which of a group's events are not stored yet, so each event's own "already
        known?" check needs no round trip. An item the relay marked `known: false` under
        the id we compute needs no look-up at all; the others take one for the group."""
        room = await self.storage.room(room_id)
        if room is None:
            return set()
        rv = get_room_version(room["room_version"])
        absent, unsure = set(), set()
        for item in group:
            try:
                eid = compute_event_id(item["pdu"], rv)
            except Exception:  # noqa: BLE001 - malformed: receive() will drop it
                continue
            if item.get("known") is False and item.get("event_id") == eid:
                absent.add(eid)
            else:
                unsure.add(eid)
        if unsure:
            absent |= unsure - set(await self.storage.records(list(unsure)))
        return absent

    async def _receive_item(self, item: dict) -> None:
        """Receive one relayed PDU; whatever goes wrong with it (short of the stack's own
        failure) drops it: logged, counted, its inbox row consumed."""
        origin = item["origin"]
        if not await self.acls.allows(item["room_id"], origin):
            log.info("dropped PDU from %s: denied by the server ACL of %s", origin, item["room_id"])
            self.dropped["server_acl"] += 1
            await self.storage.persist({"inbox_ids": [item["inbox_id"]]})
            return
        try:
            await self.receive(item["pdu"], origin, inbox_ids=[item["inbox_id"]])
            return
        except EventDropped as exc:
            log.info("dropped PDU from %s: %s", origin, exc)
            self.dropped["invalid"] += 1
        except Exception as exc:  # noqa: BLE001 - a bug met by one event must not wedge the inbox
            if is_infrastructure_failure(exc):
                raise
            log.exception("dropped PDU from %s: processing failed (%s: %s)",
                          origin, type(exc).__name__, exc)
            self.dropped["failed"] += 1
        await self.storage.persist({"inbox_ids": [item["inbox_id"]]})

    async def receive(self, pdu: dict, origin: str, *, inbox_ids=(), depth: int = 0,
                      forward_to=frozenset()) -> str:
        room_id = pdu.get("room_id")
        room = await self.storage.room(room_id) if isinstance(room_id, str) else None
        if room is None or room["current_state_group"] is None:
            raise EventDropped(f"not in room {room_id}")
        rv = get_room_version(room["room_version"])
        try:
            validate_event_format(pdu, rv)
        except EventFormatError as exc:
            raise EventDropped(f"bad format: {exc}")
        event_id = compute_event_id(pdu, rv)
        if event_id in self._absent and not self.storage.cached(event_id):
            self._absent.discard(event_id)   # checked by the batch's prefetch, and not
            #                                  stored since by another path of this process
        elif await self.storage.records([event_id]):
            if inbox_ids:
                await self.storage.persist({"inbox_ids": list(inbox_ids)})
                self.m_pdus.labels(origin, "duplicate").inc()
            return event_id
        try:
            pdu = await self.keyring.check_event(pdu, rv)
        except SignatureFailed as exc:
            raise EventDropped(str(exc))
        foreign = sorted(e for e, r in (await self.storage.records(pdu["prev_events"])).items()
                         if r["room_id"] != room_id)
        if foreign:
            raise EventDropped(f"prev_events {foreign} belong to another room")
        await self._fill_gaps(pdu, event_id, room, origin, depth)
        outcome = await self._authorise_and_store(pdu, event_id, rv, list(inbox_ids), set(forward_to))
        if inbox_ids:   # relayed from a transaction (not fetched to fill a gap)
            self.m_pdus.labels(origin, outcome).inc()
            log.info("PDU %s from %s: %s", event_id, origin, outcome)
        return event_id

    async def _fill_gaps(self, pdu: dict, event_id: str, room: dict, origin: str, depth: int) -> None:
        missing = await self._missing(pdu["prev_events"])
        if not missing:
            return
        if depth > 0:
            raise EventDropped(f"prev_events {sorted(missing)} unavailable")
        # A gap longer than one answer (the remote returns the `limit` events nearest to
        # `latest_events`): keep walking back from the oldest events fetched so far, then
        # process everything oldest first once the fetched part connects to what we have.
        rv = get_room_version(room["room_version"])
        fetched: dict[str, dict] = {}
        latest = [event_id]
        for _ in range(GME_ROUNDS):
            room = await self.storage.room(room["room_id"])
            resp = await self.tx.federation_request(
                origin, "POST", f"/_matrix/federation/v1/get_missing_events/{quote(room['room_id'], safe='')}",
                body={"earliest_events": room["extremities"], "latest_events": latest,
                      "limit": GME_LIMIT, "min_depth": 0})
            got = (resp.get("body") or {}).get("events") if resp.get("status") == 200 else None
            if not isinstance(got, list):
                break
            new = 0
            for ev in got:
                if (isinstance(ev, dict) and isinstance(ev.get("prev_events"), list)
                        and ev.get("room_id") == room["room_id"]):   # only the room we asked about
                    try:
                        eid = compute_event_id(ev, rv)
                    except Exception:  # noqa: BLE001 - unusable: ignore it
                        continue
                    if eid not in fetched:
                        fetched[eid] = ev
                        new += 1
            frontier = {p for ev in [pdu, *fetched.values()] for p in ev["prev_events"]
                        if isinstance(p, str) and p not in fetched}
            unresolved = await self._missing(frontier)
            latest = sorted(eid for eid, ev in fetched.items()
                            if any(p in unresolved for p in ev["prev_events"]))
            if not new or not unresolved or not latest:
                break
        for ev in sorted(fetched.values(),
                         key=lambda e: e.get("depth", 0) if isinstance(e.get("depth"), int) else 0):
            try:
                await self.receive(ev, origin, depth=depth + 1)
            except EventDropped:
                continue
            except Exception as exc:  # noqa: BLE001 - as in _receive_item: drop this one
                if is_infrastructure_failure(exc):
                    raise
                log.exception("dropped fetched PDU from %s (%s)", origin, exc)
                self.dropped["failed"] += 1
        missing = await self._missing(pdu["prev_events"])
        if not missing:
            return
        raise EventDropped(f"prev_events {sorted(missing)} unavailable")

    async def _missing(self, event_ids) -> set[str]:
        have = await self.storage.records(list(event_ids))
        return {e for e in event_ids if e not in have or have[e]["outlier"]}

    async def _authorise_and_store(self, pdu: dict, event_id: str, rv, inbox_ids: list,
                                   forward_to: set = frozenset()) -> str:
        """Authorise and store (or queue in the batch) one event; its outcome: accepted,
        rejected or soft_failed."""
        room_id = pdu["room_id"]
        room = await self.storage.room(room_id)
        ev = dict(pdu, event_id=event_id)
        prev_recs = await self.storage.records(pdu["prev_events"])
        prev_states = []
        for p in pdu["prev_events"]:
            rec = prev_recs[p]
            st = dict(await self.storage.state_map(rec["state_group"]))
            prev_states.append(st)
        before = await resolve(self.storage, rv.identifier, prev_states)
        before_events = await self.storage.state_events(before)
        create = create_event_of(before_events)
        rejected = await self._check_auth_events(ev, rv, create)
        if rejected is None:
            try:
                check_auth(ev, before_events, rv.identifier, create)
            except AuthError as exc:
                rejected = f"auth against state before: {exc}"
        soft_failed = False
        current = await self.storage.state_map(room["current_state_group"])
        if rejected is None:
            try:
                cur_events = await self.storage.state_events(current)
                check_auth(ev, cur_events, rv.identifier, create_event_of(cur_events))
            except AuthError:
                soft_failed = True
        after = dict(before)
        if rejected is None and "state_key" in pdu:
            after[(pdu["type"], pdu["state_key"])] = event_id
        base_group = prev_recs[pdu["prev_events"][0]]["state_group"] if pdu["prev_events"] else None
        base_map = prev_states[0] if prev_states else {}
        spec = state_spec(base_group, base_map, after)
        req = {"events": [{"event_id": event_id, "room_id": room_id, "event": wire(pdu),
                           "rejected": rejected, "soft_failed": soft_failed, "state_after": spec}],
               "inbox_ids": inbox_ids, "rooms": []}
        if rejected is None and not soft_failed:
            await self._apply_redaction(ev, rv, before_events, create, req)
        if rejected is None and forward_to:
            req["destinations"] = {event_id: sorted(forward_to)}
        if rejected is None and not soft_failed:
            extremities = [e for e in room["extremities"] if e not in pdu["prev_events"]] + [event_id]
            ext_recs = await self.storage.records([e for e in extremities if e != event_id])
            maps = [after] + [await self.storage.state_map(ext_recs[e]["state_group"])
                              for e in extremities if e in ext_recs]
            new_current = await resolve(self.storage, rv.identifier, maps)
            cur_spec = ({"same_as": event_id} if new_current == after
                        else state_spec(room["current_state_group"], current, new_current))
            req["rooms"].append({"room_id": room_id, "extremities": extremities,
                                 "expect_extremities": room["extremities"],
                                 "current_state": cur_spec})
        elif soft_failed:
            # the verdict was against our view of the current state, which another writer
            # (a second pdu replica, say) may have moved on: it stands only if they did not
            req["rooms"].append({"room_id": room_id, "expect_extremities": room["extremities"]})
        try:
            await self.storage.persist(req)
        except MatrixError as exc:
            if exc.status == 409:   # another writer moved the room on: redo against it
                return await self._authorise_and_store(pdu, event_id, rv, inbox_ids, forward_to)
            raise
        return "rejected" if rejected is not None else "soft_failed" if soft_failed else "accepted"

    async def _apply_redaction(self, ev, rv, state_events, create, req) -> None:
        target = redacts_target(ev, rv)
        if target is None:
            return
        rec = (await self.storage.records([target])).get(target)
        if rec is None:   # not here yet: applied when it is stored
            req["pending_redactions"] = [pending_redaction(ev, target, state_events, rv, create)]
            return
        update = redaction_update(ev, rec, state_events, rv, create)
        if update:
            req["redactions"] = [update]
            self.storage.forget(target)

    async def _check_auth_events(self, ev: dict, rv, create) -> str | None:
        recs = await self.storage.records(ev["auth_events"])
        auth = [dict(r["event"], event_id=e) for e, r in recs.items() if not r["rejected"]]
        if any(r["rejected"] for r in recs.values()):
            return "an auth event was rejected"
        if len(recs) < len(ev["auth_events"]):
            return "auth events unavailable"
        try:
            check_auth_events_list(ev, auth, rv.identifier, create)
            check_auth(ev, {(a["type"], a.get("state_key")): a for a in auth}, rv.identifier, create)
        except AuthError as exc:
            return f"auth against auth_events: {exc}"
        return None
