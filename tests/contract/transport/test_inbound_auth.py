"""Inbound X-Matrix against a fake remote's real key: only a request whose signature covers
exactly the method, URI, origin, destination and body gets through, and then it reaches
the right layer (transaction for /send, pdu for the rest) with the verified origin."""
from __future__ import annotations

import orjson
import pytest

from shared.contracts import pdu as pdu_c
from shared.crypto import SigningKey
from shared.xmatrix import sign_request
from tests.contract.helpers import key_response, wait_until
from tests.contract.transport.conftest import REMOTE

FED = "/_matrix/federation"


def txn_body(n: int = 1) -> dict:
    return {"origin": REMOTE, "origin_server_ts": 1700000000000,
            "pdus": [{"type": "m.room.message", "n": i} for i in range(n)]}


async def put_signed(client, remote, uri, body, *, signed_uri=None, signed_body="same",
                     method="PUT", signed_method=None, destination=None):
    signed_body = body if signed_body == "same" else signed_body
    auth = remote.sign(signed_method or method, signed_uri or uri,
                       destination or "hs.test", signed_body)
    return await client.request(method, uri, content=orjson.dumps(body) if body is not None else None,
                                headers={"Authorization": auth, "content-type": "application/json"})


async def test_valid_send_is_forwarded_with_origin(public_client, remote, fake_transaction):
    fake_transaction.answer = (200, {"pdus": {"$a": {}, "$b": {"error": "unknown room"}}})
    body = txn_body(2)
    resp = await put_signed(public_client, remote, FED + "/v1/send/txn-1", body)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"pdus": {"$a": {}, "$b": {"error": "unknown room"}}}
    assert fake_transaction.inbound == [{"origin": REMOTE, "txn_id": "txn-1", "body": body}]


async def test_transaction_refusal_passes_through(public_client, remote, fake_transaction):
    fake_transaction.answer = (429, {"errcode": "M_UNKNOWN", "error": "Too many concurrent transactions"})
    resp = await put_signed(public_client, remote, FED + "/v1/send/txn-2", txn_body())
    assert resp.status_code == 429
    assert resp.json()["error"] == "Too many concurrent transactions"


@pytest.mark.parametrize("escaped,txn_id", [
    ("a%20b", "a b"),
    ("t%3F1", "t?1"),          # '?' must not turn the rest of the id into a query
    ("t%231", "t#1"),
    ("a%2541", "a%41"),        # a literal '%' must not be decoded a second time
])
async def test_escaped_txn_id_reaches_transaction_unchanged(public_client, remote, fake_transaction,
                                                            escaped, txn_id):
    resp = await put_signed(public_client, remote, FED + "/v1/send/" + escaped, txn_body())
    assert resp.status_code == 200, resp.text
    assert [t["txn_id"] for t in fake_transaction.inbound] == [txn_id]


async def test_txn_id_with_slash_is_accepted(public_client, remote, fake_transaction):
    resp = await put_signed(public_client, remote, FED + "/v1/send/a%2Fb", txn_body())
    assert resp.status_code == 200, resp.text
    assert [t["txn_id"] for t in fake_transaction.inbound] == ["a/b"]


@pytest.mark.parametrize("tamper", ["body", "uri", "method", "destination", "origin_key"])
async def test_tampered_request_is_401(public_client, remote, fake_transaction, tamper):
    body = txn_body()
    uri = FED + "/v1/send/txn-3"
    kw = {}
    if tamper == "body":
        kw["signed_body"] = dict(body, origin_server_ts=body["origin_server_ts"] + 1)
    elif tamper == "uri":
        kw["signed_uri"] = FED + "/v1/send/txn-other"
    elif tamper == "method":
        kw["signed_method"] = "POST"
    elif tamper == "destination":
        kw["destination"] = "other.test"
    if tamper == "origin_key":     # same key id, but not the key the origin publishes
        auth = sign_request("PUT", uri, REMOTE, "hs.test", SigningKey.generate("remote"), body)
        resp = await public_client.put(uri, content=orjson.dumps(body), headers={"Authorization": auth})
    else:
        resp = await put_signed(public_client, remote, uri, body, **kw)
    assert resp.status_code == 401, resp.text
    assert resp.json()["errcode"] == "M_UNAUTHORIZED"
    assert fake_transaction.inbound == []


async def test_tampered_query_is_401(public_client, remote, fake_pdu):
    uri = FED + "/v1/backfill/!r:hs.test?v=%24e&limit=5"
    auth = remote.sign("GET", uri, "hs.test")
    resp = await public_client.get(FED + "/v1/backfill/!r:hs.test?v=%24e&limit=50",
                                   headers={"Authorization": auth})
    assert resp.status_code == 401
    assert fake_pdu.requests == []


async def test_body_signed_for_get_is_refused(public_client, remote, fake_pdu):
    """A GET is signed without `content`; a signature that covered a body does not fit."""
    uri = FED + "/v1/event/$e"
    auth = remote.sign("GET", uri, "hs.test", {})
    resp = await public_client.get(uri, headers={"Authorization": auth})
    assert resp.status_code == 401
    assert fake_pdu.requests == []


@pytest.mark.parametrize("bad", ["other_server", "not_self_signed"])
async def test_key_response_that_is_not_trustworthy_is_not_used(public_client, remote,
                                                                 fake_transaction, bad):
    if bad == "other_server":     # a valid, self-signed response, but for another server
        remote.key_body = key_response("evil.test", remote.key)
    else:                         # names the remote, signed by a key it does not list
        body = key_response(REMOTE, remote.key)
        other = key_response(REMOTE, SigningKey.generate("other"))
        body["signatures"] = other["signatures"]
        remote.key_body = body
    resp = await put_signed(public_client, remote, FED + "/v1/send/txn-4", txn_body())
    assert resp.status_code == 401
    assert fake_transaction.inbound == []


async def test_forwarded_request_reaches_pdu_with_verified_origin(public_client, remote,
                                                                   fake_pdu, fake_transaction):
    uri = FED + "/v1/backfill/%21r%3Ahs.test?v=%24e1&v=%24e2&limit=5"
    auth = remote.sign("GET", uri, "hs.test")
    # a client-supplied origin header must not reach pdu
    resp = await public_client.get(uri, headers={"Authorization": auth,
                                                 pdu_c.ORIGIN_HEADER: "evil.test"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"from": "fake-pdu"}
    [req] = fake_pdu.requests
    assert req["method"] == "GET"
    assert req["origin_headers"] == [REMOTE]
    assert req["raw_path"] == pdu_c.FEDERATION + "/v1/backfill/%21r%3Ahs.test"
    assert req["query"] == "v=%24e1&v=%24e2&limit=5"
    # the origin proved it is alive: the transaction service hears of it
    await wait_until(lambda: fake_transaction.up == [REMOTE], what="destination_up")


async def test_forwarded_put_carries_body_and_pdu_errors_pass_through(public_client, remote, fake_pdu):
    fake_pdu.answer = (403, {"errcode": "M_FORBIDDEN", "error": "no"})
    event = {"type": "m.room.member", "content": {"membership": "join"}}
    resp = await put_signed(public_client, remote, FED + "/v2/send_join/!r:hs.test/$j", event)
    assert resp.status_code == 403
    assert resp.json() == {"errcode": "M_FORBIDDEN", "error": "no"}
    [req] = fake_pdu.requests
    assert req["method"] == "PUT" and req["body"] == event and req["origin"] == REMOTE
    assert req["raw_path"] == pdu_c.FEDERATION + "/v2/send_join/!r:hs.test/$j"


async def test_unknown_origin_server_is_401(public_client, fake_transaction):
    """An origin whose keys cannot be fetched cannot authenticate."""
    key = SigningKey.generate("k")
    uri = FED + "/v1/send/txn-5"
    body = txn_body()
    auth = sign_request("PUT", uri, "down.test", "hs.test", key, body)
    resp = await public_client.put(uri, content=orjson.dumps(body), headers={"Authorization": auth})
    assert resp.status_code == 401
    assert fake_transaction.inbound == []
