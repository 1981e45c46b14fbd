"""Membership actions of local users that involve other servers: join a remote room
(make_join / send_join v2), invite a remote user (invite v2); and the exchange of a
third-party invite that the invitee's server asks of us (exchange_third_party_invite).

Invariants:
- A make_join (make_leave) template is signed only if it is exactly the join (leave) we
  asked for: the room and user we named, type m.room.member, that membership, a room
  version we support, canonical JSON; otherwise 502 M_UNKNOWN and nothing is sent. A join
  tries each candidate server in turn; when all fail, a 403 from any of them is the answer,
  else the one error they all gave, else 502.
- A restricted join (the template names join_authorised_via_users_server) is stored
  only if send_join's `event` carries the authorising server's valid signature; a server
  answering make_join M_UNABLE_TO_AUTHORISE_JOIN / M_UNABLE_TO_GRANT_JOIN is one failed
  candidate: the next server is tried.
- A send_join answer is used only if its state holds the room's create event of that room
  version, tied to the room (v10/v11: its room_id is the room's; v12: the room ID is "!" +
  its event ID body), and only its correctly signed events of that room (room_id) are
  stored (as outliers; the join itself is the room's first event in our DAG view, its
  state the answer's state). An answer whose state has a create, power levels or join
  rules of another room is refused (502); other events of another room are dropped.
- An invite is committed only after the invitee's server countersigned it: the returned
  event is the one we sent apart from `signatures` and `unsigned`, and carries a valid
  signature of the invitee's server (else 502, nothing committed). We store our event with
  that signature added. An invitee refusing our invite_room_state (400 M_INVALID_PARAM /
  M_MISSING_PARAM) is our fault, not the client's: 502.
- Joins we build and invites we build carry the member's displayname / avatar_url when
  the member is ours and the homeserver told us a profile (`PUT /v1/profile`).
- exchange_third_party_invite is answered only for a room we are in, to the invitee's own
  server; the invite is built from the given one (display_name from the token's
  m.room.third_party_invite), passes the auth rules (which verify `signed`), and is sent
  as any remote invite.
"""
from __future__ import annotations

import logging
from urllib.parse import quote

from services.pdu.authrules import AuthError, check_auth, check_auth_events_list
from services.pdu.builder import sign_template
from services.pdu.keyring import SignatureFailed, keys_valid_at
from services.pdu.restricted import authoriser_for
from services.pdu.storage import wire
from shared.canonical import CanonicalJSONError
from shared.errors import MatrixError
from shared.events import (EventFormatError, compute_event_id, is_valid_user_id,
                           room_id_from_create, server_of, validate_event_format,
                           verify_event_signature)
from shared.room_versions import KNOWN_ROOM_VERSIONS, get_room_version

log = logging.getLogger("fedstack.pdu.membership")

STRIPPED_STATE = ("m.room.create", "m.room.join_rules", "m.room.name", "m.room.canonical_alias",
                  "m.room.encryption", "m.room.avatar", "m.room.topic")
# State whose copy from another room would change who may do what: refuse such an answer.
AUTH_STATE = ("m.room.create", "m.room.power_levels", "m.room.join_rules")


def q(s: str) -> str:
    return quote(s, safe="")


def check_auth_chain(events: dict[str, dict], rv, create: dict) -> dict[str, str]:
    """Auth-check a send_join answer's events against their own auth_events, oldest
    first (by depth, then by dependency); returns {event_id: reason} of rejected ones."""
    rejected: dict[str, str] = {}
    done: set[str] = set()
    create_id = compute_event_id(create, rv)
    order = sorted(events, key=lambda e: (events[e].get("depth", 0), e))
    while order:
        progress = []
        for eid in order:
            ev = events[eid]
            deps = [a for a in ev.get("auth_events", []) if a in events]
            if any(d not in done for d in deps):
                continue
            progress.append(eid)
            done.add(eid)
            auth = [dict(events[a], event_id=a) for a in ev.get("auth_events", [])
                    if a in events and a not in rejected]
            try:
                if len(auth) != len(ev.get("auth_events", [])):
                    raise AuthError("auth events missing or rejected")
                full = dict(ev, event_id=eid)
                cr = dict(create, event_id=create_id)
                check_auth_events_list(full, auth, rv.identifier, cr)
                check_auth(full, {(a["type"], a.get("state_key")): a for a in auth}, rv.identifier, cr)
            except AuthError as exc:
                rejected[eid] = f"auth against auth_events: {exc}"
        if not progress:   # a cycle or a dependency outside the answer: reject the rest
            for eid in order:
                rejected[eid] = "auth events form a cycle"
            break
        order = [e for e in order if e not in done]
    return rejected


def in_room(event_id: str, event: dict, room_id: str, create_id: str) -> bool:
    """An event of the room: its create event (by ID), or any other with its room_id."""
    if event.get("type") == "m.room.create":
        return event_id == create_id
    return event.get("room_id") == room_id


def same_but_signatures(returned: dict, sent: dict) -> bool:
    """The returned event is the one sent apart from `signatures` and `unsigned`."""
    def rest(e):
        return {k: v for k, v in e.items() if k not in ("signatures", "unsigned")}
    return isinstance(returned, dict) and rest(returned) == rest(sent)


class MembershipHandler:
    def __init__(self, storage, tx, rooms, keyring, server_name: str, key):
        self.storage = storage
        self.tx = tx
        self.rooms = rooms
        self.keyring = keyring
        self.server_name = server_name
        self.key = key

    async def join(self, room_id: str, user_id: str, servers: list[str]) -> str:
        self.rooms.require_local(user_id)
        room = await self.storage.room(room_id)
        if room is not None and room["current_state_group"] is not None:
            return await self.rooms.send(room_id, user_id, "m.room.member",
                                         await self._local_join_content(room, user_id),
                                         state_key=user_id)
        return await self._via_candidates(room_id, servers, "join",
                                          lambda s: self._join_via(s, room_id, user_id))

    async def _with_profile(self, content: dict, user_id: str) -> dict:
        """`content` with the user's displayname / avatar_url added where it has none, as
        Synapse's joins and invites carry them, for a user of ours (from the profile the
        homeserver told us). A remote invitee's profile is not asked for: an invite waits
        on no extra request to the invitee's server, which fills in its own on joining."""
        if server_of(user_id) != self.server_name:
            return content
        profile = await self.tx.get_profile(user_id) or {}
        out = dict(content)
        for k in ("displayname", "avatar_url"):
            if isinstance(profile.get(k), str) and k not in out:
                out[k] = profile[k]
        return out

    async def _local_join_content(self, room: dict, user_id: str) -> dict:
        """A join to a room we are in: a restricted room's names our authorising user."""
        content = await self._with_profile({"membership": "join"}, user_id)
        state_events = await self.storage.state_events(
            await self.storage.state_map(room["current_state_group"]))
        via = await authoriser_for(self.storage, state_events, get_room_version(room["room_version"]),
                                   self.server_name, user_id)
        if via is not None:
            content["join_authorised_via_users_server"] = via
        return content

    async def _request(self, server, method, path, *, query=None, body=None) -> dict:
        resp = await self.tx.federation_request(server, method, path, query=query, body=body)
        if resp.get("status") != 200 or not isinstance(resp.get("body"), dict):
            detail = resp.get("body") or resp.get("error")
            raise MatrixError(502 if not resp.get("status") else resp["status"],
                              (detail or {}).get("errcode", "M_UNKNOWN") if isinstance(detail, dict) else "M_UNKNOWN",
                              f"{method} {path.split('/')[4]} at {server}: {resp.get('status')} {detail}")
        return resp["body"]

    async def _checked_template(self, made: dict, room_id: str, user_id: str,
                                membership: str) -> tuple:
        """(room version, template with our profile) of a make_join/make_knock answer, if it
        is exactly the membership we asked for (400 M_INCOMPATIBLE_ROOM_VERSION for a
        version we do not support, else 502)."""
        version, template = made.get("room_version"), made.get("event")
        if version not in KNOWN_ROOM_VERSIONS or not isinstance(template, dict):
            raise MatrixError(400, "M_INCOMPATIBLE_ROOM_VERSION", f"unsupported room version {version!r}")
        content = template.get("content")
        if (template.get("type") != "m.room.member" or template.get("room_id") != room_id
                or template.get("sender") != user_id or template.get("state_key") != user_id
                or not isinstance(content, dict) or content.get("membership") != membership):
            raise MatrixError(502, "M_UNKNOWN",
                              f"make_{membership} template is not the {membership} we asked for")
        return (get_room_version(version),
                dict(template, content=await self._with_profile(content, user_id)))

    async def _join_via(self, server: str, room_id: str, user_id: str) -> str:
        made = await self._request(server, "GET", f"/_matrix/federation/v1/make_join/{q(room_id)}/{q(user_id)}",
                                   query=[("ver", v) for v in KNOWN_ROOM_VERSIONS])
        rv, template = await self._checked_template(made, room_id, user_id, "join")
        try:
            join = sign_template(template, rv=rv, server_name=self.server_name, key=self.key)
            event_id = join.pop("event_id")
            validate_event_format(join, rv)
        except (EventFormatError, CanonicalJSONError) as exc:   # e.g. a float in the template
            raise MatrixError(502, "M_UNKNOWN", f"make_join template invalid: {exc}")
        resp = await self._request(server, "PUT", f"/_matrix/federation/v2/send_join/{q(room_id)}/{q(event_id)}",
                                   body=join)
        await self._store_join(room_id, rv.identifier, rv, join, event_id, resp)
        return event_id

    async def _checked(self, events, rv) -> dict[str, dict]:
        out = {}
        for ev in events if isinstance(events, list) else []:
            if not isinstance(ev, dict):
                continue
            try:
                validate_event_format(ev, rv)
                ev = await self.keyring.check_event(ev, rv)
            except (EventFormatError, SignatureFailed):
                continue
            out[compute_event_id(ev, rv)] = ev
        return out

    async def _store_join(self, room_id, version, rv, join, event_id, resp) -> None:
        state = await self._checked(resp.get("state"), rv)
        chain = await self._checked(resp.get("auth_chain"), rv)
        creates = [e for e in state.values() if e.get("type") == "m.room.create"]
        if len(creates) != 1 or creates[0].get("content", {}).get("room_version", "1") != version:
            raise MatrixError(502, "M_UNKNOWN", "send_join state lacks the room's create event")
        state, chain = self._of_room(room_id, rv, creates[0], state, chain)
        returned = resp.get("event")
        if isinstance(returned, dict) and compute_event_id(returned, rv) == event_id:
            join = returned  # the resident may have added its signature
        await self._check_authorised_join(join, rv)
        outliers = {**chain, **state}
        rejected = check_auth_chain(outliers, rv, creates[0])
        if rejected.get(compute_event_id(creates[0], rv)):
            raise MatrixError(502, "M_UNKNOWN", "send_join create event fails the auth rules")
        delta = [[e["type"], e["state_key"], eid] for eid, e in state.items()
                 if "state_key" in e and eid not in rejected]
        delta.append(["m.room.member", join["state_key"], event_id])
        req = {"events": [{"event_id": eid, "room_id": room_id, "event": ev, "outlier": True,
                           "rejected": rejected.get(eid)} for eid, ev in outliers.items()]
               + [{"event_id": event_id, "room_id": room_id, "event": join,
                   "state_after": {"base": None, "delta": delta}}],
               "rooms": [{"room_id": room_id, "room_version": version, "extremities": [event_id],
                          "current_state": {"same_as": event_id}}]}
        await self.storage.persist(req)

    async def _check_authorised_join(self, join: dict, rv) -> None:
        """A restricted join (join_authorised_via_users_server) is stored only with the
        authorising server's valid signature: the resident returns it in send_join's
        `event`; without it every server would reject our join (502, nothing stored)."""
        if "join_authorised_via_users_server" not in (join.get("content") or {}):
            return
        try:
            await self.keyring.check_event(join, rv)
        except SignatureFailed as exc:
            raise MatrixError(502, "M_UNKNOWN", f"restricted join not signed by its authoriser: {exc}")

    @staticmethod
    def _of_room(room_id, rv, create, state, chain) -> tuple[dict, dict]:
        """The answer's state and auth chain without events of another room; refuses (502)
        an answer whose create event, power levels or join rules are of another room."""
        try:
            tied = room_id_from_create(create, rv) == room_id
        except EventFormatError:
            tied = False
        if not tied:
            raise MatrixError(502, "M_UNKNOWN", "send_join create event is of another room")
        create_id = compute_event_id(create, rv)
        foreign = {eid for eid, e in {**chain, **state}.items()
                   if not in_room(eid, e, room_id, create_id)}
        if any(state[e].get("type") in AUTH_STATE for e in foreign if e in state):
            raise MatrixError(502, "M_UNKNOWN", "send_join state holds auth events of another room")
        if foreign:
            log.info("join of %s: dropped %d events of another room", room_id, len(foreign))
        return ({e: ev for e, ev in state.items() if e not in foreign},
                {e: ev for e, ev in chain.items() if e not in foreign})

    async def knock(self, room_id: str, user_id: str, servers: list[str], reason: str | None) -> str:
        """Knock on a room: locally if we are in it, else through make_knock/send_knock at
        each candidate server in turn (errors as for joins)."""
        self.rooms.require_local(user_id)
        content = {"membership": "knock"}
        if reason is not None:
            content["reason"] = reason
        room = await self.storage.room(room_id)
        if room is not None and room["current_state_group"] is not None:
            return await self.rooms.send(room_id, user_id, "m.room.member", content, state_key=user_id)
        return await self._via_candidates(room_id, servers, "knock",
                                          lambda s: self._knock_via(s, room_id, user_id, reason))

    async def _knock_via(self, server: str, room_id: str, user_id: str, reason: str | None) -> str:
        """make_knock, sign, send_knock; the knock is stored (not as an outlier, the room
        without state) so subscriptions see it, its unsigned.knock_room_state the answer's."""
        made = await self._request(server, "GET", f"/_matrix/federation/v1/make_knock/{q(room_id)}/{q(user_id)}",
                                   query=[("ver", v) for v, rv in KNOWN_ROOM_VERSIONS.items() if rv.knock])
        rv, template = await self._checked_template(made, room_id, user_id, "knock")
        if reason is not None:
            template["content"]["reason"] = reason
        try:
            ev = sign_template(template, rv=rv, server_name=self.server_name, key=self.key)
            event_id = ev.pop("event_id")
            validate_event_format(ev, rv)
        except (EventFormatError, CanonicalJSONError) as exc:
            raise MatrixError(502, "M_UNKNOWN", f"make_knock template invalid: {exc}")
        resp = await self._request(server, "PUT", f"/_matrix/federation/v1/send_knock/{q(room_id)}/{q(event_id)}",
                                   body=ev)
        state = resp.get("knock_room_state", resp.get("knock_state_events"))
        stored = dict(ev, unsigned={"knock_room_state": [e for e in state if isinstance(e, dict)]
                                    if isinstance(state, list) else []})
        await self.storage.persist({"events": [{"event_id": event_id, "room_id": room_id,
                                                "event": stored, "outlier": False}],
                                    "rooms": [{"room_id": room_id, "room_version": rv.identifier}]})
        return event_id

    async def _via_candidates(self, room_id: str, servers: list[str], what: str, attempt) -> str:
        """`attempt(server)` at each candidate (the given servers, then the room ID's); when
        all fail, a 403 from any is the answer, else the one error all gave, else 502."""
        candidates = list(dict.fromkeys(servers + ([server_of(room_id)] if ":" in room_id else [])))
        candidates = [s for s in candidates if s and s != self.server_name]
        if not candidates:
            raise MatrixError(404, "M_NOT_FOUND", f"Unknown room and no server to {what} through")
        errors, failures = [], set()
        for server in candidates:
            try:
                return await attempt(server)
            except MatrixError as exc:
                errors.append(f"{server}: {exc.error}")
                failures.add((exc.status, exc.errcode))
                log.info("%s of %s via %s failed: %s", what, room_id, server, exc.error)
        status, errcode = ((403, "M_FORBIDDEN") if any(s == 403 for s, _ in failures)
                           else next(iter(failures)) if len(failures) == 1 else (502, "M_UNKNOWN"))
        raise MatrixError(status, errcode, f"could not {what}: " + "; ".join(errors))

    async def leave(self, room_id: str, user_id: str) -> str:
        """Leave a room we are in; or reject an invite to a room we are not in, through the
        inviting server (make_leave / send_leave v2): a join-then-leave would accept it."""
        self.rooms.require_local(user_id)
        room = await self.storage.room(room_id)
        if room is not None and room["current_state_group"] is not None:
            return await self.rooms.send(room_id, user_id, "m.room.member", {"membership": "leave"},
                                         state_key=user_id)
        invite = await self._pending_invite(room_id, user_id)
        if invite is None:
            raise MatrixError(404, "M_NOT_FOUND", "not in that room and not invited to it")
        server = server_of(invite["sender"])
        made = await self._request(server, "GET", f"/_matrix/federation/v1/make_leave/{q(room_id)}/{q(user_id)}")
        rv = get_room_version(room["room_version"])
        template = made.get("event")
        if (not isinstance(template, dict) or template.get("type") != "m.room.member"
                or template.get("room_id") != room_id or template.get("sender") != user_id
                or template.get("state_key") != user_id
                or not isinstance(template.get("content"), dict)
                or template["content"].get("membership") != "leave"):
            raise MatrixError(502, "M_UNKNOWN", "make_leave template is not the leave we asked for")
        try:
            ev = sign_template(template, rv=rv, server_name=self.server_name, key=self.key)
            event_id = ev.pop("event_id")
            validate_event_format(ev, rv)
        except (EventFormatError, CanonicalJSONError) as exc:
            raise MatrixError(502, "M_UNKNOWN", f"make_leave template invalid: {exc}")
        await self._request(server, "PUT", f"/_matrix/federation/v2/send_leave/{q(room_id)}/{q(event_id)}",
                            body=ev)
        await self.storage.persist({"events": [{"event_id": event_id, "room_id": room_id, "event": ev}]})
        return event_id

    async def _pending_invite(self, room_id: str, user_id: str) -> dict | None:
        after, found = 0, None
        while True:
            page = await self.tx.stream(after, 500, room_id)
            for item in page["events"]:
                ev = item["event"]
                if ev.get("type") == "m.room.member" and ev.get("state_key") == user_id:
                    found = ev if ev.get("content", {}).get("membership") == "invite" else None
            if not page["events"]:
                return found
            after = page["next"]

    async def invite(self, room_id: str, sender: str, user_id: str) -> str:
        if not is_valid_user_id(user_id):
            raise MatrixError(400, "M_INVALID_PARAM", "invalid user ID")
        target_server = server_of(user_id)
        content = await self._with_profile({"membership": "invite"}, user_id)
        if target_server == self.server_name:
            return await self.rooms.send(room_id, sender, "m.room.member", content, state_key=user_id)
        self.rooms.require_local(sender)
        return await self._invite_remote(room_id, sender, user_id, content)

    async def _invite_remote(self, room_id: str, sender: str, user_id: str, content: dict) -> str:
        """Build the invite, have the invitee's server countersign it (invite v2), commit."""
        target_server = server_of(user_id)
        async with self.rooms.lock(room_id):
            ev, req = await self.rooms._prepare(room_id, sender, "m.room.member", content, user_id,
                                                {target_server})
            room = await self.storage.room(room_id)
            state = await self.storage.state_map(room["current_state_group"])
            stripped = await self.storage.events([e for k, e in state.items() if k[0] in STRIPPED_STATE
                                                  or k == ("m.room.member", sender)])
            sent = wire(ev)
            body = {"room_version": room["room_version"], "event": sent,
                    "invite_room_state": [wire(e) for e in stripped.values()]}
            try:
                resp = await self._request(target_server, "PUT",
                                           f"/_matrix/federation/v2/invite/{q(room_id)}/{q(ev['event_id'])}",
                                           body=body)
            except MatrixError as exc:   # the invitee finds our request invalid: not the client's doing
                if exc.status == 400 and exc.errcode in ("M_INVALID_PARAM", "M_MISSING_PARAM"):
                    raise MatrixError(502, "M_UNKNOWN", exc.error)
                raise
            rv = get_room_version(room["room_version"])
            theirs = await self._countersignature(resp.get("event"), sent, target_server, rv)
            req["events"][0]["event"] = dict(sent, signatures={**sent["signatures"], target_server: theirs})
            await self.storage.persist(req)
            return ev["event_id"]

    async def _countersignature(self, returned, sent: dict, server: str, rv) -> dict:
        """`server`'s signatures on `returned`, if it is `sent` countersigned; else 502."""
        if not same_but_signatures(returned, sent):
            raise MatrixError(502, "M_UNKNOWN", "invitee's server returned a different event")
        sigs = returned.get("signatures")
        theirs = sigs.get(server) if isinstance(sigs, dict) else None
        if not isinstance(theirs, dict):
            raise MatrixError(502, "M_UNKNOWN", f"invite not countersigned by {server}")
        ts = sent["origin_server_ts"]
        try:
            keys = keys_valid_at(await self.tx.server_keys(
                server, [k for k in theirs if isinstance(k, str) and k.startswith("ed25519:")], ts), ts)
        except Exception:  # noqa: BLE001 - no keys to be had: not countersigned
            keys = {}
        if not verify_event_signature(returned, rv, server, keys):
            raise MatrixError(502, "M_UNKNOWN", f"invite not countersigned by {server}")
        return theirs

    async def exchange_third_party_invite(self, origin: str, room_id: str, body) -> dict:
        """PUT /v1/exchange_third_party_invite/{roomId} from the invitee's server."""
        content = body.get("content") if isinstance(body, dict) else None
        if not isinstance(content, dict):
            raise MatrixError(400, "M_BAD_JSON", "a partial m.room.member event is required")
        sender, target = body.get("sender"), body.get("state_key")
        if (body.get("type") != "m.room.member" or content.get("membership") != "invite"
                or body.get("room_id") != room_id or not is_valid_user_id(sender)
                or not is_valid_user_id(target)):
            raise MatrixError(400, "M_INVALID_PARAM", "not an m.room.member invite for this room")
        tpi = content.get("third_party_invite")
        signed = tpi.get("signed") if isinstance(tpi, dict) else None
        if not isinstance(signed, dict) or not isinstance(signed.get("token"), str):
            raise MatrixError(400, "M_MISSING_PARAM", "content.third_party_invite.signed.token is required")
        if server_of(target) != origin:
            raise MatrixError(403, "M_FORBIDDEN", "the invitee is not on the requesting server")
        room = await self.storage.room(room_id)
        if room is None or room["current_state_group"] is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        state = await self.storage.state_map(room["current_state_group"])
        token_id = state.get(("m.room.third_party_invite", signed["token"]))
        token_ev = (await self.storage.events([token_id])).get(token_id) if token_id else None
        name = (token_ev or {}).get("content", {}).get("display_name")
        if isinstance(name, str):     # the name the inviter gave, not the invitee's claim
            tpi = dict(tpi, display_name=name)
        await self._invite_remote(room_id, sender, target, dict(content, third_party_invite=tpi))
        return {}
