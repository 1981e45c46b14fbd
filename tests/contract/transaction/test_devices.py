"""Our users' devices and keys in the transaction service: each device or cross-signing
change commits with its EDU queued for the given destinations (stream_id growing,
prev_id the user's previous one), the federation answers are read back from them, and a
one-time key is handed out once, also under concurrent claims."""
from __future__ import annotations

import asyncio

import pytest

from shared.contracts import devices as c
from tests.contract.helpers import unique, wait_until


def q(v: str) -> str:
    from urllib.parse import quote
    return quote(v, safe="")


@pytest.fixture
def user(service):
    """A fresh user of the server under test (also against --base-url)."""
    return lambda: f"@{unique('u')}:{service.settings.server_name}"


def keys(user_id: str, device_id: str) -> dict:
    return {"user_id": user_id, "device_id": device_id, "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
            "keys": {f"curve25519:{device_id}": "c" * 43, f"ed25519:{device_id}": "e" * 43},
            "signatures": {user_id: {f"ed25519:{device_id}": "s" * 86}}}


async def put_device(client, user_id, device_id, **body):
    resp = await client.put(c.DEVICE.format(user_id=q(user_id), device_id=q(device_id)), json=body)
    assert resp.status_code == 200, resp.text
    return c.DeviceChange.model_validate(resp.json())


def device_edus(fake_transport, dest: str) -> list[dict]:
    return [e for s in fake_transport.edu_sends if s["destination"] == dest for e in s["edus"]]


async def test_device_changes_commit_with_their_updates(service_client, fake_transport, user):
    u = user()
    first = await put_device(service_client, u, "D1", display_name="phone", keys=keys(u, "D1"),
                             destinations=["b.test"])
    second = await put_device(service_client, u, "D2", destinations=["b.test", "c.test"])
    resp = await service_client.request("DELETE", c.DEVICE.format(user_id=q(u), device_id="D1"),
                                        json={"destinations": ["b.test"]})
    assert resp.status_code == 200, resp.text
    third = c.DeviceChange.model_validate(resp.json())
    assert first.prev_id == [0] and second.prev_id == [first.stream_id]   # 0: no devices yet
    assert third.prev_id == [second.stream_id] and first.stream_id < second.stream_id < third.stream_id
    await wait_until(lambda: len(device_edus(fake_transport, "b.test")) == 3, what="updates sent")
    sent = device_edus(fake_transport, "b.test")
    assert [e["edu_type"] for e in sent] == ["m.device_list_update"] * 3
    assert sent[0]["content"] == {"user_id": u, "device_id": "D1", "stream_id": first.stream_id,
                                  "prev_id": [0], "deleted": False, "device_display_name": "phone",
                                  "keys": keys(u, "D1")}
    assert sent[2]["content"]["deleted"] is True and sent[2]["content"]["prev_id"] == [second.stream_id]
    await wait_until(lambda: len(device_edus(fake_transport, "c.test")) == 1, what="c.test's update")
    resp = await service_client.get(c.USER_DEVICES.format(user_id=q(u)))
    assert resp.json() == {"user_id": u, "stream_id": third.stream_id, "devices": [{"device_id": "D2"}]}


async def test_a_user_with_no_devices_gets_a_well_formed_answer(service_client, user):
    u = user()
    resp = await service_client.get(c.USER_DEVICES.format(user_id=q(u)))
    assert resp.status_code == 200 and resp.json() == {"user_id": u, "stream_id": 0, "devices": []}
    resp = await service_client.post(c.KEYS_QUERY, json={"device_keys": {u: []}})
    assert resp.json() == {"device_keys": {u: {}}, "master_keys": {}, "self_signing_keys": {}}
    resp = await service_client.get(c.USER_DEVICES.format(user_id=q("@x:elsewhere.test")))
    assert resp.status_code == 400 and resp.json()["errcode"] == "M_INVALID_PARAM"


async def test_keys_query_and_cross_signing(service_client, fake_transport, user):
    u = user()
    await put_device(service_client, u, "D1", display_name="laptop", keys=keys(u, "D1"))
    await put_device(service_client, u, "D2", keys=keys(u, "D2"))
    master = {"user_id": u, "usage": ["master"], "keys": {"ed25519:M": "m" * 43}}
    ssk = {"user_id": u, "usage": ["self_signing"], "keys": {"ed25519:S": "s" * 43}}
    resp = await service_client.put(c.CROSS_SIGNING.format(user_id=q(u)), json={
        "master_key": master, "self_signing_key": ssk,
        "user_signing_key": {"user_id": u, "usage": ["user_signing"], "keys": {}},
        "destinations": ["b.test"]})
    assert resp.status_code == 200, resp.text
    resp = await service_client.post(c.KEYS_QUERY, json={"device_keys": {u: ["D1"], "@o:other.test": []}})
    body = c.KeysQueryResponse.model_validate(resp.json())
    assert body.device_keys == {u: {"D1": dict(keys(u, "D1"), unsigned={"device_display_name": "laptop"})}}
    assert body.master_keys == {u: master} and body.self_signing_keys == {u: ssk}
    await wait_until(lambda: device_edus(fake_transport, "b.test"), what="signing key update")
    [edu] = device_edus(fake_transport, "b.test")
    assert edu == {"edu_type": "m.signing_key_update",
                   "content": {"user_id": u, "master_key": master, "self_signing_key": ssk}}
    devices = (await service_client.get(c.USER_DEVICES.format(user_id=q(u)))).json()
    assert devices["master_key"] == master and devices["self_signing_key"] == ssk
    assert "user_signing_key" not in devices


@pytest.mark.parametrize("bad", [
    {"user_id": "@someone:{server}", "device_id": "D1"},
    {"user_id": "{me}", "device_id": "OTHER"},
    {"user_id": "{me}", "device_id": "D1", "n": 1.5}])
async def test_keys_of_another_user_or_device_or_not_canonical_are_refused(service_client, user, bad):
    me = user()
    keys = {k: v.format(me=me, server=me.split(":", 1)[1]) if isinstance(v, str) else v
            for k, v in bad.items()}
    resp = await service_client.put(c.DEVICE.format(user_id=q(me), device_id="D1"), json={"keys": keys})
    assert resp.status_code == 400, resp.text
    resp = await service_client.get(c.USER_DEVICES.format(user_id=q(me)))
    assert resp.json()["devices"] == []                               # nothing stored


async def test_one_time_keys_claimed_once_even_concurrently(service_client, user):
    u = user()
    await put_device(service_client, u, "D1", keys=keys(u, "D1"))
    otks = {f"signed_curve25519:K{i}": {"key": f"k{i}"} for i in range(5)}
    otks["other_alg:Z"] = {"key": "z"}
    resp = await service_client.post(c.ONE_TIME_KEYS.format(user_id=q(u), device_id="D1"),
                                     json={"one_time_keys": otks})
    assert resp.json() == {"one_time_key_counts": {"signed_curve25519": 5, "other_alg": 1}}
    claim = {"one_time_keys": {u: {"D1": "signed_curve25519"}}}
    answers = await asyncio.gather(*(service_client.post(c.KEYS_CLAIM, json=claim) for _ in range(12)))
    got = [a.json()["one_time_keys"].get(u, {}).get("D1") for a in answers]
    handed = [next(iter(g)) for g in got if g]
    assert sorted(handed) == sorted(k for k in otks if k.startswith("signed_curve25519"))
    assert len(handed) == len(set(handed)) == 5
    resp = await service_client.post(c.KEYS_CLAIM, json={"one_time_keys": {u: {"D1": "other_alg"}}})
    assert resp.json() == {"one_time_keys": {u: {"D1": {"other_alg:Z": {"key": "z"}}}}}


async def test_one_time_keys_need_a_known_device(service_client, user):
    resp = await service_client.post(c.ONE_TIME_KEYS.format(user_id=q(user()), device_id="NOPE"),
                                     json={"one_time_keys": {"a:b": {}}})
    assert resp.status_code == 404
