"""Contract of the pdu service's internal API.

Called by messaging (rooms, events, membership), by the transaction service's relay
(inbound PDUs) and by transport (federation queries: `/federation/...` mirrors the public
`/_matrix/federation/...` path, with the authenticated origin in `ORIGIN_HEADER`).
"""
from __future__ import annotations

from typing import Literal
from urllib.parse import quote

from pydantic import BaseModel, Field

from shared.internal import InternalClient

PREFIX = "/_internal/pdu/v1"
INBOUND = PREFIX + "/inbound"
ROOMS = PREFIX + "/rooms"
SEND = PREFIX + "/rooms/{room_id}/send"
SEND_BATCH = PREFIX + "/rooms/{room_id}/send_batch"
JOIN = PREFIX + "/rooms/{room_id}/join"
INVITE = PREFIX + "/rooms/{room_id}/invite"
LEAVE = PREFIX + "/rooms/{room_id}/leave"
KNOCK = PREFIX + "/rooms/{room_id}/knock"
PUBLIC_ROOMS = PREFIX + "/public_rooms"
HIERARCHY = PREFIX + "/rooms/{room_id}/hierarchy"
STATE = PREFIX + "/rooms/{room_id}/state"
BACKFILL = PREFIX + "/rooms/{room_id}/backfill"
ROOM_SERVERS = PREFIX + "/rooms/{room_id}/servers"
USER_SERVERS = PREFIX + "/users/{user_id}/servers"
FEDERATION = PREFIX + "/federation"     # + the path after /_matrix/federation
ORIGIN_HEADER = "x-fedstack-origin"


class InboundItem(BaseModel):
    inbox_id: int
    origin: str
    room_id: str
    pdu: dict
    event_id: str | None = None     # the id it was staged under
    known: bool | None = None       # an event of that id was stored when the item was read


class InboundBatch(BaseModel):
    """Staged PDUs, oldest first. The pdu service consumes every inbox_id it is given
    (persisted, or dropped as invalid) in the same commit as the events."""
    items: list[InboundItem]


class CreateRoom(BaseModel):
    creator: str
    room_version: Literal["10", "11", "12"] = "12"
    preset: Literal["public_chat", "private_chat"] = "private_chat"
    name: str | None = None
    room_type: str | None = Field(None, min_length=1, max_length=255)   # create content "type" (m.space)


class SendEvent(BaseModel):
    sender: str
    type: str
    content: dict
    state_key: str | None = None
    txn_id: str | None = None


MAX_BATCH = 1000


class SendBatch(BaseModel):
    """Events sent in this order, each as if by its own send (auth-checked on top of the
    ones before it); committed in groups, far cheaper per event than one call each."""
    events: list[SendEvent] = Field(max_length=MAX_BATCH)


class SendResult(BaseModel):
    """Per event: its `event_id`, or the error that refused it (the others go on)."""
    event_id: str | None = None
    errcode: str | None = None
    error: str | None = None


class SendBatchResponse(BaseModel):
    results: list[SendResult]


class Join(BaseModel):
    user_id: str
    servers: list[str] = []


class Invite(BaseModel):
    sender: str
    user_id: str


class Leave(BaseModel):
    user_id: str


class Knock(BaseModel):
    """A local user knocks on a room (v7+ join rules knock / knock_restricted): through
    make_knock/send_knock at the first of `servers` that accepts, or locally if we are in
    the room. The stored knock carries the room's stripped state in
    unsigned.knock_room_state."""
    user_id: str
    servers: list[str] = []
    reason: str | None = None


class PublicRoomsRequest(BaseModel):
    """Our public room list (services/pdu/directory.py): `since` a previous next_batch."""
    limit: int | None = Field(None, ge=1)
    since: str | None = None
    filter: dict | None = None      # {"generic_search_term": str}


class PublicRoomsResponse(BaseModel):
    chunk: list[dict]
    next_batch: str | None = None
    prev_batch: str | None = None
    total_room_count_estimate: int


class Backfill(BaseModel):
    """Page back through history from before we joined: `from` is the previous page's
    `next` (omit it to start just before our oldest event of the room)."""
    from_: list[str] | None = Field(None, alias="from")
    limit: int = 50


class BackfillResponse(BaseModel):
    events: list[dict]          # newest first, each with its event_id; not delivered live
    next: list[str] | None      # pass as `from` for the page before; null: no more


class EventIdResponse(BaseModel):
    event_id: str


class RoomIdResponse(BaseModel):
    room_id: str


class StateResponse(BaseModel):
    room_id: str
    room_version: str
    state: list[dict]


class ServersResponse(BaseModel):
    """Servers with at least one joined member (in the room's current state). Asked with
    `user_id`, `user_joined` says whether that user is a joined member."""
    servers: list[str]
    user_joined: bool | None = None


class UserServersResponse(BaseModel):
    """Servers sharing a room with the user: with a joined member in a room where the user
    is joined (the user's own server included)."""
    servers: list[str]


class PduClient(InternalClient):
    async def inbound(self, items: list[dict]) -> dict:
        return await self.call("POST", INBOUND, {"items": items})

    async def create_room(self, body: dict) -> dict:
        return await self.call("POST", ROOMS, body)

    async def send(self, room_id: str, body: dict) -> dict:
        return await self.call("POST", SEND.format(room_id=quote(room_id, safe="")), body)

    async def send_batch(self, room_id: str, body: dict) -> dict:
        return await self.call("POST", SEND_BATCH.format(room_id=quote(room_id, safe="")), body)

    async def join(self, room_id: str, body: dict) -> dict:
        return await self.call("POST", JOIN.format(room_id=quote(room_id, safe="")), body)

    async def invite(self, room_id: str, body: dict) -> dict:
        return await self.call("POST", INVITE.format(room_id=quote(room_id, safe="")), body)

    async def leave(self, room_id: str, body: dict) -> dict:
        return await self.call("POST", LEAVE.format(room_id=quote(room_id, safe="")), body)

    async def hierarchy(self, room_id: str, suggested_only: bool = False) -> tuple[int, dict]:
        """(status, body) of a room's space hierarchy as we hold it (404: not held)."""
        return await self.request("GET", HIERARCHY.format(room_id=quote(room_id, safe="")),
                                  params={"suggested_only": "true" if suggested_only else "false"})

    async def public_rooms(self, body: dict) -> dict:
        return await self.call("POST", PUBLIC_ROOMS, body)

    async def knock(self, room_id: str, body: dict) -> dict:
        return await self.call("POST", KNOCK.format(room_id=quote(room_id, safe="")), body)

    async def state(self, room_id: str) -> dict:
        return await self.call("GET", STATE.format(room_id=quote(room_id, safe="")))

    async def backfill(self, room_id: str, body: dict) -> dict:
        return await self.call("POST", BACKFILL.format(room_id=quote(room_id, safe="")), body)

    async def room_servers(self, room_id: str) -> list[str] | None:
        """Servers with joined members in the room; None for a room we do not know."""
        status, data = await self.request("GET", ROOM_SERVERS.format(room_id=quote(room_id, safe="")))
        if status == 404:
            return None
        if status >= 300:
            await self.call("GET", ROOM_SERVERS.format(room_id=quote(room_id, safe="")))
        return data["servers"]

    async def room_servers_for(self, room_id: str, user_id: str) -> dict:
        """{servers, user_joined} (404 M_NOT_FOUND for an unknown room)."""
        return await self.call("GET", ROOM_SERVERS.format(room_id=quote(room_id, safe="")),
                               params={"user_id": user_id})

    async def user_servers(self, user_id: str) -> list[str]:
        """Servers sharing a room with the user (see UserServersResponse)."""
        path = USER_SERVERS.format(user_id=quote(user_id, safe=""))
        return (await self.call("GET", path))["servers"]
