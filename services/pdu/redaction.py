"""Redactions per room version: which event a redaction names, whether it may apply, and
the stored form after it.

Invariants: a redaction is applied only once it is accepted (not rejected, not
soft-failed), to an event of the same room, when its sender's power level is at least
the room's `redact` level or its sender is on the same server as the redacted event's
sender. A redaction accepted before its target arrives is kept pending and applied, with
the same checks, in the commit that stores the target. The redacted event keeps exactly what the room version's redaction algorithm keeps
(so its signatures and event ID still verify) plus `unsigned.redacted_because`.
"""
from __future__ import annotations

from services.pdu.authrules import get_named_level, get_user_power_level
from shared.events import redacted_form, server_of


def redacts_target(event: dict, rv) -> str | None:
    """The event a redaction names: top-level `redacts` in v10, `content.redacts` in v11
    and v12 (where a top-level `redacts` is ignored, as the spec says)."""
    if event.get("type") != "m.room.redaction":
        return None
    content = event.get("content")
    if rv.redaction_v11:
        target = content.get("redacts") if isinstance(content, dict) else None
    else:
        target = event.get("redacts")
    return target if isinstance(target, str) else None


def redaction_scope(redaction: dict, state_events: dict, rv, create_event: dict | None) -> str | None:
    """Whose events an accepted redaction may redact: None for any event of the room (its
    sender's power level is at least the `redact` level), else only events of the server
    returned (the redaction's sender's own)."""
    power = get_user_power_level(redaction["sender"], state_events, rv.identifier, create_event)
    if power >= get_named_level("redact", state_events):
        return None
    return server_of(redaction["sender"])


def redaction_update(redaction: dict, target_record: dict | None, state_events: dict, rv,
                     create_event: dict | None) -> dict | None:
    """The persist `redactions` entry for an accepted redaction, or None if it does not apply."""
    if target_record is None or target_record["room_id"] != redaction.get("room_id"):
        return None
    target = target_record["event"]
    scope = redaction_scope(redaction, state_events, rv, create_event)
    if scope is not None and scope != server_of(target.get("sender", "")):
        return None
    return {"event_id": target_record["event_id"], "event": redacted_form(dict(target), redaction, rv)}


def pending_redaction(redaction: dict, target: str, state_events: dict, rv,
                      create_event: dict | None) -> dict:
    """The persist `pending_redactions` entry for an accepted redaction whose target we do
    not have yet: the transaction service applies it when the target is stored (spec: the
    redaction waits for its partner event, then is re-checked), if the target is of the
    room and, for a `scope`d redaction, sent from that server."""
    return {"target": target, "room_id": redaction["room_id"], "redaction_id": redaction["event_id"],
            "scope": redaction_scope(redaction, state_events, rv, create_event)}
