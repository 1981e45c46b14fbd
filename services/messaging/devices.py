"""Devices and keys in the domain API: the homeserver tells the stack its users' devices,
cross-signing and one-time keys; it asks any server's users' keys.

Invariants:
- Only our own users' devices and keys are written (403 M_FORBIDDEN otherwise); each
  device or cross-signing change is stored by the transaction service together with its
  EDU queued for every other server sharing a room with the user (pdu knows the rooms).
- A key query or claim is answered for our users from storage and for other servers'
  users by asking those servers (/user/keys/query, /user/keys/claim), all at once; a
  server that does not answer is named in `failures` ({status, message}) and the others'
  answers are kept. A server's answer counts only for its own users and, for device
  keys, only for the user and device they are filed under.
"""
from __future__ import annotations

import asyncio

from shared.errors import MatrixError
from shared.events import server_of

FED = "/_matrix/federation/v1"
REMOTE_TIMEOUT_S = 10.0


def _server(user_id: str) -> str | None:
    return server_of(user_id) if user_id.startswith("@") and ":" in user_id else None


class Devices:
    def __init__(self, pdu, tx, server_name: str):
        self.pdu = pdu
        self.tx = tx
        self.server_name = server_name

    def _require_local(self, user_id: str) -> None:
        if _server(user_id) != self.server_name:
            raise MatrixError(403, "M_FORBIDDEN", f"{user_id} is not a user of {self.server_name}")

    async def _destinations(self, user_id: str) -> list[str]:
        return [s for s in await self.pdu.user_servers(user_id) if s != self.server_name]

    async def put_device(self, user_id: str, device_id: str, display_name, keys) -> dict:
        self._require_local(user_id)
        return await self.tx.put_device(user_id, device_id, {
            "display_name": display_name, "keys": keys,
            "destinations": await self._destinations(user_id)})

    async def delete_device(self, user_id: str, device_id: str) -> dict:
        self._require_local(user_id)
        return await self.tx.delete_device(user_id, device_id, await self._destinations(user_id))

    async def put_cross_signing(self, user_id: str, keys: dict) -> dict:
        self._require_local(user_id)
        body = {k: v for k, v in keys.items() if v is not None}
        return await self.tx.put_cross_signing(
            user_id, dict(body, destinations=await self._destinations(user_id)))

    async def add_one_time_keys(self, user_id: str, device_id: str, keys: dict) -> dict:
        self._require_local(user_id)
        return await self.tx.add_one_time_keys(user_id, device_id, keys)

    def _by_server(self, wanted: dict) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for user_id, v in wanted.items():
            server = _server(user_id)
            if server is None:
                raise MatrixError(400, "M_INVALID_PARAM", f"not a user ID: {user_id[:100]}")
            out.setdefault(server, {})[user_id] = v
        return out

    async def _ask(self, server: str, kind: str, body: dict) -> tuple[str, dict | None, dict | None]:
        """(server, answer, failure) for one server; ours from storage."""
        if server == self.server_name:
            status, data = await (self.tx.query_keys(body["device_keys"]) if kind == "query"
                                  else self.tx.claim_keys(body["one_time_keys"]))
        else:
            try:
                resp = await self.tx.federation_request(server, "POST", f"{FED}/user/keys/{kind}",
                                                        body=body, timeout_s=REMOTE_TIMEOUT_S)
            except MatrixError as exc:
                return server, None, {"status": exc.status, "message": exc.error}
            status, data = resp.get("status", 0), resp.get("body")
            if status == 0:
                return server, None, {"status": 503, "message": resp.get("error") or "no answer"}
        if status != 200 or not isinstance(data, dict):
            message = data.get("error") if isinstance(data, dict) else None
            return server, None, {"status": status, "message": message or f"answered {status}"}
        return server, data, None

    async def query_keys(self, device_keys: dict) -> dict:
        out = {"device_keys": {}, "master_keys": {}, "self_signing_keys": {}, "failures": {}}
        asks = [self._ask(s, "query", {"device_keys": users})
                for s, users in self._by_server(device_keys).items()]
        for server, data, failure in await asyncio.gather(*asks):
            if failure is not None:
                out["failures"][server] = failure
                continue
            for user_id, devs in (data.get("device_keys") or {}).items():
                if _server(user_id) == server and user_id in device_keys and isinstance(devs, dict):
                    out["device_keys"][user_id] = {
                        d: k for d, k in devs.items() if isinstance(k, dict)
                        and k.get("user_id") == user_id and k.get("device_id") == d}
            for field in ("master_keys", "self_signing_keys"):
                for user_id, key in (data.get(field) or {}).items():
                    if _server(user_id) == server and user_id in device_keys and isinstance(key, dict):
                        out[field][user_id] = key
        return out

    async def claim_keys(self, one_time_keys: dict) -> dict:
        out = {"one_time_keys": {}, "failures": {}}
        asks = [self._ask(s, "claim", {"one_time_keys": users})
                for s, users in self._by_server(one_time_keys).items()]
        for server, data, failure in await asyncio.gather(*asks):
            if failure is not None:
                out["failures"][server] = failure
                continue
            for user_id, devs in (data.get("one_time_keys") or {}).items():
                if _server(user_id) == server and user_id in one_time_keys and isinstance(devs, dict):
                    out["one_time_keys"][user_id] = {d: k for d, k in devs.items()
                                                     if isinstance(k, dict)}
        return out
