"""Redactions per room version: which event a redaction names, whether it may apply, and
the stored form after it.

Invariants: a redaction is applied only once it is accepted (not rejected, not
soft-failed), to an event of the same room, when its sender's power level is at least
the room's `redact` level or its sender is on the same server as the redacted event's
sender. The redacted event keeps exactly what the room version's redaction algorithm keeps
(so its signatures and event ID still verify) plus `unsigned.redacted_because`.
"""
from __future__ import annotations

from services.pdu.authrules import get_named_level, get_user_power_level
from shared.events import redact, server_of


def redacts_target(event: dict, rv) -> str | None:
    if event.get("type") != "m.room.redaction":
        return None
    target = event.get("content", {}).get("redacts") if rv.redaction_v11 else event.get("redacts")
    if target is None and rv.redaction_v11:
        target = event.get("redacts")
    return target if isinstance(target, str) else None


def redaction_update(redaction: dict, target_record: dict | None, state_events: dict, rv,
                     create_event: dict | None) -> dict | None:
    """The persist `redactions` entry for an accepted redaction, or None if it does not apply."""
    if target_record is None or target_record["room_id"] != redaction.get("room_id"):
        return None
    target = target_record["event"]
    same_server = server_of(redaction["sender"]) == server_of(target.get("sender", ""))
    if not same_server:
        power = get_user_power_level(redaction["sender"], state_events, rv.identifier, create_event)
        if power < get_named_level("redact", state_events):
            return None
    redacted = redact(dict(target), rv)
    redacted.pop("event_id", None)
    redacted["unsigned"] = {"redacted_because": {k: v for k, v in redaction.items()
                                                 if k not in ("event_id", "rejected")}}
    return {"event_id": target_record["event_id"], "event": redacted}
