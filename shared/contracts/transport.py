"""Contract of the transport service's internal API (called by the transaction service)."""
from __future__ import annotations

from urllib.parse import quote

from pydantic import BaseModel

from shared.internal import InternalClient
from shared.server_keys import hint_params

PREFIX = "/_internal/transport/v1"
REQUEST = PREFIX + "/request"
KEYS = PREFIX + "/keys/{server_name}"


class FederationRequest(BaseModel):
    """One outbound federation request, signed with X-Matrix by the transport."""
    destination: str
    method: str
    path: str                                   # raw path starting with /_matrix/, already encoded
    query: list[tuple[str, str]] = []
    body: dict | None = None
    timeout_s: float | None = None


class FederationResponse(BaseModel):
    """`status` 0 means no HTTP answer (connection refused, reset, timeout): see `error`."""
    status: int
    body: dict | list | None = None
    error: str | None = None


class ServerKeys(BaseModel):
    """A remote server's verified keys. Keys are unpadded base64 ed25519 public keys."""
    server_name: str
    verify_keys: dict[str, str]
    old_verify_keys: dict[str, dict] = {}
    valid_until_ts: int


class TransportClient(InternalClient):
    async def federation_request(self, destination: str, method: str, path: str, *,
                                 query=None, body=None, timeout_s=None) -> dict:
        return await self.call("POST", REQUEST, {
            "destination": destination, "method": method, "path": path,
            "query": list(query or []), "body": body, "timeout_s": timeout_s})

    async def server_keys(self, server_name: str, key_ids=(), minimum_valid_until_ts: int = 0) -> dict:
        """Verified keys of `server_name`. Hints: key IDs it must know and the validity it
        must have; when the cached keys fail them they are fetched again, at most once per
        REFETCH_INTERVAL_S per server (shared/server_keys.py)."""
        return await self.call("GET", KEYS.format(server_name=quote(server_name, safe="")),
                               params=hint_params(key_ids, minimum_valid_until_ts))
