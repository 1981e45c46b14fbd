"""Contract of the messaging service: the public domain API a homeserver, bridge or bot
uses, plus the callback body subscribers receive."""
from __future__ import annotations


from typing import Literal
from urllib.parse import quote

from pydantic import BaseModel, Field

from shared.contracts import devices as devices_contract
from shared.contracts import pdu as pdu_contract
from shared.internal import InternalClient

ROOMS = "/v1/rooms"
JOIN = "/v1/rooms/{room_id}/join"
INVITE = "/v1/rooms/{room_id}/invite"
LEAVE = "/v1/rooms/{room_id}/leave"
KNOCK = "/v1/rooms/{room_id}/knock"
KICK = "/v1/rooms/{room_id}/kick"
BAN = "/v1/rooms/{room_id}/ban"
UNBAN = "/v1/rooms/{room_id}/unban"
EVENTS = "/v1/rooms/{room_id}/events"
EVENTS_BATCH = "/v1/rooms/{room_id}/events/batch"
STATE = "/v1/rooms/{room_id}/state"
BACKFILL = "/v1/rooms/{room_id}/backfill"
SUBSCRIPTIONS = "/v1/subscriptions"
SUBSCRIPTION = "/v1/subscriptions/{subscription_id}"
TYPING = "/v1/rooms/{room_id}/typing"
RECEIPTS = "/v1/rooms/{room_id}/receipts"
PRESENCE = "/v1/presence/{user_id}"
TO_DEVICE = "/v1/to_device"
DEVICE = "/v1/users/{user_id}/devices/{device_id}"
ONE_TIME_KEYS = "/v1/users/{user_id}/devices/{device_id}/one_time_keys"
CROSS_SIGNING = "/v1/users/{user_id}/cross_signing"
KEYS_QUERY = "/v1/keys/query"
KEYS_CLAIM = "/v1/keys/claim"
PROFILE = "/v1/profile/{user_id}"
QUERY_HANDLERS = "/v1/query_handlers"
DIRECTORY = "/v1/directory/{room_alias}"
VISIBILITY = "/v1/rooms/{room_id}/visibility"
PUBLIC_ROOMS = "/v1/public_rooms"
HIERARCHY = "/v1/rooms/{room_id}/hierarchy"


# The domain API takes the same shapes the pdu service does (messaging forwards them):
# one definition, in the pdu contract.
JoinRequest = pdu_contract.Join
InviteRequest = pdu_contract.Invite
LeaveRequest = pdu_contract.Leave
KnockRequest = pdu_contract.Knock
SendRequest = pdu_contract.SendEvent
SendBatchRequest = pdu_contract.SendBatch
SendBatchResponse = pdu_contract.SendBatchResponse


class CreateRoomRequest(pdu_contract.CreateRoom):
    """As the pdu service's, plus, as the client-server API has them: `room_alias_name`
    (the localpart of an alias of ours made for the room, m.room.canonical_alias set) and
    `visibility` (public: listed in our public room list)."""
    room_alias_name: str | None = Field(None, min_length=1, max_length=200, pattern=r"^[^:#\s]+$")
    visibility: Literal["public", "private"] = "private"


class ModerationRequest(BaseModel):
    """kick / ban / unban: `sender` acts on `user_id` (any server's user)."""
    sender: str
    user_id: str
    reason: str | None = None


class EventsPage(BaseModel):
    events: list[dict]      # full events, each with event_id and a "position"
    next: int               # pass as `after` to continue


class SubscriptionRequest(BaseModel):
    url: str
    room_id: str | None = None
    types: list[str] | None = None


class SubscriptionResponse(BaseModel):
    """`hs_token` is given here only: every callback of the subscription carries it as
    `Authorization: Bearer <hs_token>` and is signed with it (X-Fedstack-Signature)."""
    subscription_id: str
    hs_token: str


class TypingRequest(BaseModel):
    """`user_id` (ours, joined) starts or stops typing; `timeout_ms` is how long the
    homeserver considers it typing (remote servers apply their own timeout)."""
    user_id: str
    typing: bool
    timeout_ms: int | None = Field(None, ge=0)


class ReceiptRequest(BaseModel):
    """A read receipt of `user_id` (ours, joined) up to `event_id`; `m.read.private` is
    accepted and never leaves this server."""
    user_id: str
    event_id: str
    receipt_type: Literal["m.read", "m.read.private"] = "m.read"
    thread_id: str | None = None


class PresenceRequest(BaseModel):
    presence: Literal["online", "unavailable", "offline"]
    status_msg: str | None = None


class ToDeviceRequest(BaseModel):
    """Send-to-device messages from `sender` (ours): messages[user_id][device_id or "*"]
    = content. One EDU per destination server, durable until that server took it.
    Messages for our own users are not sent anywhere (the homeserver delivers those)."""
    sender: str
    type: str
    message_id: str | None = Field(None, min_length=1, max_length=32)
    messages: dict[str, dict[str, dict]]


class EphemeralResponse(BaseModel):
    """The servers the EDU was queued for (none: nobody else to tell)."""
    destinations: list[str]
    message_id: str | None = None       # to-device: the id the messages were sent under


class DeviceRequest(BaseModel):
    """A device of one of our users: added, or its given fields changed. Every server
    sharing a room with the user gets an m.device_list_update (stream_id, prev_id)."""
    display_name: str | None = None
    keys: dict | None = None            # the device keys (user_id, device_id, algorithms, keys, signatures)


class CrossSigningRequest(BaseModel):
    """Cross-signing keys of one of our users; the master and self-signing keys go to
    every server sharing a room with the user (m.signing_key_update)."""
    master_key: dict | None = None
    self_signing_key: dict | None = None
    user_signing_key: dict | None = None     # kept here, never sent to other servers


OneTimeKeysRequest = devices_contract.OneTimeKeysIn
OneTimeKeyCounts = devices_contract.OneTimeKeyCounts
DeviceChange = devices_contract.DeviceChange
KeysQueryRequest = devices_contract.KeysQuery          # any server's users
KeysQueryResponse = devices_contract.KeysQueryResponse
KeysClaimRequest = devices_contract.KeysClaim
KeysClaimResponse = devices_contract.KeysClaimResponse


class CallbackBody(BaseModel):
    """POSTed to a subscription's url; retried until 2xx. `position` of the last item
    lets a receiver drop a repeat after a crash between its 2xx and our bookkeeping.
    `edus`: the EDUs remote servers sent us, in arrival order, each {edu_type, origin,
    content, position} (positions are shared with events); `types` filters them by
    edu_type, a room subscription gets its room's (typing, receipts) only. Besides the
    spec's types (and unknown ones, as sent), `fedstack.user_devices` carries a remote
    user's device list fetched again after an m.device_list_update we could not follow
    (content: the /user/devices answer)."""
    subscription_id: str
    events: list[dict]
    edus: list[dict] = []
    position: int


class MessagingClient(InternalClient):
    """A small typed client for the domain API (tests, benchmarks, bots)."""

    def __init__(self, base_url: str, token: str = "", **kw):
        """`token`: the homeserver's API token (sent as `Authorization: Bearer`)."""
        headers = {"authorization": f"Bearer {token}"} if token else None
        super().__init__(base_url, secret="", headers=headers, **kw)

    async def create_room(self, creator, **kw) -> str:
        return (await self.call("POST", ROOMS, {"creator": creator, **kw}))["room_id"]

    async def join(self, room_id, user_id, servers=()) -> str:
        return (await self.call("POST", JOIN.format(room_id=quote(room_id, safe="")),   # or an alias
                                {"user_id": user_id, "servers": list(servers)}))["event_id"]

    async def invite(self, room_id, sender, user_id) -> str:
        return (await self.call("POST", INVITE.format(room_id=room_id),
                                {"sender": sender, "user_id": user_id}))["event_id"]

    async def knock(self, room_id, user_id, servers=(), reason=None) -> str:
        return (await self.call("POST", KNOCK.format(room_id=room_id),
                                {"user_id": user_id, "servers": list(servers), "reason": reason}))["event_id"]

    async def put_profile(self, user_id, displayname=None, avatar_url=None) -> dict:
        return await self.call("PUT", PROFILE.format(user_id=user_id),
                               {"displayname": displayname, "avatar_url": avatar_url})

    async def profile(self, user_id) -> dict:
        return await self.call("GET", PROFILE.format(user_id=user_id))

    async def put_alias(self, room_alias, room_id) -> dict:
        return await self.call("PUT", DIRECTORY.format(room_alias=quote(room_alias, safe="")), {"room_id": room_id})

    async def delete_alias(self, room_alias) -> dict:
        return await self.call("DELETE", DIRECTORY.format(room_alias=quote(room_alias, safe="")))

    async def resolve_alias(self, room_alias) -> dict:
        return await self.call("GET", DIRECTORY.format(room_alias=quote(room_alias, safe="")))

    async def set_visibility(self, room_id, visibility) -> dict:
        return await self.call("PUT", VISIBILITY.format(room_id=room_id), {"visibility": visibility})

    async def public_rooms(self, server=None, limit=None, since=None, search=None) -> dict:
        params = {k: v for k, v in (("server", server), ("limit", limit), ("since", since),
                                    ("search", search)) if v is not None}
        return await self.call("GET", PUBLIC_ROOMS, params=params or None)

    async def hierarchy(self, room_id, suggested_only=False, via=()) -> dict:
        params = [("suggested_only", "true" if suggested_only else "false")] + [("via", v) for v in via]
        return await self.call("GET", HIERARCHY.format(room_id=room_id), params=params)

    async def put_query_handler(self, query_type, url) -> dict:
        return await self.call("POST", QUERY_HANDLERS, {"query_type": query_type, "url": url})

    async def leave(self, room_id, user_id) -> str:
        return (await self.call("POST", LEAVE.format(room_id=room_id), {"user_id": user_id}))["event_id"]

    async def moderate(self, action: str, room_id, sender, user_id, reason=None) -> str:
        path = {"kick": KICK, "ban": BAN, "unban": UNBAN}[action]
        body = {"sender": sender, "user_id": user_id}
        if reason:
            body["reason"] = reason
        return (await self.call("POST", path.format(room_id=room_id), body))["event_id"]

    async def send(self, room_id, sender, type, content, state_key=None, txn_id=None) -> str:
        body = {"sender": sender, "type": type, "content": content}
        if state_key is not None:
            body["state_key"] = state_key
        if txn_id is not None:
            body["txn_id"] = txn_id
        return (await self.call("POST", EVENTS.format(room_id=room_id), body))["event_id"]

    async def send_batch(self, room_id, events: list[dict]) -> list[dict]:
        """[{sender, type, content, state_key?, txn_id?}] -> [{event_id} or {errcode, error}]"""
        return (await self.call("POST", EVENTS_BATCH.format(room_id=room_id),
                                {"events": events}))["results"]

    async def events(self, room_id, after=0, limit=100) -> dict:
        return await self.call("GET", EVENTS.format(room_id=room_id), params={"after": after, "limit": limit})

    async def state(self, room_id) -> list[dict]:
        return (await self.call("GET", STATE.format(room_id=room_id)))["state"]

    async def subscribe(self, url, room_id=None, types=None) -> str:
        return (await self.call("POST", SUBSCRIPTIONS, {"url": url, "room_id": room_id,
                                                        "types": types}))["subscription_id"]

    async def unsubscribe(self, subscription_id) -> None:
        await self.call("DELETE", SUBSCRIPTION.format(subscription_id=subscription_id))

    async def typing(self, room_id, user_id, typing=True, timeout_ms=None) -> list[str]:
        body = {"user_id": user_id, "typing": typing}
        if timeout_ms is not None:
            body["timeout_ms"] = timeout_ms
        return (await self.call("POST", TYPING.format(room_id=room_id), body))["destinations"]

    async def receipt(self, room_id, user_id, event_id, receipt_type="m.read",
                      thread_id=None) -> list[str]:
        body = {"user_id": user_id, "event_id": event_id, "receipt_type": receipt_type}
        if thread_id is not None:
            body["thread_id"] = thread_id
        return (await self.call("POST", RECEIPTS.format(room_id=room_id), body))["destinations"]

    async def presence(self, user_id, presence, status_msg=None) -> list[str]:
        body = {"presence": presence}
        if status_msg is not None:
            body["status_msg"] = status_msg
        return (await self.call("PUT", PRESENCE.format(user_id=user_id), body))["destinations"]

    async def to_device(self, sender, type, messages, message_id=None) -> dict:
        body = {"sender": sender, "type": type, "messages": messages}
        if message_id is not None:
            body["message_id"] = message_id
        return await self.call("POST", TO_DEVICE, body)

    async def put_device(self, user_id, device_id, display_name=None, keys=None) -> dict:
        body = {k: v for k, v in (("display_name", display_name), ("keys", keys)) if v is not None}
        return await self.call("PUT", DEVICE.format(user_id=user_id, device_id=device_id), body)

    async def delete_device(self, user_id, device_id) -> dict:
        return await self.call("DELETE", DEVICE.format(user_id=user_id, device_id=device_id))

    async def put_cross_signing(self, user_id, **keys) -> dict:
        return await self.call("PUT", CROSS_SIGNING.format(user_id=user_id), keys)

    async def upload_one_time_keys(self, user_id, device_id, keys: dict) -> dict:
        return await self.call("POST", ONE_TIME_KEYS.format(user_id=user_id, device_id=device_id),
                               {"one_time_keys": keys})

    async def query_keys(self, device_keys: dict) -> dict:
        return await self.call("POST", KEYS_QUERY, {"device_keys": device_keys})

    async def claim_keys(self, one_time_keys: dict) -> dict:
        return await self.call("POST", KEYS_CLAIM, {"one_time_keys": one_time_keys})
