"""Local room actions: create a room, send an event (message, state, membership).

Invariants:
- An event we build passes the auth rules against the room's current state, or the call
  fails with 403 M_FORBIDDEN and nothing is stored.
- The event, its state group, the room's new extremities/current state and the outbox rows
  for every other server in the room commit together; the extremities are compare-and-set
  (a concurrent writer makes us rebuild on the new extremities).
- The same (sender, txn_id) returns the first event_id and stores nothing new.
- An event is queued for no server that the room's server ACL (in the state after the
  event) denies; an ACL that would deny this server itself is refused (400), as Synapse
  refuses it: the room would be lost to us.
"""
from __future__ import annotations

import asyncio
import secrets

from services.pdu.acl import RoomAcls
from services.pdu.authrules import AuthError, check_auth
from services.pdu.builder import build_event
from services.pdu.redaction import redaction_update, redacts_target
from services.pdu.state import state_spec
from services.pdu.storage import wire
from shared.canonical import CanonicalJSONError
from shared.errors import MatrixError
from shared.events import (EventFormatError, is_valid_federation_user_id, is_valid_user_id, server_of,
                           validate_event_format)
from shared.room_versions import get_room_version
from shared.server_acl import ACL_EVENT, ServerAcl

CAS_RETRIES = 20
MAX_GROUP = 50


def is_local_user(user_id: str, server_name: str) -> bool:
    """A user of ours, on the grammar of the user IDs we create (never a historical one)."""
    return is_valid_user_id(user_id) and server_of(user_id) == server_name


def is_valid_member(user_id, server_name: str) -> bool:
    """A membership target: any user ID of the federation grammar, but one of ours only
    on the grammar of the user IDs we create."""
    return is_valid_federation_user_id(user_id) and (
        server_of(user_id) != server_name or is_valid_user_id(user_id))


async def joined_servers(storage, state: dict) -> set[str]:
    members = {k: e for k, e in state.items() if k[0] == "m.room.member"}
    evs = await storage.events(list(members.values()))
    return {server_of(k[1]) for k, e in members.items()
            if e in evs and evs[e].get("content", {}).get("membership") == "join"}


def create_event_of(state_events: dict) -> dict | None:
    return state_events.get(("m.room.create", ""))


class RoomHandler:
    def __init__(self, storage, tx, server_name: str, key, *, acls=None):
        self.storage = storage
        self.acls = acls or RoomAcls(storage)
        self.tx = tx
        self.server_name = server_name
        self.key = key
        self._locks: dict[str, asyncio.Lock] = {}
        self._queues: dict[str, list] = {}
        self._flushers: dict[str, asyncio.Task] = {}

    def lock(self, room_id: str) -> asyncio.Lock:
        return self._locks.setdefault(room_id, asyncio.Lock())

    def require_local(self, user_id: str) -> None:
        if not is_local_user(user_id, self.server_name):
            raise MatrixError(403, "M_FORBIDDEN", f"{user_id} is not a user of {self.server_name}")

    async def create_room(self, creator: str, room_version: str, preset: str, name: str | None,
                          room_type: str | None = None) -> str:
        self.require_local(creator)
        rv = get_room_version(room_version)
        room_id = None if rv.room_id_is_create_id else f"!{secrets.token_urlsafe(18)}:{self.server_name}"
        content = {"room_version": room_version}
        if room_type is not None:
            content["type"] = room_type   # e.g. m.space
        if rv.creator_in_content:
            content["creator"] = creator
        users = {} if rv.privileged_creators else {creator: 100}
        pl = {"users": users, "users_default": 0, "events_default": 0, "state_default": 50,
              "ban": 50, "kick": 50, "redact": 50, "invite": 0 if preset == "public_chat" else 50,
              "events": {"m.room.name": 50, "m.room.power_levels": 100,
                         "m.room.history_visibility": 100, "m.room.tombstone": 150 if rv.privileged_creators else 100}}
        profile = await self.tx.get_profile(creator) or {}   # the creator's join carries it
        join = {"membership": "join", **{k: v for k, v in profile.items()
                                         if k in ("displayname", "avatar_url") and isinstance(v, str)}}
        plan = [("m.room.create", "", content),
                ("m.room.member", creator, join),
                ("m.room.power_levels", "", pl),
                ("m.room.join_rules", "", {"join_rule": "public" if preset == "public_chat" else "invite"}),
                ("m.room.history_visibility", "", {"history_visibility": "shared"})]
        if name:
            plan.append(("m.room.name", "", {"name": name}))
        state: dict = {}
        built: list[dict] = []
        for type_, sk, body in plan:
            ev = build_event(rv=rv, server_name=self.server_name, key=self.key, room_id=room_id,
                             sender=creator, type=type_, content=body, state_key=sk,
                             prev=built[-1:], state=state)
            try:   # e.g. a name making the event over 64 KiB: no server would take it
                validate_event_format(ev, rv)
            except EventFormatError as exc:
                raise MatrixError(400, "M_BAD_JSON", f"invalid event: {exc}")
            if room_id is None:
                room_id = "!" + ev["event_id"][1:]
            state[(type_, sk)] = ev["event_id"]
            built.append(ev)
        req = {"events": [], "rooms": [{"room_id": room_id, "room_version": room_version,
                                        "extremities": [built[-1]["event_id"]],
                                        "current_state": {"same_as": built[-1]["event_id"]}}]}
        prev_id = None
        for ev in built:
            base = {"same_as": prev_id} if prev_id else None
            req["events"].append({"event_id": ev["event_id"], "room_id": room_id, "event": wire(ev),
                                  "state_after": {"base": base, "delta": [[ev["type"], ev["state_key"], ev["event_id"]]]}})
            prev_id = ev["event_id"]
        await self.storage.persist(req)
        return room_id

    async def send(self, room_id: str, sender: str, type_: str, content: dict,
                   state_key: str | None = None, txn_id: str | None = None,
                   extra_destinations: set[str] = frozenset()) -> str:
        """Build, auth-check and commit one event of a local sender; returns its event_id.

        Concurrent sends to one room are committed together (group commit): while one
        commit is in flight the next ones queue up and then go as a chain of events in a
        single persist call, so throughput grows with the number of senders."""
        self.require_local(sender)
        if txn_id is not None:
            existing = await self.tx.client_txn(sender, txn_id)
            if existing:
                return existing
        return await self._enqueue(room_id, [_Item(sender, type_, content, state_key, txn_id,
                                                   set(extra_destinations))])[0]

    async def send_batch(self, room_id: str, events: list[dict]) -> list:
        """Several events of local senders, in this order, as if sent one after the other
        (each auth-checked on top of the ones before it). Returns, per event, its event_id
        or the MatrixError that refused it; a refused event does not stop the others."""
        room = await self.storage.room(room_id)
        if room is None or room["current_state_group"] is None:
            raise MatrixError(404, "M_NOT_FOUND", f"unknown room {room_id}")
        items, results = [], [None] * len(events)
        for i, e in enumerate(events):
            if not is_local_user(e["sender"], self.server_name):
                results[i] = MatrixError(403, "M_FORBIDDEN",
                                         f"{e['sender']} is not a user of {self.server_name}")
                continue
            items.append((i, _Item(e["sender"], e["type"], e["content"], e.get("state_key"),
                                   e.get("txn_id"), set())))
        futs = self._enqueue(room_id, [it for _, it in items])
        done = await asyncio.gather(*futs, return_exceptions=True)
        for (i, _), r in zip(items, done):
            if isinstance(r, BaseException) and not isinstance(r, MatrixError):
                raise r
            results[i] = r
        return results

    def _enqueue(self, room_id: str, items: list) -> list[asyncio.Future]:
        """Queue items for the room's group commit; their futures, in order."""
        queue = self._queues.setdefault(room_id, [])
        queue.extend(items)
        task = self._flushers.get(room_id)
        if task is None or task.done():
            self._flushers[room_id] = asyncio.create_task(self._flush(room_id))
        return [it.fut for it in items]

    async def _flush(self, room_id: str) -> None:
        queue = self._queues[room_id]
        while queue:
            items, queue[:] = queue[:MAX_GROUP], queue[MAX_GROUP:]
            try:
                await self._commit_group(room_id, items)
            except Exception as exc:  # noqa: BLE001 - hand every caller the failure
                for it in items:
                    if not it.fut.done():
                        it.fut.set_exception(exc)

    async def _commit_group(self, room_id: str, items: list) -> None:
        for _ in range(CAS_RETRIES):
            async with self.lock(room_id):
                ctx = await self._context(room_id)
                built, repeats, firsts = [], [], {}
                for it in items:
                    if it.fut.done():
                        continue
                    if it.txn_id is not None and (it.sender, it.txn_id) in firsts:
                        repeats.append(it)      # same txn_id twice in a group: one event
                        continue
                    try:
                        built.append((it, self._add(ctx, it.sender, it.type, it.content,
                                                    it.state_key, it.extra_destinations)))
                    except MatrixError as exc:
                        it.fut.set_exception(exc)
                        continue
                    if it.txn_id is not None:
                        firsts[(it.sender, it.txn_id)] = it
                if not built:
                    return
                req = ctx["req"]
                req["client_txns"] = [{"sender": it.sender, "txn_id": it.txn_id, "event_id": ev["event_id"]}
                                      for it, ev in built if it.txn_id is not None]
                await self._load_redaction_targets(ctx)
                try:
                    res = await self.storage.persist(req)
                except MatrixError as exc:
                    if exc.status == 409:
                        continue
                    raise
                conflicts = {(c["sender"], c["txn_id"]): c["event_id"]
                             for c in res.get("client_txn_conflicts") or []}
                if not conflicts:
                    for it, ev in built:
                        it.fut.set_result(ev["event_id"])
                    for it in repeats:
                        _copy_outcome(firsts[(it.sender, it.txn_id)].fut, it.fut)
                    return
                for it, _ev in built:   # repeats get their first event; the rest go again
                    if (it.sender, it.txn_id) in conflicts:
                        it.fut.set_result(conflicts[(it.sender, it.txn_id)])
        raise MatrixError(503, "M_UNKNOWN", "room too busy; try again")

    async def _context(self, room_id: str) -> dict:
        """What building events on top of the room's current state needs."""
        room = await self.storage.room(room_id)
        if room is None or room["current_state_group"] is None:
            raise MatrixError(404, "M_NOT_FOUND", f"unknown room {room_id}")
        state = dict(await self.storage.state_map(room["current_state_group"]))
        return {"room": room, "rv": get_room_version(room["room_version"]), "state": state,
                "state_events": dict(await self.storage.state_events(state)),
                "prev": list((await self.storage.events(room["extremities"])).values()),
                "base": {"group": room["current_state_group"]},
                "joined": await joined_servers(self.storage, state),
                "req": {"events": [], "destinations": {}, "redactions": [],
                        "rooms": [{"room_id": room_id, "expect_extremities": room["extremities"]}]}}

    def _add(self, ctx: dict, sender, type_, content, state_key, extra_destinations) -> dict:
        """Build the next event of a group on top of `ctx` (auth-checked), and add it to
        the group's persist request; raises 400 if the event would not be a valid PDU
        (floats, out-of-range integers, too big...), 403 if refused, leaving `ctx` as it was."""
        rv, room_id = ctx["rv"], ctx["room"]["room_id"]
        if type_ == "m.room.member" and not is_valid_member(state_key, self.server_name):
            raise MatrixError(400, "M_INVALID_PARAM", "a membership's state_key must be a user ID")
        if type_ == ACL_EVENT and state_key == "" and not ServerAcl(content).allows(self.server_name):
            raise MatrixError(400, "M_INVALID_PARAM", "a server ACL may not deny this server")
        extra = None
        if type_ == "m.room.redaction" and not rv.redaction_v11:
            extra = {"redacts": content.get("redacts")}   # v10 keeps it at the top level
        try:   # a client's content: it must make an event any server accepts (as we do)
            ev = build_event(rv=rv, server_name=self.server_name, key=self.key,
                             room_id=room_id, sender=sender, type=type_, content=content,
                             state_key=state_key, prev=ctx["prev"], state=ctx["state"], extra=extra)
            validate_event_format(ev, rv)
        except (CanonicalJSONError, EventFormatError) as exc:
            raise MatrixError(400, "M_BAD_JSON", f"invalid event: {exc}")
        create = create_event_of(ctx["state_events"])
        try:
            check_auth(ev, ctx["state_events"], rv.identifier, create)
        except AuthError as exc:
            raise MatrixError(403, "M_FORBIDDEN", str(exc))
        target = redacts_target(ev, rv)
        if target is not None:
            ctx.setdefault("redactions", []).append((ev, target, dict(ctx["state_events"]), create))
        eid = ev["event_id"]
        servers = set(ctx["joined"])
        spec = ctx["base"]
        if state_key is not None:
            spec = {"base": ctx["base"], "delta": [[type_, state_key, eid]]}
            ctx["state"][(type_, state_key)] = eid
            ctx["state_events"][(type_, state_key)] = ev
            if type_ == "m.room.member":
                if content.get("membership") == "join":
                    ctx["joined"] = ctx["joined"] | {server_of(state_key)}
                servers.add(server_of(state_key))   # the target's server learns of it
        servers |= set(extra_destinations)
        servers.discard(self.server_name)
        acl = self.acls.of_state_events(ctx["state_events"])
        if acl is not None:
            servers = {s for s in servers if acl.allows(s)}
        req = ctx["req"]
        req["events"].append({"event_id": eid, "room_id": room_id, "event": wire(ev),
                              "state_after": spec})
        req["destinations"][eid] = sorted(servers)
        req["rooms"][0].update(extremities=[eid], current_state={"same_as": eid})
        ctx["base"] = {"same_as": eid}
        ctx["prev"] = [ev]
        return ev

    async def _load_redaction_targets(self, ctx: dict) -> None:
        for ev, target, state_events, create in ctx.pop("redactions", []):
            rec = (await self.storage.records([target])).get(target)
            update = redaction_update(ev, rec, state_events, ctx["rv"], create)
            if update is None:
                raise MatrixError(403, "M_FORBIDDEN", "you may not redact that event")
            ctx["req"]["redactions"].append(update)

    async def _prepare(self, room_id, sender, type_, content, state_key, extra_destinations):
        """One event and its persist request, for callers that commit it themselves
        (an invite must first be countersigned by the invitee's server)."""
        ctx = await self._context(room_id)
        ev = self._add(ctx, sender, type_, content, state_key, extra_destinations)
        await self._load_redaction_targets(ctx)
        return ev, ctx["req"]


def _copy_outcome(src: asyncio.Future, dst: asyncio.Future) -> None:
    if dst.done():
        return
    if src.done() and src.exception() is None:
        dst.set_result(src.result())
    else:   # the first of the repeated txn_id went again: so does this one, by itself
        dst.set_exception(MatrixError(409, "M_UNKNOWN", "repeated txn_id; retry"))


class _Item:
    __slots__ = ("sender", "type", "content", "state_key", "txn_id", "extra_destinations", "fut")

    def __init__(self, sender, type_, content, state_key, txn_id, extra_destinations):
        self.sender, self.type, self.content, self.state_key = sender, type_, content, state_key
        self.txn_id, self.extra_destinations = txn_id, extra_destinations
        self.fut = asyncio.get_running_loop().create_future()
