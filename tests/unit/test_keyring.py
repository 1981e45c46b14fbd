"""The pdu keyring against a fake transaction client (issue #12, items 4 and 9): keys are
fetched again for an unknown key ID or an event newer than the cached validity, at most
once per interval per server; every signature by a known key must verify; our own old
keys (after `fedstack rotate-key`) still verify our events."""
from __future__ import annotations

import asyncio
import copy
import time

import pytest

from services.pdu.keyring import Keyring, SignatureFailed
from shared.crypto import SigningKey
from shared.events import sign_event
from shared.room_versions import get_room_version
from shared.server_keys import ServerKeyCache

RV = get_room_version("11")
REMOTE = "remote.test"
OURS = "ours.test"
HOUR_MS = 3600 * 1000


def now_ms() -> int:
    return int(time.time() * 1000)


def entry(*keys: SigningKey, valid_for_ms: int = HOUR_MS, old: dict | None = None) -> dict:
    return {"server_name": REMOTE, "verify_keys": {k.key_id: k.public_key_base64 for k in keys},
            "old_verify_keys": old or {}, "valid_until_ts": now_ms() + valid_for_ms}


class FakeTransactionClient:
    """Serves `keys` (what the transport would return now) and records every call."""

    def __init__(self, keys: dict):
        self.keys = keys
        self.calls: list[tuple] = []

    async def server_keys(self, server_name, key_ids=(), minimum_valid_until_ts=0):
        self.calls.append((server_name, tuple(key_ids), minimum_valid_until_ts))
        await asyncio.sleep(0)
        return copy.deepcopy(self.keys)


def event(*keys: SigningKey, server: str = REMOTE, ts: int | None = None, body: str = "hi") -> dict:
    ev = {"type": "m.room.message", "room_id": "!r:" + server, "sender": f"@u:{server}",
          "origin_server_ts": ts or now_ms(), "content": {"body": body}, "depth": 3,
          "prev_events": ["$p"], "auth_events": ["$a"], "hashes": {}, "signatures": {}}
    for k in keys:
        sign_event(ev, server, k, RV)
    return ev


@pytest.fixture
def old_key():
    return SigningKey.generate("old")


@pytest.fixture
def new_key():
    return SigningKey.generate("new")


async def test_unknown_key_id_while_cache_is_valid_is_fetched_again(old_key, new_key):
    tx = FakeTransactionClient(entry(old_key))
    ring = Keyring(tx, OURS, SigningKey.generate("ours"))
    await ring.check_event(event(old_key), RV)
    assert len(tx.calls) == 1
    tx.keys = entry(new_key, old={old_key.key_id: {"key": old_key.public_key_base64,
                                                   "expired_ts": now_ms()}})   # rotated
    await ring.check_event(event(new_key), RV)       # accepted after a refetch
    assert len(tx.calls) == 2
    assert tx.calls[1][1] == (new_key.key_id,)       # the transport is told what we lack
    await ring.check_event(event(new_key), RV)       # now cached: no more fetches
    assert len(tx.calls) == 2


async def test_a_second_unknown_key_within_the_interval_is_not_fetched_again(old_key, new_key):
    tx = FakeTransactionClient(entry(old_key))
    ring = Keyring(tx, OURS, SigningKey.generate("ours"))
    await ring.check_event(event(old_key), RV)
    tx.keys = entry(new_key)
    await ring.check_event(event(new_key), RV)
    newer = SigningKey.generate("newer")
    tx.keys = entry(newer)
    with pytest.raises(SignatureFailed):
        await ring.check_event(event(newer), RV)
    assert len(tx.calls) == 2                        # rate-limited: no third fetch
    await ring.check_event(event(new_key), RV)       # what we have still works


async def test_concurrent_events_with_a_new_key_share_one_refetch(old_key, new_key):
    tx = FakeTransactionClient(entry(old_key))
    ring = Keyring(tx, OURS, SigningKey.generate("ours"))
    await ring.check_event(event(old_key), RV)
    tx.keys = entry(new_key)
    await asyncio.gather(*[ring.check_event(event(new_key, body=str(i)), RV) for i in range(10)])
    assert len(tx.calls) == 2


async def test_event_newer_than_the_cached_validity_makes_us_fetch_again(old_key):
    tx = FakeTransactionClient(entry(old_key, valid_for_ms=HOUR_MS))
    ring = Keyring(tx, OURS, SigningKey.generate("ours"))
    await ring.check_event(event(old_key), RV)
    later = now_ms() + 2 * HOUR_MS
    tx.keys = entry(old_key, valid_for_ms=3 * HOUR_MS)          # validity extended
    await ring.check_event(event(old_key, ts=later), RV)
    assert len(tx.calls) == 2 and tx.calls[1][2] == later
    with pytest.raises(SignatureFailed):                        # beyond even the new validity,
        await ring.check_event(event(old_key, ts=now_ms() + 4 * HOUR_MS), RV)
    assert len(tx.calls) == 2                                   # and not fetched again so soon


async def test_one_invalid_signature_by_a_known_key_rejects_the_event(old_key, new_key):
    tx = FakeTransactionClient(entry(old_key, new_key))
    ring = Keyring(tx, OURS, SigningKey.generate("ours"))
    ev = event(old_key, new_key)
    await ring.check_event(copy.deepcopy(ev), RV)
    sigs = ev["signatures"][REMOTE]
    sigs[new_key.key_id] = sigs[old_key.key_id]      # valid by old_key, not by new_key
    with pytest.raises(SignatureFailed):
        await ring.check_event(ev, RV)
    assert len(tx.calls) == 1                        # both keys known: nothing to fetch


async def test_our_events_signed_by_our_previous_key_verify(old_key, new_key):
    """After `fedstack rotate-key`, the keyring knows the old key as an old_verify_key."""
    tx = FakeTransactionClient(entry(old_key))
    rotated_at = now_ms()
    ring = Keyring(tx, OURS, new_key, {old_key.key_id: {"key": old_key.public_key_base64,
                                                       "expired_ts": rotated_at}})
    await ring.check_event(event(old_key, server=OURS, ts=rotated_at - 1000), RV)
    await ring.check_event(event(new_key, server=OURS), RV)
    with pytest.raises(SignatureFailed):   # signed by the old key after it expired
        await ring.check_event(event(old_key, server=OURS, ts=rotated_at + 1000), RV)
    assert tx.calls == []                  # our own keys are never fetched


async def test_the_refetch_interval_passes():
    """ServerKeyCache: after the interval a lacking entry is fetched again; before, not."""
    clock = [100.0]
    calls = []

    async def fetch(server, key_ids, minimum):
        calls.append(key_ids)
        return {"server_name": server, "verify_keys": {"ed25519:a": "x"}, "old_verify_keys": {},
                "valid_until_ts": now_ms() + HOUR_MS}
    cache = ServerKeyCache(fetch, refetch_interval_s=60, clock=lambda: clock[0])
    await cache.get(REMOTE)
    await cache.get(REMOTE, ["ed25519:b"])
    await cache.get(REMOTE, ["ed25519:c"])
    clock[0] += 59
    await cache.get(REMOTE, ["ed25519:c"])
    assert calls == [(), ("ed25519:b",)]
    clock[0] += 1
    await cache.get(REMOTE, ["ed25519:c"])
    assert calls == [(), ("ed25519:b",), ("ed25519:c",)]
    await cache.get(REMOTE, ["ed25519:a"])             # known: never a fetch
    assert len(calls) == 3
