"""The PDU format of room versions 10, 11 and 12 (spec §5, §13). Events are plain dicts.

Invariants:
- Nothing here trusts an ``event_id`` key in the dict: it is stripped before the
  reference hash, signing and signature checks (the wire format has no event_id; the ID
  is always recomputed). The content hash covers it like any other key, as the spec's
  algorithm (and Synapse) does, so callers hash and sign wire events, never our records
  with their event_id added. `redact` keeps it, as the spec's key list does.
- `redact` returns a new, deep-copied dict without ``unsigned``; v12 uses the v11 rules.
- An event ID is ``"$" + urlsafe_unpadded_b64(sha256(canonical(redact(event) - signatures)))``;
  a v12 room ID is that event ID of the create event with ``!`` instead of ``$``.
- `sign_event` / `verify_event_signature` sign / check the redacted event, so signatures
  survive redaction; the content hash covers the full event.
"""
from __future__ import annotations

import hashlib
import re

from shared.canonical import CanonicalJSONError, canonical_json
from shared.crypto import SigningKey, decode_base64, encode_base64, sign_json
from shared.room_versions import RoomVersion

MAX_PDU_SIZE = 65536
MAX_ID_BYTES = 255
MAX_PREV_EVENTS = 20
MAX_AUTH_EVENTS = 10
# Objects and arrays nested in an event, the event itself counting as 1. The spec sets no
# limit; what bounds it is the JSON tooling every server runs on: orjson parses 1,024
# levels and encodes 254, and the encoders that take over beyond (Python's json module,
# the canonicaljson library Synapse uses) stop near the interpreter's recursion limit of
# 1,000 frames, less the envelopes (transactions, persist requests, callbacks) and the
# call stack around them. 400 is what this stack carries end to end (tested: accepted,
# stored, delivered, served); it was 100, which refused events other servers accept.
MAX_NESTING = 400

_TOP_KEEP_V10 = frozenset({
    "event_id", "type", "room_id", "sender", "state_key", "content", "hashes", "signatures",
    "depth", "prev_events", "prev_state", "auth_events", "origin", "origin_server_ts",
    "membership"})
_TOP_KEEP_V11 = _TOP_KEEP_V10 - {"origin", "membership", "prev_state"}

_CONTENT_KEEP_V10 = {
    "m.room.member": ("membership", "join_authorised_via_users_server"),
    "m.room.create": ("creator",),
    "m.room.join_rules": ("join_rule", "allow"),
    "m.room.power_levels": ("ban", "events", "events_default", "kick", "redact",
                            "state_default", "users", "users_default"),
    "m.room.history_visibility": ("history_visibility",),
}
_CONTENT_KEEP_V11 = dict(
    _CONTENT_KEEP_V10,
    **{"m.room.power_levels": _CONTENT_KEEP_V10["m.room.power_levels"] + ("invite",),
       "m.room.redaction": ("redacts",)})

# Dropped before the content hash (spec: unsigned, signatures, hashes; Synapse also drops
# the legacy top-level keys). An event_id key is hashed like any other key.
_NOT_HASHED = frozenset({"unsigned", "signatures", "hashes", "age_ts", "outlier",
                         "destinations"})

_SERVER_NAME_RE = re.compile(
    r"(?:[A-Za-z0-9.\-]{1,255}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?\Z")
_USER_LOCALPART_RE = re.compile(r"[\x21-\x39\x3b-\x7e]+\Z")
_V12_ROOM_ID_RE = re.compile(r"![A-Za-z0-9_\-]{43}\Z")


class EventFormatError(ValueError):
    """The event does not have the format its room version requires."""


# --------------------------------------------------------------------------- identifiers

def is_valid_server_name(s) -> bool:
    """hostname (DNS chars / IPv4) or [IPv6], with optional :port of 1-5 digits (§1)."""
    return isinstance(s, str) and _SERVER_NAME_RE.match(s) is not None


def is_valid_user_id(s) -> bool:
    """The grammar of user IDs we create: ``@localpart:server`` with a non-empty
    printable-ASCII localpart, ≤255 bytes. For IDs received over federation see
    `is_valid_federation_user_id`."""
    if not isinstance(s, str) or not s.startswith("@") or len(s.encode("utf-8", "replace")) > MAX_ID_BYTES:
        return False
    local, sep, server = s[1:].partition(":")
    return bool(sep) and _USER_LOCALPART_RE.match(local) is not None and is_valid_server_name(server)


def is_valid_federation_user_id(s) -> bool:
    """A user ID servers MUST accept over federation (spec appendix, historical user IDs):
    ``@localpart:server`` whose localpart is any code points but ``:``, NUL and lone
    surrogates (the empty localpart included), a valid server name, ≤255 bytes."""
    if not isinstance(s, str) or not s.startswith("@"):
        return False
    local, sep, server = s[1:].partition(":")
    if not sep or "\x00" in local or not is_valid_server_name(server):
        return False
    try:
        return len(s.encode("utf-8")) <= MAX_ID_BYTES
    except UnicodeEncodeError:   # a lone surrogate
        return False


def server_of(user_or_room_id: str) -> str:
    """The part after the first ':' (ValueError if there is none)."""
    if not isinstance(user_or_room_id, str) or ":" not in user_or_room_id:
        raise ValueError(f"no server part in {user_or_room_id!r}")
    return user_or_room_id.split(":", 1)[1]


def sender_server(event: dict) -> str:
    return server_of(event["sender"])


# --------------------------------------------------------------------------- redaction

def _clone(v):
    """Deep copy of a JSON value (dicts and lists are copied, scalars shared)."""
    t = type(v)
    if t is dict:
        return {k: _clone(x) for k, x in v.items()}
    if t is list:
        return [_clone(x) for x in v]
    return v


def _identity(v):
    return v


def _redact_content(etype, content, rv: RoomVersion, copy) -> dict:
    if not isinstance(content, dict):
        return {}
    if rv.redaction_v11 and etype == "m.room.create":
        return copy(content)
    table = _CONTENT_KEEP_V11 if rv.redaction_v11 else _CONTENT_KEEP_V10
    out = {k: copy(content[k]) for k in table.get(etype, ()) if k in content}
    if rv.redaction_v11 and etype == "m.room.member":
        tpi = content.get("third_party_invite")
        if isinstance(tpi, dict):   # kept as an object, with only its `signed` (as Synapse)
            out["third_party_invite"] = {"signed": copy(tpi["signed"])} if "signed" in tpi else {}
    return out


def _redact(event: dict, rv: RoomVersion, copy, drop=frozenset()) -> dict:
    keep = _TOP_KEEP_V11 if rv.redaction_v11 else _TOP_KEEP_V10
    out = {k: copy(v) for k, v in event.items() if k in keep and k not in drop}
    out["content"] = _redact_content(event.get("type"), event.get("content"), rv, copy)
    return out


def redact(event: dict, room_version: RoomVersion) -> dict:
    """A new (deep-copied) redacted event per §5.3; keeps event_id, drops unsigned."""
    return _redact(event, room_version, _clone)


def redacted_form(target: dict, redaction: dict, room_version: RoomVersion) -> dict:
    """The stored form of `target` once `redaction` applies: the room version's redaction
    of it (no event_id) with ``unsigned.redacted_because`` = the redaction as on the wire."""
    out = redact(target, room_version)
    out.pop("event_id", None)
    out["unsigned"] = {"redacted_because": {k: v for k, v in redaction.items()
                                            if k not in ("event_id", "rejected")}}
    return out


# --------------------------------------------------------------------------- hashes & ids

def _sha256(obj) -> bytes:
    return hashlib.sha256(canonical_json(obj)).digest()


def compute_content_hash(event: dict) -> str:
    """Unpadded b64 SHA-256 of the event without unsigned/signatures/hashes and the legacy
    age_ts/outlier/destinations (an event_id key is covered). CanonicalJSONError if not
    encodable."""
    return encode_base64(_sha256({k: v for k, v in event.items() if k not in _NOT_HASHED}))


def check_content_hash(event: dict) -> bool:
    """True iff hashes.sha256 matches the content hash. Never raises."""
    try:
        expected = decode_base64(event["hashes"]["sha256"])
        return expected == decode_base64(compute_content_hash(event))
    except Exception:  # noqa: BLE001 - any malformation = mismatch
        return False


def _signed_part(event: dict, rv: RoomVersion) -> dict:
    """Redacted event without event_id/signatures (unsigned is never kept); not a copy."""
    return _redact(event, rv, _identity, drop=frozenset({"event_id", "signatures"}))


def compute_reference_hash(event: dict, rv: RoomVersion) -> bytes:
    """SHA-256 of the canonical redacted event without signatures/unsigned/event_id."""
    return _sha256(_signed_part(event, rv))


def compute_event_id(event: dict, rv: RoomVersion) -> str:
    """``"$"`` + URL-safe unpadded b64 of the reference hash (44 chars)."""
    return "$" + encode_base64(compute_reference_hash(event, rv), urlsafe=True)


def room_id_from_create(create_event: dict, rv: RoomVersion) -> str:
    """v12: ``"!"`` + the create event's ID body; v10/v11: the create event's room_id."""
    if rv.room_id_is_create_id:
        return "!" + compute_event_id(create_event, rv)[1:]
    room_id = create_event.get("room_id")
    if not isinstance(room_id, str):
        raise EventFormatError("create event has no room_id")
    return room_id


# --------------------------------------------------------------------------- signatures

def sign_event(event: dict, server_name: str, key: SigningKey, rv: RoomVersion) -> dict:
    """Set hashes.sha256, sign the redacted event and merge the signatures back into
    `event` (mutated and returned). Pass the wire event: an event_id key would be hashed
    (not signed) and left as is."""
    hashes = event.get("hashes")
    event["hashes"] = dict(hashes if isinstance(hashes, dict) else {},
                           sha256=compute_content_hash(event))
    redacted = _redact(event, rv, _clone, drop=frozenset({"event_id"}))
    if not isinstance(redacted.get("signatures"), dict):
        redacted["signatures"] = {}
    sign_json(redacted, server_name, key)
    event["signatures"] = redacted["signatures"]
    return event


def _server_or_unsatisfiable(user_id) -> str:
    """The server of a user ID, or "" (no such server, so no signature can satisfy it)."""
    return server_of(user_id) if is_valid_federation_user_id(user_id) else ""


def event_signature_servers(event: dict, rv: RoomVersion) -> set[str]:
    """Servers that must have signed the event (§5.5).

    The sender's server, except for invites carrying content.third_party_invite; plus, for
    any m.room.member event carrying content.join_authorised_via_users_server (auth rule
    4.3 of v8+: whatever its membership), that user's server. An invalid user ID yields ""
    so that the requirement can never be met.
    """
    content = event.get("content")
    content = content if isinstance(content, dict) else {}
    is_member = event.get("type") == "m.room.member"
    membership = content.get("membership")
    servers = set()
    if not (is_member and membership == "invite" and "third_party_invite" in content):
        servers.add(_server_or_unsatisfiable(event.get("sender")))
    if is_member and rv.restricted and "join_authorised_via_users_server" in content:
        servers.add(_server_or_unsatisfiable(content["join_authorised_via_users_server"]))
    return servers


def verify_event_signature(event: dict, rv: RoomVersion, server_name: str,
                           verify_keys: dict) -> bool:
    """True iff `server_name` signed the redacted event with at least one key in
    `verify_keys` (key_id -> nacl VerifyKey) and every signature of it by such a key
    verifies (§ "Validating hashes and signatures": one bad signature by a known key fails
    the event, whatever the others). Signatures by other key IDs are ignored. Never raises."""
    try:
        sigs = event["signatures"][server_name]
        key_ids = [k for k in sigs if k.startswith("ed25519:") and k in verify_keys]
        if not key_ids:
            return False
        message = canonical_json(_signed_part(event, rv))
        for key_id in key_ids:
            sig = decode_base64(sigs[key_id])
            if len(sig) != 64:
                return False
            verify_keys[key_id].verify(message, sig)   # raises if it does not verify
        return True
    except Exception:  # noqa: BLE001 - malformed event = not signed
        return False


# --------------------------------------------------------------------------- format

def _fail(reason: str):
    raise EventFormatError(reason)


def _is_int(v) -> bool:
    return type(v) is int


def _check_id_list(event: dict, field: str, limit: int) -> None:
    v = event.get(field)
    if not isinstance(v, list):
        _fail(f"{field} must be a list")
    if len(v) > limit:
        _fail(f"{field} has {len(v)} entries, more than {limit}")
    if not all(isinstance(x, str) for x in v):
        _fail(f"{field} must be a list of strings")


def _check_required(event: dict) -> None:
    if not isinstance(event.get("type"), str):
        _fail("type must be a string")
    if not is_valid_federation_user_id(event.get("sender")):
        _fail("sender must be a valid user ID")
    if not _is_int(event.get("origin_server_ts")):
        _fail("origin_server_ts must be an integer")
    if not isinstance(event.get("content"), dict):
        _fail("content must be an object")
    depth = event.get("depth")
    if not _is_int(depth) or depth < 0:
        _fail("depth must be a non-negative integer")
    _check_id_list(event, "prev_events", MAX_PREV_EVENTS)
    _check_id_list(event, "auth_events", MAX_AUTH_EVENTS)
    hashes = event.get("hashes")
    if not isinstance(hashes, dict) or not isinstance(hashes.get("sha256"), str):
        _fail("hashes.sha256 must be a string")
    if not isinstance(event.get("signatures"), dict):
        _fail("signatures must be an object")
    if "state_key" in event and not isinstance(event["state_key"], str):
        _fail("state_key must be a string")
    if "event_id" in event:   # never trusted, but stored and sent on with the event
        eid = event["event_id"]
        if not isinstance(eid, str) or not _is_unicode(eid):
            _fail("event_id must be a string")


def _is_unicode(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:   # a lone surrogate
        return False


def _check_room_id(event: dict, rv: RoomVersion) -> None:
    if rv.room_id_is_create_id and event["type"] == "m.room.create":
        if "room_id" in event:
            _fail(f"a room version {rv.identifier} create event must not have room_id")
        return
    room_id = event.get("room_id")
    if not isinstance(room_id, str) or not room_id.startswith("!"):
        _fail("room_id must be a string starting with '!'")
    if rv.room_id_is_create_id:
        if not _V12_ROOM_ID_RE.match(room_id):
            _fail(f"room_id must be '!' + 43 URL-safe base64 chars in room version {rv.identifier}")
    elif ":" not in room_id or not is_valid_server_name(server_of(room_id)):
        _fail("room_id must have a ':server' part")


def _check_lengths(event: dict) -> None:
    for field in ("type", "sender", "room_id", "state_key"):
        v = event.get(field)
        if isinstance(v, str):
            try:
                n = len(v.encode("utf-8"))
            except UnicodeEncodeError:
                _fail(f"{field} is not valid Unicode")
            if n > MAX_ID_BYTES:
                _fail(f"{field} is longer than {MAX_ID_BYTES} bytes")


def _too_deep(value, limit: int) -> bool:
    """True if containers nest more than `limit` levels (iterative: no recursion limit)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > limit:
            return True
        children = v.values() if type(v) is dict else v
        stack.extend((x, depth + 1) for x in children if type(x) is dict or type(x) is list)
    return False


def _check_encoding(event: dict) -> None:
    wire = {k: v for k, v in event.items() if k != "event_id"}
    if _too_deep(wire, MAX_NESTING):
        _fail(f"objects and arrays nested more than {MAX_NESTING} levels deep")
    try:
        size = len(canonical_json(wire))
    except CanonicalJSONError as exc:
        _fail(f"not canonical JSON: {exc}")
    if size > MAX_PDU_SIZE:
        _fail(f"event is {size} bytes, more than {MAX_PDU_SIZE}")


def validate_event_format(event: dict, rv: RoomVersion) -> None:
    """EventFormatError (with the reason) unless `event` has the wire format of `rv`.

    Order (cheap first): object; required fields and types; state_key and event_id (if
    present) strings; room_id shape; byte lengths of type/sender/room_id/state_key; nesting
    of at most MAX_NESTING levels; canonical JSON numbers anywhere; total canonical size
    (event_id excluded, as it is not on the wire) ≤ 65536 bytes.
    """
    if not isinstance(event, dict):
        _fail("event is not a JSON object")
    _check_required(event)
    _check_room_id(event, rv)
    _check_lengths(event)
    _check_encoding(event)
