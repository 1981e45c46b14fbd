"""Contract of the transaction service's internal API.

The transaction service owns the database; pdu and messaging persist through these routes,
transport hands it inbound transactions, pdu sends outbound federation requests through it.

State is stored as immutable *state groups*: a group is a base group plus a delta of
`[type, state_key, event_id]` rows (or a full snapshot). A `StateSpec` names a group:
`{"group": 7}` an existing one, `{"same_as": "$e"}` the group after event `$e` (stored or
earlier in the same persist call), `{"base": <spec or null>, "delta": [[t, sk, id], ...]}`
a new group.

Path parameters (origin, txn_id, room_id, server names) are percent-encoded by the client:
values that come from remote servers never change which route is called.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

from pydantic import BaseModel

from shared.contracts.devices import DevicesClient
from shared.contracts.directory import DirectoryClient
from shared.server_keys import hint_params

PREFIX = "/_internal/transaction/v1"
INBOUND = PREFIX + "/inbound/{origin}/{txn_id}"
# The route pattern: a txn_id may hold "/" (sent as %2F, decoded before routing).
INBOUND_ROUTE = PREFIX + "/inbound/{origin}/{txn_id:text}"
FEDERATION_REQUEST = PREFIX + "/federation_request"
SERVER_KEYS = PREFIX + "/server_keys/{server_name}"
DESTINATION_UP = PREFIX + "/destinations/{destination}/up"
DESTINATIONS = PREFIX + "/destinations"
POKE_DESTINATIONS = PREFIX + "/destinations/poke"
EDUS = PREFIX + "/edus"
EDU_STATS = PREFIX + "/edus/stats"
MAX_EDU_BYTES = 65536        # canonical JSON size of one queued EDU (413 M_TOO_LARGE beyond)
PERSIST = PREFIX + "/events/persist"
GET_EVENTS = PREFIX + "/events/get"
ROOM = PREFIX + "/rooms/{room_id}"
ROOMS = PREFIX + "/rooms"
STATE_GROUPS = PREFIX + "/state_groups/get"
STREAM = PREFIX + "/stream"
CLIENT_TXN = PREFIX + "/client_txns/get"
SUBSCRIPTIONS = PREFIX + "/subscriptions"
SUBSCRIPTION = PREFIX + "/subscriptions/{subscription_id}"
SUBSCRIPTION_POSITION = PREFIX + "/subscriptions/{subscription_id}/position"
SUBSCRIPTION_LEASE = PREFIX + "/subscriptions/{subscription_id}/lease"


class PersistEvent(BaseModel):
    event_id: str
    room_id: str
    event: dict                       # the full event as on the wire (no event_id key needed)
    outlier: bool = False             # known but outside the room's DAG view (no state)
    rejected: str | None = None       # reason, when the event failed auth
    soft_failed: bool = False
    state_after: dict | None = None   # StateSpec for the state after this event


class PersistRoom(BaseModel):
    room_id: str
    room_version: str | None = None             # given when the room is new to us
    extremities: list[str] | None = None        # the new forward extremities
    expect_extremities: list[str] | None = None  # compare-and-set: 409 if they differ
    current_state: dict | None = None           # StateSpec for the room's current state


class PersistRequest(BaseModel):
    """One atomic commit: events, room updates, outbox rows, inbox removals, client txn."""
    events: list[PersistEvent] = []
    rooms: list[PersistRoom] = []
    destinations: dict[str, list[str]] = {}     # event_id -> servers to send it to
    inbox_ids: list[int] = []                   # inbox rows this commit consumes
    client_txn: dict | None = None              # {sender, txn_id, event_id}
    client_txns: list[dict] = []                # several; if any exists nothing is written
    redactions: list[dict] = []                 # [{event_id, event}]: stored form replaced
    # [{target, room_id, redaction_id, scope}]: a redaction (stored by now) of an event not
    # stored yet; applied when the target is stored, if it is of room_id and (scope not
    # null) sent from the server `scope`; the answer marks that event "redacted": true
    pending_redactions: list[dict] = []


class PersistResponse(BaseModel):
    events: dict[str, dict]                     # event_id -> {stream, new, state_group}
    client_txn_event_id: str | None = None      # set when the client txn already existed
    rooms: dict[str, dict] = {}                 # room_id -> RoomInfo after the commit
    client_txn_conflicts: list[dict] = []       # client txns that existed (with their event)


class EventRecord(BaseModel):
    event_id: str
    room_id: str
    event: dict
    outlier: bool
    rejected: str | None
    soft_failed: bool
    state_group: int | None
    stream: int


class RoomInfo(BaseModel):
    room_id: str
    room_version: str
    extremities: list[str]
    current_state_group: int | None


class RoomList(BaseModel):
    rooms: list[str]            # every room we hold state of


class StreamResponse(BaseModel):
    events: list[dict]          # {"position": n, "event": {...with event_id}}
    next: int                   # position to continue from
    edus: list[dict] = []       # with edus=true: {"position": n, "edu": {edu_type, origin, content}}


class EduStats(BaseModel):
    """Received EDUs since the service started: stored, and dropped by reason."""
    accepted: int
    dropped: dict[str, int]


class SubscriptionIn(BaseModel):
    url: str
    room_id: str | None = None
    types: list[str] | None = None


class Lease(BaseModel):
    owner: str
    ttl_s: float


class LeaseResponse(BaseModel):
    granted: bool
    position: int


class Subscription(SubscriptionIn):
    subscription_id: str
    position: int
    hs_token: str | None = None       # its callbacks' bearer token and HMAC key


class TransactionClient(DevicesClient, DirectoryClient):
    """Typed client; methods return plain dicts (hot paths avoid pydantic round trips).
    The device and key routes' methods come from DevicesClient (shared/contracts/devices.py),
    the directory's (profiles, query handlers, aliases) from DirectoryClient (directory.py)."""

    async def inbound_transaction(self, origin: str, txn_id: str, body: dict) -> tuple[int, Any]:
        # Percent-encoded: a txn_id holding '?', '#' or '%' must reach the service unchanged.
        path = INBOUND.format(origin=quote(origin, safe=""), txn_id=quote(txn_id, safe=""))
        return await self.request("PUT", path, body)

    async def federation_request(self, destination, method, path, *, query=None, body=None,
                                 timeout_s=None) -> dict:
        return await self.call("POST", FEDERATION_REQUEST, {
            "destination": destination, "method": method, "path": path,
            "query": list(query or []), "body": body, "timeout_s": timeout_s})

    async def server_keys(self, server_name: str, key_ids=(), minimum_valid_until_ts: int = 0) -> dict:
        """Verified keys of `server_name`. Hints: key IDs it must know and the validity it
        must have; when the cached keys fail them they are fetched again, at most once per
        REFETCH_INTERVAL_S per server (shared/server_keys.py)."""
        return await self.call("GET", SERVER_KEYS.format(server_name=quote(server_name, safe="")),
                               params=hint_params(key_ids, minimum_valid_until_ts))

    async def destination_up(self, destination: str) -> None:
        await self.call("POST", DESTINATION_UP.format(destination=quote(destination, safe="")), {})

    async def poke_destinations(self) -> None:
        await self.call("POST", POKE_DESTINATIONS, {})

    async def queue_edus(self, edus: list[dict]) -> None:
        """Queue EDUs, each {destination, edu_type, content}, for delivery (all or none)."""
        await self.call("POST", EDUS, {"edus": list(edus)})

    async def persist(self, request: dict) -> dict:
        return await self.call("POST", PERSIST, request)

    async def get_events(self, event_ids) -> dict[str, dict]:
        if not event_ids:
            return {}
        return (await self.call("POST", GET_EVENTS, {"event_ids": list(event_ids)}))["events"]

    async def get_room(self, room_id: str) -> dict | None:
        # Percent-encoded: a room ID from a remote ("../stream", "!x?y") names no other route.
        path = ROOM.format(room_id=quote(room_id, safe=""))
        status, data = await self.request("GET", path)
        if status == 404:
            return None
        if status >= 300:
            await self.call("GET", path)
        return data

    async def state_groups(self, groups) -> dict[int, list]:
        data = await self.call("POST", STATE_GROUPS, {"groups": list(groups)})
        return {int(k): v for k, v in data["groups"].items()}

    async def stream(self, after: int, limit: int = 100, room_id: str | None = None,
                     timeout_ms: int = 0, *, subscription_id: str | None = None,
                     owner: str | None = None, edus: bool = False) -> dict:
        """Live events after `after`. With `subscription_id`, that subscription's position
        is first moved to `after` (everything up to it was delivered), exactly as
        `set_subscription_position(subscription_id, after, owner)` would: one round trip
        for "saved, what next?" (409 if `owner` lost the lease, 404 if unknown). With
        `edus`, the page also lists the received EDUs (positions shared with events)."""
        params = {"after": after, "limit": limit, "timeout_ms": timeout_ms}
        if edus:
            params["edus"] = "true"
        if room_id:
            params["room_id"] = room_id
        if subscription_id is not None:
            params["subscription_id"] = subscription_id
            if owner is not None:
                params["owner"] = owner
        return await self.call("GET", STREAM, params=params)

    async def client_txn(self, sender: str, txn_id: str) -> str | None:
        return (await self.call("POST", CLIENT_TXN, {"sender": sender, "txn_id": txn_id}))["event_id"]

    async def add_subscription(self, sub: dict) -> dict:
        return await self.call("POST", SUBSCRIPTIONS, sub)

    async def list_subscriptions(self) -> list[dict]:
        return (await self.call("GET", SUBSCRIPTIONS))["subscriptions"]

    async def delete_subscription(self, subscription_id: str) -> None:
        sid = quote(subscription_id, safe="")
        await self.call("DELETE", SUBSCRIPTION.format(subscription_id=sid))

    async def set_subscription_position(self, subscription_id: str, position: int,
                                        owner: str | None = None) -> None:
        sid = quote(subscription_id, safe="")
        await self.call("PUT", SUBSCRIPTION_POSITION.format(subscription_id=sid),
                        {"position": position, "owner": owner})

    async def lease_subscription(self, subscription_id: str, owner: str, ttl_s: float) -> dict:
        sid = quote(subscription_id, safe="")
        return await self.call("POST", SUBSCRIPTION_LEASE.format(subscription_id=sid),
                               {"owner": owner, "ttl_s": ttl_s})

    async def edu_stats(self) -> dict:
        return await self.call("GET", EDU_STATS)

    async def room_ids(self) -> list[str]:
        return (await self.call("GET", ROOMS))["rooms"]
