"""Contract of the transaction service's device and key routes: our users' devices,
cross-signing and one-time keys as the homeserver gave them (messaging writes them), and
the answers to the federation device and key queries (transport asks for them).

Only our own users' data is held: a query names other servers' users in vain (they are
left out of the answer; /user/devices of one is 400 M_INVALID_PARAM).
"""
from __future__ import annotations

from urllib.parse import quote

from pydantic import BaseModel

from shared.internal import InternalClient

PREFIX = "/_internal/transaction/v1"     # the transaction service's (contracts.transaction)

DEVICE = PREFIX + "/users/{user_id}/devices/{device_id}"
USER_DEVICES = PREFIX + "/users/{user_id}/devices"
ONE_TIME_KEYS = PREFIX + "/users/{user_id}/devices/{device_id}/one_time_keys"
CROSS_SIGNING = PREFIX + "/users/{user_id}/cross_signing"
KEYS_QUERY = PREFIX + "/keys/query"
KEYS_CLAIM = PREFIX + "/keys/claim"


class DeviceIn(BaseModel):
    """A device added or changed (given fields replace the stored ones); its
    m.device_list_update is queued for `destinations` in the same commit."""
    display_name: str | None = None
    keys: dict | None = None            # the device keys, signed by the device
    destinations: list[str] = []


class DeviceDelete(BaseModel):
    destinations: list[str] = []


class DeviceChange(BaseModel):
    """The stream position of the change, as sent in its m.device_list_update."""
    stream_id: int
    prev_id: list[int]


class CrossSigningIn(BaseModel):
    """Cross-signing keys; the public ones (master, self-signing) go to `destinations`
    in an m.signing_key_update queued in the same commit."""
    master_key: dict | None = None
    self_signing_key: dict | None = None
    user_signing_key: dict | None = None
    destinations: list[str] = []


class OneTimeKeysIn(BaseModel):
    one_time_keys: dict[str, dict]      # "algorithm:key_id" -> key


class OneTimeKeyCounts(BaseModel):
    one_time_key_counts: dict[str, int]


class UserDevices(BaseModel):
    """The federation /user/devices answer."""
    user_id: str
    stream_id: int
    devices: list[dict]                 # {device_id, keys?, device_display_name?}
    master_key: dict | None = None
    self_signing_key: dict | None = None


class KeysQuery(BaseModel):
    device_keys: dict[str, list[str]]   # user_id -> device IDs (empty: all)


class KeysQueryResponse(BaseModel):
    device_keys: dict[str, dict[str, dict]]
    master_keys: dict[str, dict] = {}
    self_signing_keys: dict[str, dict] = {}
    failures: dict[str, dict] = {}      # domain API only: server -> why it did not answer


class KeysClaim(BaseModel):
    one_time_keys: dict[str, dict[str, str]]   # user_id -> device_id -> algorithm


class KeysClaimResponse(BaseModel):
    one_time_keys: dict[str, dict[str, dict[str, dict]]]   # user -> device -> key_id -> key
    failures: dict[str, dict] = {}


def _q(v: str) -> str:
    return quote(v, safe="")


class DevicesClient(InternalClient):
    """The device and key routes of the transaction service; TransactionClient has them."""

    async def put_device(self, user_id, device_id, body: dict) -> dict:
        return await self.call("PUT", DEVICE.format(user_id=_q(user_id), device_id=_q(device_id)), body)

    async def delete_device(self, user_id, device_id, destinations) -> dict:
        return await self.call("DELETE", DEVICE.format(user_id=_q(user_id), device_id=_q(device_id)),
                               {"destinations": list(destinations)})

    async def put_cross_signing(self, user_id, body: dict) -> dict:
        return await self.call("PUT", CROSS_SIGNING.format(user_id=_q(user_id)), body)

    async def add_one_time_keys(self, user_id, device_id, keys: dict) -> dict:
        return await self.call("POST", ONE_TIME_KEYS.format(user_id=_q(user_id), device_id=_q(device_id)),
                               {"one_time_keys": keys})

    async def user_devices(self, user_id) -> tuple[int, dict]:
        return await self.request("GET", USER_DEVICES.format(user_id=_q(user_id)))

    async def query_keys(self, device_keys: dict) -> tuple[int, dict]:
        return await self.request("POST", KEYS_QUERY, {"device_keys": device_keys})

    async def claim_keys(self, one_time_keys: dict) -> tuple[int, dict]:
        return await self.request("POST", KEYS_CLAIM, {"one_time_keys": one_time_keys})
