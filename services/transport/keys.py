"""Server keys: our signed key response, and remote keys fetched, verified and cached.

Invariants:
- Our `/_matrix/key/v2/server` answer is self-signed and valid for `key_validity_s`.
- A remote key response is used only if it names the server we asked and is signed by a
  key in its own `verify_keys`. Cached until min(valid_until_ts, now + 7 days).
- Refetched when expired, or (at most once per REFETCH_INTERVAL_S per server) when a key
  ID asked for is unknown: see shared/server_keys.py. Concurrent look-ups share a fetch.
"""
from __future__ import annotations

import time

from shared.crypto import SigningKey, sign_json, verify_json_signature, verify_key_from_base64
from shared.server_keys import REFETCH_INTERVAL_S, ServerKeyCache, load_old_verify_keys

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


class KeyStore(ServerKeyCache):
    """Remote keys by server name (`ServerKeyCache`: refetched when expired, and, at most
    once a minute per server, when lacking a key ID asked for). `fetch(server)` is an async
    callable returning the raw key response JSON (or raising); only a response that
    `parse_key_response` accepts replaces what is cached."""

    def __init__(self, fetch, refetch_interval_s: float = REFETCH_INTERVAL_S):
        async def fetch_verified(server_name, _key_ids, _minimum_valid_until_ts):
            return parse_key_response(server_name, await fetch(server_name))
        super().__init__(fetch_verified, refetch_interval_s)


def load_old_keys(data_dir) -> dict:
    """Our previous keys, served as old_verify_keys (see `load_old_verify_keys`)."""
    return load_old_verify_keys(data_dir)
