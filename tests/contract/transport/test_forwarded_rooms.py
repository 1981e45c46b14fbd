"""The federation routes of issue #14 that transport forwards to the pdu service after
X-Matrix (services/transport/app.py FORWARDED): publicRooms (GET and POST), hierarchy,
timestamp_to_event, make_knock and send_knock. Each reaches the pdu service at
`/_internal/pdu/v1/federation` + the same raw path and query, with the verified origin in
the origin header only (a client's own header dropped) and the body as sent; the pdu
service's answer, success or Matrix error, comes back unchanged. A request that fails
X-Matrix or is not JSON reaches nobody."""
from __future__ import annotations

import pytest

from shared.contracts import pdu as pdu_c
from tests.contract.transport.conftest import REMOTE
from tests.contract.transport.test_inbound_auth import put_signed

FED = "/_matrix/federation"
ROOM = "%21space%3Ahs.test"
ROUTES = [
    ("GET", "/v1/publicRooms", "limit=5&since=o10", None),
    ("POST", "/v1/publicRooms", "", {"limit": 2, "filter": {"generic_search_term": "town"}}),
    ("GET", f"/v1/hierarchy/{ROOM}", "suggested_only=true", None),
    ("GET", f"/v1/timestamp_to_event/{ROOM}", "ts=1700000000000&dir=b", None),
    ("GET", f"/v1/make_knock/{ROOM}/%40fred%3Aremote.test", "ver=10&ver=12", None),
    ("PUT", f"/v1/send_knock/{ROOM}/%24knock", "",
     {"type": "m.room.member", "state_key": "@fred:remote.test", "content": {"membership": "knock"}}),
]


def uri(path: str, query: str) -> str:
    return FED + path + ("?" + query if query else "")


@pytest.mark.parametrize("method,path,query,body", ROUTES)
async def test_forwarded_with_path_query_origin_and_body(public_client, remote, fake_pdu,
                                                         method, path, query, body):
    fake_pdu.answer = (200, {"chunk": [], "from": "fake-pdu"})
    auth = remote.sign(method, uri(path, query), "hs.test", body)
    resp = await public_client.request(method, uri(path, query), json=body,
                                       headers={"Authorization": auth, pdu_c.ORIGIN_HEADER: "evil.test"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"chunk": [], "from": "fake-pdu"}
    [req] = fake_pdu.requests
    assert req["method"] == method
    assert req["raw_path"] == pdu_c.FEDERATION + path
    assert req["query"] == query
    assert req["origin_headers"] == [REMOTE]
    assert req["body"] == body


@pytest.mark.parametrize("method,path,query,body", ROUTES)
@pytest.mark.parametrize("status,errcode", [(400, "M_INVALID_PARAM"), (403, "M_FORBIDDEN"),
                                            (404, "M_NOT_FOUND"), (400, "M_INCOMPATIBLE_ROOM_VERSION")])
async def test_pdu_errors_pass_through_unchanged(public_client, remote, fake_pdu, method, path, query,
                                                 body, status, errcode):
    answer = {"errcode": errcode, "error": "from pdu", "room_version": "12"}
    fake_pdu.answer = (status, answer)
    resp = await put_signed(public_client, remote, uri(path, query), body, method=method)
    assert resp.status_code == status and resp.json() == answer


@pytest.mark.parametrize("method,path,query,body", ROUTES)
async def test_a_bad_signature_reaches_nobody(public_client, remote, fake_pdu, method, path, query, body):
    resp = await put_signed(public_client, remote, uri(path, query), body, method=method,
                            signed_uri=uri(path, query + "&x=1" if query else "x=1"))
    assert resp.status_code == 401 and resp.json()["errcode"] == "M_UNAUTHORIZED"
    assert fake_pdu.requests == []


@pytest.mark.parametrize("path", ["/v1/publicRooms", f"/v1/send_knock/{ROOM}/%24knock"])
async def test_a_body_that_is_not_json_reaches_nobody(public_client, remote, fake_pdu, path):
    method = "POST" if "publicRooms" in path else "PUT"
    auth = remote.sign(method, FED + path, "hs.test", None)
    resp = await public_client.request(method, FED + path, content=b"{not json",
                                       headers={"Authorization": auth, "content-type": "application/json"})
    assert resp.status_code == 400 and resp.json()["errcode"] in ("M_NOT_JSON", "M_BAD_JSON"), resp.text
    assert fake_pdu.requests == []
