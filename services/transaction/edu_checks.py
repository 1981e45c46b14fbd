"""Checks of a received transaction's EDUs, before they are stored (spec and Synapse rules).

Invariants:
- An EDU that fails a check is dropped alone: counted under its reason in `dropped`,
  logged, and the rest of the transaction goes on. Nothing here raises for bad input;
  only an unreachable pdu service (needed for the room checks) raises, so the remote
  retries the transaction instead of losing receipts.
- Every stored EDU is an object of at most MAX_EDU_BYTES of canonical JSON.
- The users an EDU speaks for (typing, receipt, presence and device users, a to-device
  sender) belong to the origin; typing and receipts only for rooms where the origin has a
  joined member (`RoomServers`); a to-device message_id has at most 32 code points and the
  message is kept only for our own users; a device list update's prev_id entries are all
  below its stream_id (a loop or a chain pointing forward is refused).
- A receipt EDU is stored per room (room-filtered subscriptions see their rooms'); its
  entries that fail are dropped (counted as entries), the others kept; so are presence
  entries and to-device recipients. Unknown EDU types are kept as they are.
- The checked item is (edu_type, room_id or None, content, dedup key or None): to-device
  messages dedup on message_id, device list updates on (user_id, stream_id).
"""
from __future__ import annotations

import logging
from collections import Counter

from shared.canonical import CanonicalJSONError, canonical_json
from shared.contracts.transaction import MAX_EDU_BYTES
from shared.events import server_of

log = logging.getLogger("fedstack.transaction.edus")

MAX_MESSAGE_ID = 32          # code points of a to-device message_id
MAX_RECEIPT_ENTRIES = 1000   # user entries in one receipt EDU
MAX_PRESENCE_ENTRIES = 1000
PRESENCE_STATES = ("online", "unavailable", "offline")
ROOM_CHECKED = ("m.typing", "m.receipt")
SIGNING_KEY_TYPES = ("m.signing_key_update", "org.matrix.signing_key_update")


class Drop(Exception):
    """An EDU that fails a check: `reason` (a fixed text, the counter's key) and a detail
    for the log line."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def _user_of(user_id, origin: str) -> bool:
    return (isinstance(user_id, str) and user_id.startswith("@") and ":" in user_id
            and server_of(user_id) == origin)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _typing(origin, c, _server, _notes):
    if not isinstance(c.get("room_id"), str) or not isinstance(c.get("typing"), bool):
        raise Drop("typing needs room_id and a boolean typing")
    if not _user_of(c.get("user_id"), origin):
        raise Drop("typing user not of the origin")
    return [("m.typing", c["room_id"], c, None)]


def _receipt(origin, c, _server, notes):
    out, entries, bad = [], 0, 0
    for room_id, by_type in c.items():
        if not isinstance(by_type, dict):
            bad += 1
            continue
        kept_types = {}
        for rtype, by_user in by_type.items():
            if not isinstance(by_user, dict):
                bad += 1
                continue
            entries += len(by_user)
            if entries > MAX_RECEIPT_ENTRIES:
                raise Drop("receipt with too many entries", f"over {MAX_RECEIPT_ENTRIES}")
            kept = {u: r for u, r in by_user.items() if _user_of(u, origin) and _receipt_ok(r)}
            bad += len(by_user) - len(kept)
            if kept:
                kept_types[rtype] = kept
        if kept_types:
            out.append(("m.receipt", room_id, {room_id: kept_types}, None))
    if bad:
        notes["receipt entries dropped"] += bad
        log.warning("receipt from %s: %d entries dropped (not the origin's users or malformed)",
                    origin, bad)
    if not out:
        raise Drop("receipt with no valid entry")
    return out


def _receipt_ok(r) -> bool:
    return (isinstance(r, dict) and isinstance(r.get("event_ids"), list) and r["event_ids"]
            and all(isinstance(e, str) for e in r["event_ids"])
            and isinstance(r.get("data", {}), dict))


def _presence(origin, c, _server, notes):
    push = c.get("push")
    if not isinstance(push, list) or len(push) > MAX_PRESENCE_ENTRIES:
        raise Drop("presence needs a push list")
    kept = [p for p in push if isinstance(p, dict) and _user_of(p.get("user_id"), origin)
            and p.get("presence") in PRESENCE_STATES]
    if not kept:
        raise Drop("presence with no entry for the origin's users")
    if len(kept) < len(push):
        notes["presence entries dropped"] += len(push) - len(kept)
        log.warning("presence from %s: %d entries dropped (not the origin's users or malformed)",
                    origin, len(push) - len(kept))
    return [("m.presence", None, dict(c, push=kept), None)]


def _device_list(origin, c, _server, _notes):
    if not _user_of(c.get("user_id"), origin):
        raise Drop("device list user not of the origin")
    if not isinstance(c.get("device_id"), str) or not _is_int(c.get("stream_id")):
        raise Drop("device list update needs device_id and an integer stream_id")
    prev = c.get("prev_id", [])
    if not isinstance(prev, list) or not all(_is_int(p) for p in prev):
        raise Drop("prev_id must be a list of integers")
    if any(p >= c["stream_id"] for p in prev):
        raise Drop("prev_id not below stream_id (a loop)")
    if "deleted" in c and not isinstance(c["deleted"], bool):
        raise Drop("deleted must be a boolean")
    return [("m.device_list_update", None, c, f"{c['user_id']} {c['stream_id']}")]


def _signing_key(edu_type):
    def check(origin, c, _server, _notes):
        if not _user_of(c.get("user_id"), origin):
            raise Drop("signing key user not of the origin")
        return [(edu_type, None, c, None)]
    return check


def _to_device(origin, c, server, notes):
    if not _user_of(c.get("sender"), origin):
        raise Drop("to-device sender not of the origin")
    mid = c.get("message_id")
    if not isinstance(mid, str) or not mid or len(mid) > MAX_MESSAGE_ID:
        raise Drop("message_id not of 1-32 code points",
                   f"{len(mid)} code points" if isinstance(mid, str) else "not a string")
    if not isinstance(c.get("type"), str) or not isinstance(c.get("messages"), dict):
        raise Drop("to-device needs type and messages")
    mine = {u: by_dev for u, by_dev in c["messages"].items()
            if _user_of(u, server) and isinstance(by_dev, dict)
            and all(isinstance(v, dict) for v in by_dev.values())}
    if not mine:
        raise Drop("to-device for none of our users")
    if len(mine) < len(c["messages"]):
        notes["to-device recipients dropped"] += len(c["messages"]) - len(mine)
    return [("m.direct_to_device", None, dict(c, messages=mine), mid)]


CHECKS = {"m.typing": _typing, "m.receipt": _receipt, "m.presence": _presence,
          "m.device_list_update": _device_list, "m.direct_to_device": _to_device,
          **{t: _signing_key(t) for t in SIGNING_KEY_TYPES}}


def check_edu(origin: str, server_name: str, edu, notes: Counter | None = None) -> list[tuple]:
    """The items to store for one EDU (before the room check); raises Drop. Entries of it
    that are dropped while the rest is kept are counted in `notes`."""
    if not isinstance(edu, dict) or not isinstance(edu.get("edu_type"), str) \
            or not isinstance(edu.get("content"), dict):
        raise Drop("not an object with a string edu_type and an object content")
    try:
        size = len(canonical_json({"edu_type": edu["edu_type"], "content": edu["content"]}))
    except CanonicalJSONError as exc:
        raise Drop("not canonical JSON", str(exc))
    if size > MAX_EDU_BYTES:
        raise Drop("over the size cap", f"{size} bytes, over {MAX_EDU_BYTES}")
    check = CHECKS.get(edu["edu_type"])
    if check is None:   # a type we do not know: the homeserver may
        return [(edu["edu_type"], None, edu["content"], None)]
    return check(origin, edu["content"], server_name, Counter() if notes is None else notes)


class EduChecker:
    """Checks the EDUs of one transaction; `room_servers.get(room_id)` gives the servers
    with joined members (None: unknown room)."""

    def __init__(self, server_name: str, room_servers):
        self.server_name = server_name
        self.room_servers = room_servers
        self.dropped: Counter = Counter()     # reason -> EDUs dropped
        self.accepted = 0

    def _drop(self, origin: str, edu, drop: Drop) -> None:
        edu_type = edu.get("edu_type") if isinstance(edu, dict) else None
        self.dropped[drop.reason] += 1
        log.warning("dropped %s EDU from %s: %s%s", str(edu_type)[:80], origin, drop.reason,
                    f" ({drop.detail[:200]})" if drop.detail else "")

    async def check(self, origin: str, edus: list) -> list[tuple]:
        items = []
        for edu in edus:
            try:
                items += check_edu(origin, self.server_name, edu, self.dropped)
            except Drop as exc:
                self._drop(origin, edu, exc)
        rooms = {r for t, r, _c, _d in items if t in ROOM_CHECKED}
        joined = {r: await self.room_servers.get(r) for r in rooms}
        kept = []
        for item in items:
            t, room_id = item[0], item[1]
            if t in ROOM_CHECKED and origin not in (joined[room_id] or ()):
                self._drop(origin, {"edu_type": t},
                           Drop("origin has no joined member in the room", room_id))
                continue
            kept.append(item)
        self.accepted += len(kept)
        return kept

    def stats(self) -> dict:
        return {"accepted": self.accepted, "dropped": dict(self.dropped)}
