"""The domain API's error surface by HTTP alone (these also run against --base-url): bad
requests are refused as Matrix errors before anything reaches the layers below."""
from __future__ import annotations

import pytest

from shared.contracts import messaging as c

ROOM = "/v1/rooms/%21room%3Ahs.test"


@pytest.mark.parametrize("path,body", [
    (c.ROOMS, {}),                                                     # creator missing
    (c.ROOMS, {"creator": "@a:hs.test", "room_version": "9"}),         # unsupported version
    (c.ROOMS, {"creator": "@a:hs.test", "preset": "secret"}),
    (ROOM + "/events", {"sender": "@a:hs.test", "type": "m.room.message"}),   # content missing
    (ROOM + "/join", {"servers": []}),
    (ROOM + "/kick", {"sender": "@a:hs.test"}),
    (c.SUBSCRIPTIONS, {"room_id": "!r:hs.test"}),                      # url missing
])
async def test_invalid_body_is_400_bad_json(public_client, path, body):
    resp = await public_client.post(path, json=body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["errcode"] == "M_BAD_JSON"


async def test_not_json_is_400_not_json(public_client):
    resp = await public_client.post(c.ROOMS, content=b"{not json",
                                    headers={"content-type": "application/json"})
    assert resp.status_code == 400 and resp.json()["errcode"] == "M_NOT_JSON"


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 1001}, {"after": -1}, {"after": "x"}])
async def test_bad_paging_is_400(public_client, params):
    resp = await public_client.get(ROOM + "/events", params=params)
    assert resp.status_code == 400 and resp.json()["errcode"] == "M_BAD_JSON"


async def test_unknown_path_and_wrong_method(public_client):
    resp = await public_client.get("/v1/nothing")
    assert resp.status_code == 404 and resp.json()["errcode"] == "M_UNRECOGNIZED"
    resp = await public_client.delete(c.ROOMS)
    assert resp.status_code == 405 and resp.json()["errcode"] == "M_UNRECOGNIZED"


async def test_body_over_limit_is_413(public_client, service):
    big = b'{"creator":"@a:hs.test","name":"' + b"n" * service.settings.max_body_bytes + b'"}'
    resp = await public_client.post(c.ROOMS, content=big, headers={"content-type": "application/json"})
    assert resp.status_code == 413 and resp.json()["errcode"] == "M_TOO_LARGE"


async def test_health(public_client):
    resp = await public_client.get("/health")
    assert resp.status_code == 200 and resp.json()["status"] == "ok"
