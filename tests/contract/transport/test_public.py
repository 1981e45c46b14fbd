"""The transport's public surface, by HTTP alone (these also run against --base-url):
version, the self-signed key response, Matrix error shapes for unknown paths and methods,
the body-size cap, X-Matrix refusals that need no fake, and the secret on internal routes.

With --base-url, give the transport's internal listener (it serves the federation API
too); its public HTTPS listener serves no internal route, so the internal-route tests in
test_outbound.py cannot pass there.
"""
from __future__ import annotations

import time

import pytest

from shared.crypto import SigningKey, verify_json_signature, verify_key_from_base64
from shared.xmatrix import sign_request

FED = "/_matrix/federation"

# Every federation endpoint the transport serves (method, example path, has body).
FEDERATION_ENDPOINTS = [
    ("PUT", FED + "/v1/send/t1", True),
    ("GET", FED + "/v1/event/$e", False),
    ("GET", FED + "/v1/state/!r:x.test?event_id=$e", False),
    ("GET", FED + "/v1/state_ids/!r:x.test?event_id=$e", False),
    ("GET", FED + "/v1/backfill/!r:x.test?v=$e&limit=10", False),
    ("POST", FED + "/v1/get_missing_events/!r:x.test", True),
    ("GET", FED + "/v1/event_auth/!r:x.test/$e", False),
    ("GET", FED + "/v1/make_join/!r:x.test/@u:remote.test?ver=10", False),
    ("PUT", FED + "/v2/send_join/!r:x.test/$e", True),
    ("PUT", FED + "/v2/invite/!r:x.test/$e", True),
    ("GET", FED + "/v1/make_leave/!r:x.test/@u:remote.test", False),
    ("PUT", FED + "/v2/send_leave/!r:x.test/$e", True),
    ("GET", FED + "/v1/make_knock/!r:x.test/@u:remote.test?ver=10", False),
    ("PUT", FED + "/v1/send_knock/!r:x.test/$e", True),
    ("GET", FED + "/v1/user/devices/@u:hs.test", False),
    ("POST", FED + "/v1/user/keys/query", True),
    ("POST", FED + "/v1/user/keys/claim", True),
    ("GET", FED + "/v1/query/profile?user_id=@u:hs.test", False),
    ("GET", FED + "/v1/query/directory?room_alias=%23a:hs.test", False),
    ("GET", FED + "/v1/publicRooms", False),
    ("POST", FED + "/v1/publicRooms", True),
    ("GET", FED + "/v1/hierarchy/!r:x.test", False),
    ("GET", FED + "/v1/timestamp_to_event/!r:x.test?ts=0&dir=f", False),
]


def assert_matrix_error(resp, status: int, errcode: str | None = None):
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert isinstance(body.get("errcode"), str) and isinstance(body.get("error"), str), body
    if errcode:
        assert body["errcode"] == errcode, body


async def test_version(public_client):
    resp = await public_client.get(FED + "/v1/version")
    assert resp.status_code == 200
    server = resp.json()["server"]
    assert isinstance(server["name"], str) and isinstance(server["version"], str)


async def test_key_response_is_self_signed_and_current(public_client, service):
    resp = await public_client.get("/_matrix/key/v2/server")
    assert resp.status_code == 200
    body = resp.json()
    name = service.settings.server_name
    assert body["server_name"] == name
    assert body["valid_until_ts"] > time.time() * 1000
    assert body["verify_keys"], body
    for key_id, entry in body["verify_keys"].items():
        assert key_id.startswith("ed25519:")
        assert verify_json_signature(body, name, key_id, verify_key_from_base64(entry["key"]))
    # and a tampered copy does not verify
    tampered = dict(body, valid_until_ts=body["valid_until_ts"] + 1)
    key_id, entry = next(iter(body["verify_keys"].items()))
    assert not verify_json_signature(tampered, name, key_id, verify_key_from_base64(entry["key"]))


@pytest.mark.parametrize("method,path", [
    ("GET", FED + "/v1/no_such_endpoint"),
    ("GET", "/_matrix/nothing/here"),
    ("PUT", FED + "/v1/send"),                     # txn id missing
])
async def test_unknown_path_is_404_unrecognized(public_client, method, path):
    assert_matrix_error(await public_client.request(method, path), 404, "M_UNRECOGNIZED")


@pytest.mark.parametrize("method,path", [
    ("POST", FED + "/v1/version"),
    ("GET", FED + "/v1/send/t1"),
    ("DELETE", "/_matrix/key/v2/server"),
])
async def test_wrong_method_is_405_unrecognized(public_client, method, path):
    assert_matrix_error(await public_client.request(method, path), 405, "M_UNRECOGNIZED")


@pytest.mark.parametrize("method,path,has_body", FEDERATION_ENDPOINTS)
async def test_every_federation_endpoint_needs_x_matrix(public_client, method, path, has_body):
    resp = await public_client.request(method, path, json={"pdus": []} if has_body else None)
    assert_matrix_error(resp, 401, "M_UNAUTHORIZED")


async def test_request_for_another_destination_is_401(public_client, service):
    key = SigningKey.generate("x")
    body = {"origin": "remote.test", "origin_server_ts": 1, "pdus": []}
    uri = FED + "/v1/send/t-elsewhere"
    auth = sign_request("PUT", uri, "remote.test", "someone-else.test", key, body)
    resp = await public_client.put(uri, json=body, headers={"Authorization": auth})
    assert_matrix_error(resp, 401, "M_UNAUTHORIZED")


async def test_unparseable_authorization_is_refused(public_client):
    resp = await public_client.get(FED + "/v1/event/$e", headers={"Authorization": "X-Matrix nonsense"})
    assert resp.status_code in (400, 401)
    assert resp.json()["errcode"] == "M_UNAUTHORIZED"


def _body_of_size(n: int) -> bytes:
    head, tail = b'{"pdus":[],"pad":"', b'"}'
    return head + b"a" * (n - len(head) - len(tail)) + tail


async def test_body_over_limit_is_413_too_large(public_client, service):
    limit = service.settings.max_body_bytes
    resp = await public_client.put(FED + "/v1/send/t-big", content=_body_of_size(limit + 1),
                                   headers={"content-type": "application/json"})
    assert_matrix_error(resp, 413, "M_TOO_LARGE")


async def test_streamed_body_over_limit_is_413_too_large(public_client, service):
    """No Content-Length: the cap is enforced while the body is read."""
    limit = service.settings.max_body_bytes
    data = _body_of_size(limit + 1)

    async def chunks():
        for i in range(0, len(data), 16 * 1024):
            yield data[i:i + 16 * 1024]
    resp = await public_client.put(FED + "/v1/send/t-big2", content=chunks(),
                                   headers={"content-type": "application/json"})
    assert_matrix_error(resp, 413, "M_TOO_LARGE")


async def test_body_at_limit_is_not_refused_for_size(public_client, service):
    limit = service.settings.max_body_bytes
    resp = await public_client.put(FED + "/v1/send/t-limit", content=_body_of_size(limit),
                                   headers={"content-type": "application/json"})
    assert_matrix_error(resp, 401, "M_UNAUTHORIZED")     # reached the X-Matrix check


@pytest.mark.parametrize("method,path", [
    ("POST", "/_internal/transport/v1/request"),
    ("GET", "/_internal/transport/v1/keys/remote.test"),
])
@pytest.mark.parametrize("secret", [None, "wrong-secret"])
async def test_internal_routes_need_the_secret(public_client, method, path, secret):
    headers = {"x-fedstack-secret": secret} if secret else {}
    body = {"destination": "remote.test", "method": "GET", "path": FED + "/v1/version"}
    resp = await public_client.request(method, path, json=body if method == "POST" else None,
                                       headers=headers)
    # 403 from a listener with internal routes; 404 from a public listener that has none
    # (`fedstack serve transport`'s HTTPS listener): either way, not reachable.
    assert (resp.status_code, resp.json().get("errcode")) in ((403, "M_FORBIDDEN"), (404, "M_UNRECOGNIZED")), resp.text


async def test_health(public_client):
    resp = await public_client.get("/health")
    assert resp.status_code == 200 and resp.json()["status"] == "ok"
