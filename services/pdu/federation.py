"""Answers to other servers' requests (forwarded by transport with the verified origin).

Invariants:
- Retrieval (/event, /state, /state_ids, /backfill, /get_missing_events, /event_auth) is
  answered only to a server with a joined or invited member in the room: else 403.
- Every request about a room we hold (retrieval, make/send join and leave, invite) from a
  server the room's server ACL denies is refused first: 403 M_FORBIDDEN (`acl.py`).
- /state and /state_ids give the state *before* the event and the auth chain of that state.
- Sizes are capped: get_missing_events at GME_MAX, backfill at BACKFILL_MAX events.
- Membership endpoints accept only an event of the right type and membership, whose
  sender (= state_key) is on the requesting server, for the room named in the path, with
  the event ID named in the path.
- make_knock / send_knock as for joins (rooms of a version with knocking, else 400
  M_INCOMPATIBLE_ROOM_VERSION); send_knock answers the room's stripped state
  (`knock_room_state`: full events of the STRIPPED_STATE types, as our invites send).
- make_join / make_leave templates carry `origin` (our server name), as the spec requires.
- Restricted joins (`restricted.py`): make_join names one of our users who can invite in
  join_authorised_via_users_server when the join rule needs one; send_join of such a join
  is signed by us before it is processed, or refused (nothing stored) if we cannot vouch.
- A received invite is signed by us only if its invite_room_state passes
  `invite_state.check_invite_room_state` (else 400 M_INVALID_PARAM).
"""
from __future__ import annotations

from services.pdu.acl import RoomAcls
from services.pdu.authrules import AuthError, check_auth
from services.pdu.builder import auth_event_ids
from services.pdu.inbound import EventDropped
from services.pdu.invite_state import check_invite_room_state
from services.pdu.membership import STRIPPED_STATE
from services.pdu.restricted import authoriser_for, check_authoriser
from services.pdu.rooms import create_event_of, joined_servers
from services.pdu.state import load_auth_closure, resolve
from services.pdu.storage import wire
from shared.errors import MatrixError
from shared.events import (EventFormatError, compute_content_hash, compute_event_id,
                           is_valid_federation_user_id, server_of, sign_event,
                           validate_event_format)
from shared.room_versions import KNOWN_ROOM_VERSIONS, get_room_version

GME_MAX = 20
BACKFILL_MAX = 100


def _forbidden(msg="Server is not in the room"):
    return MatrixError(403, "M_FORBIDDEN", msg)


class FederationHandler:
    def __init__(self, storage, tx, rooms, inbound, server_name: str, key, now_ms, *, acls=None):
        self.storage = storage
        self.acls = acls or RoomAcls(storage)
        self.tx = tx
        self.rooms = rooms
        self.inbound = inbound
        self.server_name = server_name
        self.key = key
        self.now_ms = now_ms

    # -- helpers -----------------------------------------------------------------------
    async def _room(self, room_id: str, origin: str) -> dict:
        """The room, once its server ACL allows `origin` (403 otherwise; 404 unknown)."""
        room = await self.storage.room(room_id)
        if room is None or room["current_state_group"] is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        await self.acls.check(room_id, origin)
        return room

    async def _check_origin_in_room(self, origin: str, room: dict) -> None:
        state = await self.storage.state_map(room["current_state_group"])
        members = {k[1]: e for k, e in state.items() if k[0] == "m.room.member"
                   and server_of(k[1]) == origin}
        evs = await self.storage.events(list(members.values()))
        if not any(e.get("content", {}).get("membership") in ("join", "invite")
                   for e in evs.values()):
            raise _forbidden()

    async def state_before(self, event: dict, room_version: str) -> dict:
        prevs = await self.storage.records(event.get("prev_events", []))
        maps = [await self.storage.state_map(r["state_group"]) for r in prevs.values()
                if r["state_group"] is not None]
        return await resolve(self.storage, room_version, maps)

    async def _event_in_room(self, origin, room_id, event_id):
        room = await self._room(room_id, origin)
        await self._check_origin_in_room(origin, room)
        rec = (await self.storage.records([event_id])).get(event_id)
        if rec is None or rec["room_id"] != room_id:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown event")
        return room, rec

    def _pdus_response(self, pdus) -> dict:
        return {"origin": self.server_name, "origin_server_ts": self.now_ms(), "pdus": pdus}

    # -- retrieval ---------------------------------------------------------------------
    async def get_event(self, origin: str, event_id: str) -> dict:
        rec = (await self.storage.records([event_id])).get(event_id)
        if rec is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown event")
        room = await self._room(rec["room_id"], origin)
        await self._check_origin_in_room(origin, room)
        return self._pdus_response([rec["event"]])

    async def state_ids(self, origin: str, room_id: str, event_id: str, full: bool) -> dict:
        if not event_id:
            raise MatrixError(400, "M_MISSING_PARAM", "event_id is required")
        room, rec = await self._event_in_room(origin, room_id, event_id)
        state = await self.state_before(rec["event"], room["room_version"])
        chain = await load_auth_closure(self.storage, state.values())
        chain_ids = [e for e in chain if e not in set(state.values())]
        if not full:
            return {"pdu_ids": list(state.values()), "auth_chain_ids": chain_ids}
        recs = await self.storage.records(list(state.values()) + chain_ids)
        return {"pdus": [recs[e]["event"] for e in state.values() if e in recs],
                "auth_chain": [recs[e]["event"] for e in chain_ids if e in recs]}

    async def event_auth(self, origin: str, room_id: str, event_id: str) -> dict:
        _room, rec = await self._event_in_room(origin, room_id, event_id)
        chain = await load_auth_closure(self.storage, rec["event"].get("auth_events", []))
        recs = await self.storage.records(list(chain))
        return {"auth_chain": [r["event"] for r in recs.values()]}

    async def backfill(self, origin: str, room_id: str, v: list[str], limit: int) -> dict:
        room = await self._room(room_id, origin)
        await self._check_origin_in_room(origin, room)
        limit = max(0, min(limit, BACKFILL_MAX))
        out = await self._walk_prev(room_id, list(v), set(), limit, include_start=True)
        return self._pdus_response([r["event"] for r in out])

    async def get_missing_events(self, origin: str, room_id: str, body: dict) -> dict:
        earliest, latest = body.get("earliest_events"), body.get("latest_events")
        if not isinstance(earliest, list) or not isinstance(latest, list):
            raise MatrixError(400, "M_BAD_JSON", "earliest_events and latest_events are required lists")
        limit = body.get("limit", 10)
        min_depth = body.get("min_depth", 0)
        if not isinstance(limit, int) or not isinstance(min_depth, int):
            raise MatrixError(400, "M_BAD_JSON", "limit and min_depth must be integers")
        room = await self._room(room_id, origin)
        await self._check_origin_in_room(origin, room)
        limit = max(0, min(limit, GME_MAX))
        start = []
        for rec in (await self.storage.records([e for e in latest if isinstance(e, str)])).values():
            start += rec["event"].get("prev_events", [])
        found = await self._walk_prev(room_id, start, {e for e in earliest if isinstance(e, str)},
                                      limit, include_start=True, min_depth=min_depth)
        found.sort(key=lambda r: r["event"].get("depth", 0))
        return {"events": [r["event"] for r in found]}

    async def _walk_prev(self, room_id, start, stop: set, limit, *, include_start, min_depth=0):
        """Breadth-first over prev_events from `start`, skipping `stop`, up to `limit`."""
        seen, out, frontier = set(stop), [], [e for e in start if isinstance(e, str)]
        while frontier and len(out) < limit:
            recs = await self.storage.records([e for e in frontier if e not in seen])
            nxt = []
            for e in frontier:
                if e in seen or e not in recs:
                    continue
                seen.add(e)
                r = recs[e]
                if r["room_id"] != room_id or r["outlier"] or r["event"].get("depth", 0) < min_depth:
                    continue
                if len(out) < limit:
                    out.append(r)
                nxt += r["event"].get("prev_events", [])
            frontier = nxt
        return out

    # -- membership --------------------------------------------------------------------
    async def make_membership(self, origin: str, room_id: str, user_id: str, membership: str,
                              versions: list[str] | None) -> dict:
        if not is_valid_federation_user_id(user_id):
            raise MatrixError(400, "M_INVALID_PARAM", "invalid user ID")
        if server_of(user_id) != origin:
            raise _forbidden("User is not on the requesting server")
        room = await self._room(room_id, origin)
        if versions is not None and room["room_version"] not in versions:
            raise MatrixError(400, "M_INCOMPATIBLE_ROOM_VERSION",
                              "Your homeserver does not support this room version",
                              room_version=room["room_version"])
        rv = get_room_version(room["room_version"])
        if membership == "knock" and not rv.knock:
            raise MatrixError(400, "M_INCOMPATIBLE_ROOM_VERSION", "This room version does not allow knocking",
                              room_version=room["room_version"])
        state = await self.storage.state_map(room["current_state_group"])
        state_events = await self.storage.state_events(state)
        content = {"membership": membership}
        if membership == "join":
            via = await authoriser_for(self.storage, state_events, rv, self.server_name, user_id)
            if via is not None:
                content["join_authorised_via_users_server"] = via
        prev = list((await self.storage.events(room["extremities"])).values())
        ev = {"type": "m.room.member", "room_id": room_id, "sender": user_id,
              "state_key": user_id, "content": content,
              "origin": self.server_name, "origin_server_ts": self.now_ms(),
              "prev_events": [p["event_id"] for p in prev],
              "depth": max([p.get("depth", 0) for p in prev], default=0) + 1}
        ev["auth_events"] = auth_event_ids(ev, state, rv)
        try:
            check_auth(dict(ev, event_id="$template"), state_events, rv.identifier,
                       create_event_of(state_events))
        except AuthError as exc:
            raise _forbidden(f"You are not allowed to {membership} this room: {exc}")
        return {"room_version": room["room_version"], "event": ev}

    def _check_membership_event(self, origin, room_id, event_id, event, membership, rv):
        try:
            validate_event_format(event, rv)
        except EventFormatError as exc:
            raise MatrixError(400, "M_BAD_JSON", f"invalid event: {exc}")
        if event.get("type") != "m.room.member":
            raise MatrixError(400, "M_INVALID_PARAM", "not a membership event")
        if event.get("content", {}).get("membership") != membership:
            raise MatrixError(400, "M_INVALID_PARAM", f"membership must be {membership}")
        if event.get("room_id") != room_id:
            raise MatrixError(400, "M_INVALID_PARAM", "room_id does not match the path")
        if compute_event_id(event, rv) != event_id:
            raise MatrixError(400, "M_INVALID_PARAM", "event_id does not match the path")
        if membership != "invite":
            if event.get("state_key") != event.get("sender"):
                raise MatrixError(400, "M_INVALID_PARAM", "state_key must be the sender")
        if server_of(event.get("sender", "")) != origin:
            raise _forbidden("sender is not on the requesting server")

    async def send_membership(self, origin, room_id, event_id, event, membership) -> dict:
        """send_join / send_leave: store the event as any received one, forward it, answer."""
        room = await self._room(room_id, origin)
        rv = get_room_version(room["room_version"])
        self._check_membership_event(origin, room_id, event_id, event, membership, rv)
        if membership == "join":
            event = await self._countersign_restricted(room, rv, event)
        async with self.rooms.lock(room_id):
            state_before_join = await self.storage.state_map(room["current_state_group"])
            others = await self.acls.filter(state_before_join,
                                            await joined_servers(self.storage, state_before_join))
            try:
                await self.inbound.receive(event, origin, forward_to=others - {origin, self.server_name})
            except EventDropped as exc:
                raise _forbidden(f"event not accepted: {exc}")
        rec = (await self.storage.records([event_id]))[event_id]
        if rec["rejected"] or rec["soft_failed"]:
            raise _forbidden(f"event not allowed: {rec['rejected'] or 'soft-failed'}")
        if membership == "knock":
            return {"knock_room_state": await self.stripped_state(room_id)}
        if membership != "join":
            return {}
        state = await self.state_before(rec["event"], room["room_version"])
        chain = await load_auth_closure(self.storage, list(state.values()) + rec["event"]["auth_events"])
        recs = await self.storage.records(list(chain) + list(state.values()))
        state_ids = set(state.values())
        servers = await joined_servers(self.storage, await self.storage.state_map(
            (await self.storage.room(room_id))["current_state_group"]))
        return {"state": [recs[e]["event"] for e in state.values() if e in recs],
                "auth_chain": [r["event"] for e, r in recs.items() if e not in state_ids],
                "event": rec["event"], "members_omitted": False,
                "servers_in_room": sorted(servers)}

    async def stripped_state(self, room_id: str) -> list[dict]:
        """The room's current state events of the types a knocker (or invitee) is shown."""
        room = await self.storage.room(room_id)
        state = await self.storage.state_map(room["current_state_group"])
        evs = await self.storage.events([e for k, e in state.items() if k[0] in STRIPPED_STATE])
        return [wire(e) for e in evs.values()]

    async def _countersign_restricted(self, room: dict, rv, event: dict) -> dict:
        """A join naming one of our users in join_authorised_via_users_server, with our
        signature added once `restricted.check_authoriser` vouches for it (else it raises,
        and nothing is stored). The content hash must hold: re-hashing would change the ID."""
        state_events = await self.storage.state_events(
            await self.storage.state_map(room["current_state_group"]))
        via = event["content"].get("join_authorised_via_users_server")
        if not await check_authoriser(self.storage, state_events, rv, self.server_name,
                                      event["sender"], via):
            return event
        hashes = event.get("hashes")
        if not isinstance(hashes, dict) or hashes.get("sha256") != compute_content_hash(event):
            raise MatrixError(400, "M_INVALID_PARAM", "the join's content hash does not match")
        return sign_event(dict(event), self.server_name, self.key, rv)

    async def invite(self, origin, room_id, event_id, body) -> dict:
        await self.acls.check(room_id, origin)   # a room we hold: its ACL applies
        version = body.get("room_version")
        event = body.get("event")
        if version not in KNOWN_ROOM_VERSIONS:
            raise MatrixError(400, "M_INCOMPATIBLE_ROOM_VERSION",
                              "Your homeserver does not support this room version", room_version=version)
        if not isinstance(event, dict):
            raise MatrixError(400, "M_BAD_JSON", "event is required")
        rv = get_room_version(version)
        self._check_membership_event(origin, room_id, event_id, event, "invite", rv)
        target = event.get("state_key")
        if not isinstance(target, str) or server_of(target) != self.server_name:
            raise _forbidden("invitee is not a user of this server")
        try:
            event = await self.inbound.keyring.check_event(event, rv)
        except Exception as exc:  # noqa: BLE001
            raise _forbidden(f"bad signature: {exc}")
        await check_invite_room_state(body.get("invite_room_state"), room_id, rv, self.inbound.keyring)
        signed = sign_event(wire(dict(event)), self.server_name, self.key, rv)
        await self.storage.persist({"events": [{"event_id": event_id, "room_id": room_id,
                                           "event": signed, "outlier": False}],
                               "rooms": [{"room_id": room_id, "room_version": version}]})
        return {"event": signed}
