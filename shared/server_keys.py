"""A cache of remote servers' verified keys, and when to fetch them again; our old keys.

A cached entry is the verified form of a key response: {server_name, verify_keys: {key_id:
b64}, old_verify_keys: {key_id: {key, expired_ts}}, valid_until_ts} (validity already
capped by whoever parsed it).

Invariants of `ServerKeyCache.get(server, key_ids, minimum_valid_until_ts)`:
- no entry, or one whose valid_until_ts has passed: fetched (as before; not rate-limited);
- a valid entry that lacks one of `key_ids` (in neither verify_keys nor old_verify_keys) or
  whose valid_until_ts is below `minimum_valid_until_ts` (an event newer than the cached
  validity: it may have been extended) is *refetched*, but at most once per
  `refetch_interval_s` (REFETCH_INTERVAL_S = 60 s) per server, counted from the start of
  the last such refetch: a remote rotating its key is picked up at once, a remote (or a
  forger) citing unknown key IDs costs it at most one fetch a minute;
- concurrent look-ups of one server share one fetch; a failed fetch keeps the entry we had.
"""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

REFETCH_INTERVAL_S = 60.0
OLD_KEYS_FILE = "old_signing_keys.json"


def load_old_verify_keys(data_dir) -> dict:
    """Our previous keys (`fedstack rotate-key` writes them to OLD_KEYS_FILE), served as
    old_verify_keys so that events signed with them still verify: {key_id: {key, expired_ts}}."""
    p = Path(data_dir) / OLD_KEYS_FILE
    return json.loads(p.read_text()) if p.exists() else {}


def hint_params(key_ids=(), minimum_valid_until_ts: int = 0) -> list[tuple[str, object]] | None:
    """The query parameters of a server-keys request carrying the refetch hints (both
    internal clients send them the same way)."""
    params: list[tuple[str, object]] = [("key_id", k) for k in key_ids]
    if minimum_valid_until_ts:
        params.append(("minimum_valid_until_ts", int(minimum_valid_until_ts)))
    return params or None


def lacks(keys: dict, key_ids=(), minimum_valid_until_ts: int = 0) -> bool:
    """Whether a valid entry fails the hints: a key ID it does not know, or too short a validity."""
    known = keys["verify_keys"].keys() | keys.get("old_verify_keys", {}).keys()
    return any(k not in known for k in key_ids) or keys["valid_until_ts"] < minimum_valid_until_ts


def _valid(keys: dict | None) -> bool:
    return keys is not None and keys["valid_until_ts"] > time.time() * 1000


class ServerKeyCache:
    """`fetch(server, key_ids, minimum_valid_until_ts)` is an async callable returning the
    verified entry, or None (or raising) when there is none to be had."""

    def __init__(self, fetch, refetch_interval_s: float = REFETCH_INTERVAL_S, clock=time.monotonic):
        self._fetch = fetch
        self.refetch_interval_s = refetch_interval_s
        self._clock = clock
        self._cache: dict[str, dict] = {}
        self._pending: dict[str, asyncio.Future] = {}
        self._last_refetch: dict[str, float] = {}

    def seed(self, server_name: str, keys: dict) -> None:
        self._cache[server_name] = keys

    async def get(self, server_name: str, key_ids=(), minimum_valid_until_ts: int = 0) -> dict | None:
        """The entry of `server_name` (see the module invariants), or None."""
        keys = self._cache.get(server_name)
        if _valid(keys) and not lacks(keys, key_ids, minimum_valid_until_ts):
            return keys
        fut = self._pending.get(server_name)
        if fut is not None:              # someone else's fetch: it may bring what we lack
            keys = await asyncio.shield(fut)
            if not _valid(keys) or not lacks(keys, key_ids, minimum_valid_until_ts):
                return keys
        if _valid(keys):                 # a refetch: rate-limited
            now = self._clock()
            last = self._last_refetch.get(server_name)
            if last is not None and now - last < self.refetch_interval_s:
                return keys              # refetched recently: what we have is the answer
            self._last_refetch[server_name] = now
        fut = self._pending.get(server_name)
        if fut is None:
            fut = asyncio.ensure_future(self._load(server_name, tuple(key_ids), minimum_valid_until_ts))
            self._pending[server_name] = fut
            fut.add_done_callback(lambda _f: self._pending.pop(server_name, None))
        return await asyncio.shield(fut)

    async def _load(self, server_name: str, key_ids: tuple, minimum_valid_until_ts: int) -> dict | None:
        try:
            keys = await self._fetch(server_name, key_ids, minimum_valid_until_ts)
        except Exception:  # noqa: BLE001 - unreachable key server: keep what we had
            keys = None
        if keys is not None:
            self._cache[server_name] = keys
            return keys
        return self._cache.get(server_name)
