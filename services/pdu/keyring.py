"""Signature and hash checks of received events, with remote keys cached in memory.

Invariants:
- An event passes `check_event` only if, for every server that must sign it
  (`event_signature_servers`), it carries at least one signature by a key of that server
  valid at the event's origin_server_ts, and every such signature verifies
  (`verify_event_signature`). A key is valid at ts if it is in verify_keys and the key
  response's (capped) valid_until_ts >= ts, or in old_verify_keys with expired_ts >= ts.
- Remote keys come from the transaction service (which asks the transport); they are
  fetched again when the cached response lacks a key ID the event is signed with, or is
  valid for less than the event's origin_server_ts (its validity may have been extended),
  at most once per REFETCH_INTERVAL_S per server (`shared.server_keys.ServerKeyCache`).
- Our own keys are never fetched: the current key, and our previous ones (`fedstack
  rotate-key`, the old_verify_keys the transport serves), so that our events signed before
  a rotation verify when they come back to us.
- A content-hash mismatch does not drop the event: it is redacted and then processed.
"""
from __future__ import annotations

from shared.crypto import verify_key_from_base64
from shared.events import check_content_hash, event_signature_servers, redact, verify_event_signature
from shared.server_keys import REFETCH_INTERVAL_S, ServerKeyCache


class SignatureFailed(Exception):
    pass


def _signing_key_ids(event: dict, server: str) -> list[str]:
    """The ed25519 key IDs `server` signed `event` with (none if malformed)."""
    sigs = event.get("signatures")
    sigs = sigs.get(server) if isinstance(sigs, dict) else None
    return [k for k in sigs if k.startswith("ed25519:")] if isinstance(sigs, dict) else []


def keys_valid_at(keys: dict, at_ts: int) -> dict:
    """{key_id: VerifyKey} of an entry's keys that were valid at `at_ts`."""
    out = {}
    if keys["valid_until_ts"] >= at_ts:
        for kid, b64 in keys["verify_keys"].items():
            out[kid] = verify_key_from_base64(b64)
    for kid, old in keys.get("old_verify_keys", {}).items():
        if old["expired_ts"] >= at_ts:
            out[kid] = verify_key_from_base64(old["key"])
    return out


class Keyring:
    def __init__(self, transaction_client, server_name: str, own_key, own_old_keys: dict | None = None,
                 refetch_interval_s: float = REFETCH_INTERVAL_S):
        self.tx = transaction_client
        self.server_name = server_name
        self._remote = ServerKeyCache(self._fetch, refetch_interval_s)
        self._own = {"server_name": server_name,
                     "verify_keys": {own_key.key_id: own_key.public_key_base64},
                     "old_verify_keys": dict(own_old_keys or {}),
                     "valid_until_ts": 2**63}   # our current key is ours as long as we run

    async def _fetch(self, server: str, key_ids, minimum_valid_until_ts: int) -> dict | None:
        return await self.tx.server_keys(server, key_ids, minimum_valid_until_ts)

    async def _keys(self, server: str, event: dict, at_ts: int) -> dict:
        if server == self.server_name:
            return keys_valid_at(self._own, at_ts)
        keys = await self._remote.get(server, _signing_key_ids(event, server), at_ts)
        return keys_valid_at(keys, at_ts) if keys else {}

    async def check_event(self, event: dict, rv) -> dict:
        """The event to use (redacted if its hash is wrong), or SignatureFailed."""
        ts = event.get("origin_server_ts", 0)
        ts = ts if isinstance(ts, int) else 0
        for server in event_signature_servers(event, rv):
            keys = await self._keys(server, event, ts)
            if not keys or not verify_event_signature(event, rv, server, keys):
                raise SignatureFailed(f"no valid signature of {server}")
        if not check_content_hash(event):
            return redact(event, rv)
        return event
