"""Devices and keys between two whole homeservers (in-process): a device A's homeserver
uploads reaches B as an m.device_list_update and in B's key queries (over federation,
X-Matrix signed); one-time keys claimed through B are A's and are never handed out twice;
a server that does not answer is named in `failures`."""
from __future__ import annotations

from urllib.parse import quote

from tests.e2e.test_ephemeral import joined, pair, wait_edus  # noqa: F401  (fixture)


def device_keys(user_id: str, device_id: str) -> dict:
    return {"user_id": user_id, "device_id": device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {f"curve25519:{device_id}": "c" * 43, f"ed25519:{device_id}": "e" * 43},
            "signatures": {user_id: {f"ed25519:{device_id}": "s" * 86}}}


async def test_device_list_and_keys_reach_the_other_server(pair):
    a, b = pair
    room, alice, bob = await joined(a, b)
    sb = await b.api.subscribe("http://cb/callback",
                               types=["m.device_list_update", "m.signing_key_update"])
    first = await a.api.put_device(alice, "ADEV", display_name="phone", keys=device_keys(alice, "ADEV"))
    assert first["prev_id"] == [0]                 # the empty list before it
    [update] = await wait_edus(b, 1, sb)
    assert update["origin"] == a.server_name
    assert update["content"]["device_id"] == "ADEV" and update["content"]["stream_id"] == first["stream_id"]
    master = {"user_id": alice, "usage": ["master"], "keys": {"ed25519:MK": "m" * 43}}
    await a.api.put_cross_signing(alice, master_key=master)
    got = await wait_edus(b, 2, sb)
    assert got[1]["edu_type"] == "m.signing_key_update" and got[1]["content"]["master_key"] == master

    answer = await b.api.query_keys({alice: [], "@x:nowhere.test": []})
    assert answer["device_keys"][alice]["ADEV"]["keys"] == device_keys(alice, "ADEV")["keys"]
    assert answer["device_keys"][alice]["ADEV"]["unsigned"] == {"device_display_name": "phone"}
    assert answer["master_keys"] == {alice: master}
    assert set(answer["failures"]) == {"nowhere.test"}

    resp = await b.tx.federation_request(a.server_name, "GET",
                                         "/_matrix/federation/v1/user/devices/" + quote(alice, safe=""))
    assert resp["status"] == 200, resp
    assert resp["body"]["stream_id"] == first["stream_id"] and resp["body"]["master_key"] == master
    assert [d["device_id"] for d in resp["body"]["devices"]] == ["ADEV"]

    await a.api.delete_device(alice, "ADEV")
    got = await wait_edus(b, 3, sb)
    assert got[2]["content"]["deleted"] is True and got[2]["content"]["prev_id"] == [first["stream_id"]]


async def test_one_time_keys_claimed_through_the_other_server_once(pair):
    a, b = pair
    alice = a.user("alice")
    await a.api.put_device(alice, "ADEV", keys=device_keys(alice, "ADEV"))
    counts = await a.api.upload_one_time_keys(alice, "ADEV", {
        "signed_curve25519:AAAA": {"key": "k1", "signatures": {}},
        "signed_curve25519:AAAB": {"key": "k2", "signatures": {}}})
    assert counts == {"one_time_key_counts": {"signed_curve25519": 2}}
    claims = [await b.api.claim_keys({alice: {"ADEV": "signed_curve25519"}}) for _ in range(3)]
    handed = [k for c in claims for k in c["one_time_keys"].get(alice, {}).get("ADEV", {})]
    assert sorted(handed) == ["signed_curve25519:AAAA", "signed_curve25519:AAAB"]
    assert all(c["failures"] == {} for c in claims)
    empty = await b.api.query_keys({b.user("nobody"): []})
    assert empty == {"device_keys": {b.user("nobody"): {}}, "master_keys": {},
                     "self_signing_keys": {}, "failures": {}}
