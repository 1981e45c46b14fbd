"""Local room actions: create a room, send an event (message, state, membership).

Invariants:
- An event we build passes the auth rules against the room's current state, or the call
  fails with 403 M_FORBIDDEN and nothing is stored.
- The event, its state group, the room's new extremities/current state and the outbox rows
  for every other server in the room commit together; the extremities are compare-and-set
  (a concurrent writer makes us rebuild on the new extremities).
- The same (sender, txn_id) returns the first event_id and stores nothing new.
"""
from __future__ import annotations

import asyncio
import secrets

from services.pdu.authrules import AuthError, check_auth
from services.pdu.builder import build_event
from services.pdu.redaction import redaction_update, redacts_target
from services.pdu.state import state_spec
from services.pdu.storage import wire
from shared.errors import MatrixError
from shared.events import server_of
from shared.room_versions import get_room_version

CAS_RETRIES = 20


def is_local_user(user_id: str, server_name: str) -> bool:
    return isinstance(user_id, str) and user_id.startswith("@") and server_of(user_id) == server_name


async def joined_servers(storage, state: dict) -> set[str]:
    members = {k: e for k, e in state.items() if k[0] == "m.room.member"}
    evs = await storage.events(list(members.values()))
    return {server_of(k[1]) for k, e in members.items()
            if e in evs and evs[e].get("content", {}).get("membership") == "join"}


def create_event_of(state_events: dict) -> dict | None:
    return state_events.get(("m.room.create", ""))


class RoomHandler:
    def __init__(self, storage, tx, server_name: str, key):
        self.storage = storage
        self.tx = tx
        self.server_name = server_name
        self.key = key
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, room_id: str) -> asyncio.Lock:
        return self._locks.setdefault(room_id, asyncio.Lock())

    def require_local(self, user_id: str) -> None:
        if not is_local_user(user_id, self.server_name):
            raise MatrixError(403, "M_FORBIDDEN", f"{user_id} is not a user of {self.server_name}")

    async def create_room(self, creator: str, room_version: str, preset: str, name: str | None) -> str:
        self.require_local(creator)
        rv = get_room_version(room_version)
        room_id = None if rv.room_id_is_create_id else f"!{secrets.token_urlsafe(18)}:{self.server_name}"
        content = {"room_version": room_version}
        if rv.creator_in_content:
            content["creator"] = creator
        users = {} if rv.privileged_creators else {creator: 100}
        pl = {"users": users, "users_default": 0, "events_default": 0, "state_default": 50,
              "ban": 50, "kick": 50, "redact": 50, "invite": 0 if preset == "public_chat" else 50,
              "events": {"m.room.name": 50, "m.room.power_levels": 100,
                         "m.room.history_visibility": 100, "m.room.tombstone": 150 if rv.privileged_creators else 100}}
        plan = [("m.room.create", "", content),
                ("m.room.member", creator, {"membership": "join"}),
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
        await self.tx.persist(req)
        return room_id

    async def send(self, room_id: str, sender: str, type_: str, content: dict,
                   state_key: str | None = None, txn_id: str | None = None,
                   extra_destinations: set[str] = frozenset()) -> str:
        """Build, auth-check and commit one event of a local sender; returns its event_id."""
        self.require_local(sender)
        if txn_id is not None:
            existing = await self.tx.client_txn(sender, txn_id)
            if existing:
                return existing
        for _ in range(CAS_RETRIES):
            async with self.lock(room_id):
                ev, req = await self._prepare(room_id, sender, type_, content, state_key,
                                              extra_destinations)
                if txn_id is not None:
                    req["client_txn"] = {"sender": sender, "txn_id": txn_id, "event_id": ev["event_id"]}
                try:
                    res = await self.tx.persist(req)
                except MatrixError as exc:
                    if exc.status == 409:
                        continue
                    raise
                return res.get("client_txn_event_id") or ev["event_id"]
        raise MatrixError(503, "M_UNKNOWN", "room too busy; try again")

    async def _prepare(self, room_id, sender, type_, content, state_key, extra_destinations):
        room = await self.storage.room(room_id)
        if room is None or room["current_state_group"] is None:
            raise MatrixError(404, "M_NOT_FOUND", f"unknown room {room_id}")
        rv = get_room_version(room["room_version"])
        state = await self.storage.state_map(room["current_state_group"])
        prev = list((await self.storage.events(room["extremities"])).values())
        extra = None
        if type_ == "m.room.redaction" and not rv.redaction_v11:
            extra = {"redacts": content.get("redacts")}   # v10 keeps it at the top level
        ev = build_event(rv=rv, server_name=self.server_name, key=self.key,
                         room_id=room_id, sender=sender, type=type_, content=content,
                         state_key=state_key, prev=prev, state=state, extra=extra)
        state_events = await self.storage.state_events(state)
        try:
            check_auth(ev, state_events, rv.identifier, create_event_of(state_events))
        except AuthError as exc:
            raise MatrixError(403, "M_FORBIDDEN", str(exc))
        new_state = dict(state)
        spec = {"group": room["current_state_group"]}
        if state_key is not None:
            new_state[(type_, state_key)] = ev["event_id"]
            spec = state_spec(room["current_state_group"], state, new_state)
        target = redacts_target(ev, rv)
        if target is not None:
            rec = (await self.storage.records([target])).get(target)
            update = redaction_update(ev, rec, state_events, rv, create_event_of(state_events))
            if update is None:
                raise MatrixError(403, "M_FORBIDDEN", "you may not redact that event")
            self.storage.forget(target)
        servers = (await joined_servers(self.storage, state)) | await joined_servers(self.storage, new_state)
        servers |= set(extra_destinations)
        if type_ == "m.room.member" and state_key:
            servers.add(server_of(state_key))   # the target's server learns of its membership
        servers.discard(self.server_name)
        req = {"events": [{"event_id": ev["event_id"], "room_id": room_id, "event": wire(ev),
                           "state_after": spec}],
               "rooms": [{"room_id": room_id, "extremities": [ev["event_id"]],
                          "expect_extremities": room["extremities"],
                          "current_state": {"same_as": ev["event_id"]}}],
               "destinations": {ev["event_id"]: sorted(servers)}}
        if target is not None:
            req["redactions"] = [update]
        return ev, req
