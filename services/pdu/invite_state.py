"""Validation of a received invite's `invite_room_state` (PUT /v2/invite, spec v1.16+).

The spec (invites-v2): servers MAY validate it in room versions 1-11 and SHOULD in later
ones, answering 400 M_INVALID_PARAM when the create event is missing, an entry is not
formatted for the room version, an event fails its signature check, or an event is not of
the invite's room (computing the room ID of a v12 create event from its hash).

Invariants (`check_invite_room_state`), every failure a 400 M_INVALID_PARAM:
- `invite_room_state`, if present, is a list of objects, each with a string `type` and
  `state_key`, a user-ID `sender` and an object `content` (the stripped-state fields, which
  a full PDU has too).
- An entry carrying `hashes` or `signatures` claims to be a PDU and is checked as one: the
  room version's event format, the signatures its sender's server must give, and its room
  (`room_id`, or for a v12 create the room ID derived from it). Any entry with a `room_id`
  must name the invite's room.
- Room version 12: the m.room.create event is present, and every create entry is a full
  PDU of this room. (Synapse sends the v12 create as a full PDU and the other entries
  stripped; both pass.) Earlier versions: no create is required.
"""
from __future__ import annotations

from services.pdu.keyring import SignatureFailed
from shared.errors import MatrixError
from shared.events import EventFormatError, is_valid_user_id, room_id_from_create, validate_event_format

CREATE = "m.room.create"


def _bad(msg: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", f"invite_room_state: {msg}")


def _is_stripped(entry) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("type"), str)
            and isinstance(entry.get("state_key"), str) and is_valid_user_id(entry.get("sender"))
            and isinstance(entry.get("content"), dict))


def _claims_pdu(entry: dict, rv) -> bool:
    return ("hashes" in entry or "signatures" in entry
            or (rv.room_id_is_create_id and entry["type"] == CREATE))


async def _check_pdu(entry: dict, room_id: str, rv, keyring) -> None:
    try:
        validate_event_format(entry, rv)
    except EventFormatError as exc:
        raise _bad(f"{entry['type']} is not a room version {rv.identifier} event: {exc}")
    if entry["type"] == CREATE and rv.room_id_is_create_id:
        if room_id_from_create(entry, rv) != room_id:
            raise _bad("the m.room.create event is of another room")
    try:
        await keyring.check_event(entry, rv)
    except SignatureFailed as exc:
        raise _bad(f"{entry['type']} fails its signature check: {exc}")
    except Exception as exc:  # noqa: BLE001 - e.g. its server's keys unobtainable: unchecked
        raise _bad(f"{entry['type']}: signature not checkable: {exc}")


async def check_invite_room_state(state, room_id: str, rv, keyring) -> None:
    """Raise 400 M_INVALID_PARAM unless `state` (the request's invite_room_state, None if
    absent) is acceptable for an invite to `room_id` of room version `rv`."""
    if state is None:
        state = []
    if not isinstance(state, list):
        raise _bad("must be a list")
    for entry in state:
        if not _is_stripped(entry):
            raise _bad("each entry needs a string type and state_key, a sender and a content object")
        if "room_id" in entry and entry["room_id"] != room_id:
            raise _bad(f"{entry['type']} is of another room")
    if rv.room_id_is_create_id and not any(e["type"] == CREATE and e["state_key"] == "" for e in state):
        raise _bad("the m.room.create event is missing")
    for entry in state:
        if _claims_pdu(entry, rv):
            await _check_pdu(entry, room_id, rv, keyring)
