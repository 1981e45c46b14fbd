"""Server keys: our signed key response, and remote keys fetched, verified and cached.

Invariants:
- Our `/_matrix/key/v2/server` answer is self-signed and valid for `key_validity_s`.
- A remote key response is used only if it names the server we asked and is signed by a
  key in its own `verify_keys`. Cached until min(valid_until_ts, now + 7 days).
- Concurrent look-ups of one server share a single fetch.
"""
from __future__ import annotations

import asyncio
import time

from shared.crypto import SigningKey, sign_json, verify_json_signature, verify_key_from_base64

WEEK_MS = 7 * 24 * 3600 * 1000


def our_key_response(server_name: str, key: SigningKey, validity_s: int,
                     old_verify_keys: dict | None = None) -> dict:
    body = {"server_name": server_name,
            "verify_keys": {key.key_id: {"key": key.public_key_base64}},
            "old_verify_keys": old_verify_keys or {},
            "valid_until_ts": int((time.time() + validity_s) * 1000)}
    return sign_json(body, server_name, key)


def parse_key_response(server_name: str, body) -> dict | None:
    """The verified keys of a key response, or None if it is not acceptable."""
    if not isinstance(body, dict) or body.get("server_name") != server_name:
        return None
    vks = body.get("verify_keys")
    vut = body.get("valid_until_ts")
    if not isinstance(vks, dict) or not isinstance(vut, int):
        return None
    keys = {}
    for key_id, v in vks.items():
        try:
            keys[key_id] = v["key"]
            verify_key_from_base64(v["key"])
        except Exception:  # noqa: BLE001 - a malformed entry is just not usable
            keys.pop(key_id, None)
    self_signed = any(verify_json_signature(body, server_name, kid, verify_key_from_base64(k))
                      for kid, k in keys.items())
    if not self_signed:
        return None
    old = {}
    for key_id, v in (body.get("old_verify_keys") or {}).items():
        if isinstance(v, dict) and isinstance(v.get("key"), str) and isinstance(v.get("expired_ts"), int):
            old[key_id] = {"key": v["key"], "expired_ts": v["expired_ts"]}
    now_ms = int(time.time() * 1000)
    return {"server_name": server_name, "verify_keys": keys, "old_verify_keys": old,
            "valid_until_ts": min(vut, now_ms + WEEK_MS)}


class KeyStore:
    """Remote keys by server name. `fetch(server)` is an async callable returning the raw
    key response JSON (or raising)."""

    def __init__(self, fetch):
        self._fetch = fetch
        self._cache: dict[str, dict] = {}
        self._pending: dict[str, asyncio.Future] = {}

    def seed(self, server_name: str, keys: dict) -> None:
        self._cache[server_name] = keys

    async def get(self, server_name: str, key_id: str | None = None) -> dict | None:
        """Current keys of `server_name`, refetched when expired or lacking `key_id`."""
        keys = self._cache.get(server_name)
        now_ms = time.time() * 1000
        fresh = keys is not None and keys["valid_until_ts"] > now_ms
        if fresh and (key_id is None or key_id in keys["verify_keys"]
                      or key_id in keys["old_verify_keys"]):
            return keys
        fut = self._pending.get(server_name)
        if fut is None:
            fut = asyncio.ensure_future(self._load(server_name))
            self._pending[server_name] = fut
            fut.add_done_callback(lambda _f: self._pending.pop(server_name, None))
        return await asyncio.shield(fut)

    async def _load(self, server_name: str) -> dict | None:
        try:
            body = await self._fetch(server_name)
        except Exception:  # noqa: BLE001 - unreachable key server: no keys
            return self._cache.get(server_name)
        keys = parse_key_response(server_name, body)
        if keys is not None:
            self._cache[server_name] = keys
            return keys
        return self._cache.get(server_name)


def load_old_keys(data_dir) -> dict:
    """Our previous keys (`fedstack rotate-key` writes them), served as old_verify_keys so
    events signed with them still verify: {key_id: {key, expired_ts}}."""
    import json
    from pathlib import Path
    p = Path(data_dir) / "old_signing_keys.json"
    return json.loads(p.read_text()) if p.exists() else {}
