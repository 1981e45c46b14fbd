"""The domain API's device and key routes: what each asks of the transaction service
(the destinations of the device-list update: every other server sharing a room with the
user), and how key queries and claims merge our answer with other servers' (each server
answering only for its own users; one that does not answer named in `failures`)."""
from __future__ import annotations

from shared.contracts import messaging as c

ALICE = "@alice:hs.test"


def keys(user_id: str, device_id: str) -> dict:
    return {"user_id": user_id, "device_id": device_id, "keys": {f"ed25519:{device_id}": "k"}}


async def test_device_change_goes_to_servers_sharing_a_room(public_client, fake_tx, fake_pdu):
    fake_pdu.user_servers_of[ALICE] = ["hs.test", "b.test"]
    fake_tx.device_answers["put_device"] = (200, {"stream_id": 7, "prev_id": [5]})
    resp = await public_client.put(c.DEVICE.format(user_id=ALICE, device_id="D1"),
                                   json={"display_name": "phone", "keys": keys(ALICE, "D1")})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"stream_id": 7, "prev_id": [5]}
    [(name, params, body)] = fake_tx.device_calls
    assert (name, params) == ("put_device", {"user_id": ALICE, "device_id": "D1"})
    assert body == {"display_name": "phone", "keys": keys(ALICE, "D1"), "destinations": ["b.test"]}
    fake_tx.device_answers["delete_device"] = (200, {"stream_id": 8, "prev_id": [7]})
    resp = await public_client.delete(c.DEVICE.format(user_id=ALICE, device_id="D1"))
    assert resp.status_code == 200 and fake_tx.device_calls[-1][2] == {"destinations": ["b.test"]}


async def test_cross_signing_and_one_time_keys(public_client, fake_tx, fake_pdu):
    fake_pdu.user_servers_of[ALICE] = ["c.test"]
    master = {"user_id": ALICE, "usage": ["master"], "keys": {}}
    resp = await public_client.put(c.CROSS_SIGNING.format(user_id=ALICE), json={"master_key": master})
    assert resp.status_code == 200, resp.text
    assert fake_tx.device_calls[-1][2] == {"master_key": master, "destinations": ["c.test"]}
    fake_tx.device_answers["one_time_keys"] = (200, {"one_time_key_counts": {"alg": 1}})
    resp = await public_client.post(c.ONE_TIME_KEYS.format(user_id=ALICE, device_id="D1"),
                                    json={"one_time_keys": {"alg:1": {"key": "x"}}})
    assert resp.json() == {"one_time_key_counts": {"alg": 1}}
    assert fake_tx.device_calls[-1][2] == {"one_time_keys": {"alg:1": {"key": "x"}}}


async def test_only_our_users_devices_are_written(public_client, fake_tx):
    for path, method in ((c.DEVICE.format(user_id="@eve:evil.test", device_id="D"), "PUT"),
                         (c.CROSS_SIGNING.format(user_id="@eve:evil.test"), "PUT")):
        resp = await public_client.request(method, path, json={})
        assert resp.status_code == 403 and resp.json()["errcode"] == "M_FORBIDDEN"
    assert fake_tx.device_calls == []


async def test_key_query_merges_local_and_remote_answers(public_client, fake_tx):
    bob, carol = "@bob:b.test", "@carol:c.test"
    fake_tx.device_answers["keys_query"] = (200, {"device_keys": {ALICE: {"A": keys(ALICE, "A")}},
                                                  "master_keys": {}, "self_signing_keys": {}})
    fake_tx.federation["b.test"] = {"status": 200, "error": None, "body": {
        "device_keys": {bob: {"B": keys(bob, "B"), "FORGED": keys(bob, "OTHER")},
                        carol: {"C": keys(carol, "C")}},              # b.test may not speak for carol
        "master_keys": {bob: {"user_id": bob, "usage": ["master"], "keys": {}}}}}
    resp = await public_client.post(c.KEYS_QUERY, json={"device_keys": {ALICE: [], bob: [], carol: []}})
    assert resp.status_code == 200, resp.text
    body = c.KeysQueryResponse.model_validate(resp.json())
    assert body.device_keys == {ALICE: {"A": keys(ALICE, "A")}, bob: {"B": keys(bob, "B")}}
    assert list(body.master_keys) == [bob]
    assert body.failures == {"c.test": {"status": 503, "message": "unreachable (fake)"}}
    assert [(f["destination"], f["path"], f["body"]) for f in fake_tx.federation_calls] == [
        ("b.test", "/_matrix/federation/v1/user/keys/query", {"device_keys": {bob: []}}),
        ("c.test", "/_matrix/federation/v1/user/keys/query", {"device_keys": {carol: []}})]


async def test_key_claim_asks_each_server_once(public_client, fake_tx):
    bob = "@bob:b.test"
    fake_tx.device_answers["keys_claim"] = (200, {"one_time_keys": {ALICE: {"A": {"alg:1": {"k": 1}}}}})
    fake_tx.federation["b.test"] = {"status": 502, "error": None,
                                    "body": {"errcode": "M_UNKNOWN", "error": "down the line"}}
    resp = await public_client.post(c.KEYS_CLAIM, json={"one_time_keys": {
        ALICE: {"A": "alg"}, bob: {"B": "alg"}}})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"one_time_keys": {ALICE: {"A": {"alg:1": {"k": 1}}}},
                           "failures": {"b.test": {"status": 502, "message": "down the line"}}}
