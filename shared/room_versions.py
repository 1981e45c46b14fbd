"""The room versions fedstack implements: 10, 11 and 12 (spec §5, §13).

Invariant: `KNOWN_ROOM_VERSIONS` holds exactly the versions we implement (and advertise);
`get_room_version` raises `UnsupportedRoomVersion` for every other identifier.
"""
from __future__ import annotations

from dataclasses import dataclass


class UnsupportedRoomVersion(KeyError):
    """A room version identifier we do not implement."""


@dataclass(frozen=True)
class RoomVersion:
    identifier: str
    redaction_v11: bool          # v11 redaction algorithm (also used by v12)
    room_id_is_create_id: bool   # v12: room ID = "!" + create event ID body, no room_id on create
    create_in_auth_events: bool  # create event listed in auth_events (False for v12)
    creator_in_content: bool     # m.room.create content.creator (v10 only)
    state_res: str               # "v2" or "v2.1"
    knock: bool
    restricted: bool
    knock_restricted: bool
    integer_power_levels: bool
    privileged_creators: bool    # v12: creators have infinite power level


V10 = RoomVersion("10", redaction_v11=False, room_id_is_create_id=False,
                  create_in_auth_events=True, creator_in_content=True, state_res="v2",
                  knock=True, restricted=True, knock_restricted=True,
                  integer_power_levels=True, privileged_creators=False)
V11 = RoomVersion("11", redaction_v11=True, room_id_is_create_id=False,
                  create_in_auth_events=True, creator_in_content=False, state_res="v2",
                  knock=True, restricted=True, knock_restricted=True,
                  integer_power_levels=True, privileged_creators=False)
V12 = RoomVersion("12", redaction_v11=True, room_id_is_create_id=True,
                  create_in_auth_events=False, creator_in_content=False, state_res="v2.1",
                  knock=True, restricted=True, knock_restricted=True,
                  integer_power_levels=True, privileged_creators=True)

KNOWN_ROOM_VERSIONS: dict[str, RoomVersion] = {v.identifier: v for v in (V10, V11, V12)}
DEFAULT_ROOM_VERSION = "12"


def get_room_version(identifier: str) -> RoomVersion:
    """The RoomVersion for `identifier`, or UnsupportedRoomVersion."""
    try:
        return KNOWN_ROOM_VERSIONS[identifier]
    except (KeyError, TypeError):
        raise UnsupportedRoomVersion(identifier) from None
