"""Signature and hash checks of received events, with remote keys cached in memory.

Invariant: an event passes `check_event` only if every server that must sign it
(`event_signature_servers`) has a valid signature by a key that was valid at the event's
origin_server_ts (capped validity, old_verify_keys until expired_ts). A content-hash
mismatch does not drop the event: it is redacted and then processed.
"""
from __future__ import annotations

import time

from shared.crypto import verify_key_from_base64
from shared.events import check_content_hash, event_signature_servers, redact, verify_event_signature


class SignatureFailed(Exception):
    pass


class Keyring:
    def __init__(self, transaction_client, server_name: str, own_key):
        self.tx = transaction_client
        self.server_name = server_name
        self._cache: dict[str, dict] = {}
        self._own = {own_key.key_id: verify_key_from_base64(own_key.public_key_base64)}

    async def _keys(self, server: str, at_ts: int) -> dict:
        if server == self.server_name:
            return self._own
        keys = self._cache.get(server)
        if keys is None or keys["valid_until_ts"] < time.time() * 1000:
            try:
                keys = await self.tx.server_keys(server)
            except Exception:  # noqa: BLE001 - unreachable: no keys
                keys = None
            if keys is None:
                return {}
            self._cache[server] = keys
        out = {}
        if keys["valid_until_ts"] >= at_ts:
            for kid, b64 in keys["verify_keys"].items():
                out[kid] = verify_key_from_base64(b64)
        for kid, old in keys.get("old_verify_keys", {}).items():
            if old["expired_ts"] >= at_ts:
                out[kid] = verify_key_from_base64(old["key"])
        return out

    async def check_event(self, event: dict, rv) -> dict:
        """The event to use (redacted if its hash is wrong), or SignatureFailed."""
        ts = event.get("origin_server_ts", 0)
        for server in event_signature_servers(event, rv):
            keys = await self._keys(server, ts)
            if not keys or not verify_event_signature(event, rv, server, keys):
                raise SignatureFailed(f"no valid signature of {server}")
        if not check_content_hash(event):
            return redact(event, rv)
        return event
