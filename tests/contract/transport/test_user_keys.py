"""Federation device and key queries at the transport: authenticated with X-Matrix, then
answered by the transaction service's device routes (its answer passed through as it
is); a body not of the spec's shape is 400 and reaches nobody."""
from __future__ import annotations

import orjson
import pytest
from fastapi import Request
from starlette.responses import Response

from shared.contracts import devices as dev_c
from tests.contract.transport.test_inbound_auth import put_signed

FED = "/_matrix/federation/v1"


@pytest.fixture(autouse=True)
def device_routes(fake_transaction):
    fake_transaction.device_calls = []
    fake_transaction.device_answer = (200, {"from": "fake-transaction"})

    async def record(request: Request):
        raw = await request.body()
        fake_transaction.device_calls.append((request.method, request.scope["raw_path"].decode(),
                                              orjson.loads(raw) if raw else None))
        status, body = fake_transaction.device_answer
        return Response(orjson.dumps(body), status, media_type="application/json")
    for path, method in ((dev_c.USER_DEVICES, "GET"), (dev_c.KEYS_QUERY, "POST"),
                         (dev_c.KEYS_CLAIM, "POST")):
        fake_transaction.app.add_api_route(path, record, methods=[method])
    return fake_transaction


async def test_user_devices_answered_by_the_transaction_service(public_client, remote, device_routes):
    device_routes.device_answer = (200, {"user_id": "@u:hs.test", "stream_id": 3, "devices": []})
    resp = await put_signed(public_client, remote, FED + "/user/devices/%40u%3Ahs.test", None,
                            method="GET")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"user_id": "@u:hs.test", "stream_id": 3, "devices": []}
    assert device_routes.device_calls == [
        ("GET", dev_c.USER_DEVICES.format(user_id="%40u%3Ahs.test"), None)]


@pytest.mark.parametrize("kind,body", [
    ("query", {"device_keys": {"@u:hs.test": ["D1"]}}),
    ("claim", {"one_time_keys": {"@u:hs.test": {"D1": "signed_curve25519"}}})])
async def test_key_queries_forwarded_and_answers_passed_through(public_client, remote, device_routes,
                                                                kind, body):
    device_routes.device_answer = (400, {"errcode": "M_INVALID_PARAM", "error": "passed through"})
    resp = await put_signed(public_client, remote, FED + f"/user/keys/{kind}", body, method="POST")
    assert resp.status_code == 400 and resp.json()["error"] == "passed through"
    path = dev_c.KEYS_QUERY if kind == "query" else dev_c.KEYS_CLAIM
    assert device_routes.device_calls == [("POST", path, body)]


@pytest.mark.parametrize("kind,body", [
    ("query", {"device_keys": {"@u:hs.test": "all"}}), ("query", {}),
    ("claim", {"one_time_keys": {"@u:hs.test": ["D1"]}})])
async def test_malformed_key_queries_are_400_and_reach_nobody(public_client, remote, device_routes,
                                                              kind, body):
    resp = await put_signed(public_client, remote, FED + f"/user/keys/{kind}", body, method="POST")
    assert resp.status_code == 400 and resp.json()["errcode"] == "M_BAD_JSON"
    assert device_routes.device_calls == []
