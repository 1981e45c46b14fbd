"""The domain API's profiles and query handlers (services/messaging/routes/profiles.py):
`PUT /v1/profile/{user_id}` stores what the homeserver tells the stack in the transaction
service; `GET` answers ours from there and asks a remote user's server `/query/profile`
(only its string displayname/avatar_url kept; 404 passed on, no answer 502);
`POST /v1/query_handlers` registers the URL answering another query type. (The answer
through a registered handler is the transport's, tests/hostile/test_queries.py.)"""
from __future__ import annotations

from urllib.parse import quote

import pytest

from shared.contracts import directory as d
from shared.contracts import messaging as c
from tests.contract.messaging.directory_fakes import NO_ANSWER, FakeDirectory, answer

ALICE, BOB = "@alice:hs.test", "@bob:remote.test"
QUERY_PROFILE = "/_matrix/federation/v1/query/profile"


@pytest.fixture
def directory(fake_pdu, fake_tx):
    fake = FakeDirectory(fake_pdu, fake_tx)
    yield fake
    assert not fake.errors, f"messaging called below off the contract: {fake.errors}"


def profile(user_id: str) -> str:
    return c.PROFILE.format(user_id=quote(user_id, safe=""))


async def test_put_then_get_our_users_profile(public_client, directory):
    resp = await public_client.put(profile(ALICE), json={"displayname": "Alice", "avatar_url": "mxc://hs.test/a"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {}
    assert directory.calls == [("put_profile", ALICE, {"displayname": "Alice", "avatar_url": "mxc://hs.test/a"})]
    resp = await public_client.get(profile(ALICE))
    assert resp.status_code == 200, resp.text
    assert d.Profile.model_validate(resp.json()) == d.Profile(displayname="Alice", avatar_url="mxc://hs.test/a")
    assert resp.json() == {"displayname": "Alice", "avatar_url": "mxc://hs.test/a"}
    assert directory.calls[-1] == ("get_profile", ALICE, None)
    # a second PUT replaces the profile: the field left out is cleared (null is sent)
    await public_client.put(profile(ALICE), json={"displayname": "Al"})
    assert directory.calls[-1] == ("put_profile", ALICE, {"displayname": "Al", "avatar_url": None})
    assert (await public_client.get(profile(ALICE))).json() == {"displayname": "Al"}
    assert directory.federation_calls() == []


async def test_put_profile_of_another_servers_user_is_refused(public_client, directory):
    resp = await public_client.put(profile(BOB), json={"displayname": "Not yours"})
    assert resp.status_code == 400 and resp.json()["errcode"] == "M_INVALID_PARAM"
    assert directory.profiles == {}


@pytest.mark.parametrize("body", [{"displayname": 5}, {"avatar_url": ["x"]}, {"displayname": "x" * 1001}, []])
async def test_put_profile_bad_body_is_400_and_nothing_asked(public_client, directory, body):
    resp = await public_client.put(profile(ALICE), json=body)
    assert resp.status_code == 400 and resp.json()["errcode"] == "M_BAD_JSON", resp.text
    assert directory.calls == []


async def test_unknown_local_profile_is_404(public_client, directory):
    resp = await public_client.get(profile("@nobody:hs.test"))
    assert resp.status_code == 404 and resp.json()["errcode"] == "M_NOT_FOUND"
    assert directory.calls == [("get_profile", "@nobody:hs.test", None)]
    assert directory.federation_calls() == []


@pytest.mark.parametrize("user_id", ["alice", "@alice", "@alice:bad host", "#alice:hs.test"])
async def test_get_profile_of_no_user_id_is_400(public_client, directory, user_id):
    resp = await public_client.get(profile(user_id))
    assert resp.status_code == 400 and resp.json()["errcode"] == "M_INVALID_PARAM", resp.text
    assert directory.calls == [] and directory.federation_calls() == []


async def test_remote_profile_is_asked_of_the_users_server(public_client, directory, fake_tx):
    fake_tx.federation["remote.test"] = answer(200, {
        "displayname": "Bob", "avatar_url": 7, "extra": "dropped"})
    resp = await public_client.get(profile(BOB))
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"displayname": "Bob"}        # the non-string avatar_url dropped
    [call] = directory.federation_calls()
    assert call == {"destination": "remote.test", "method": "GET", "path": QUERY_PROFILE,
                    "query": [["user_id", BOB]], "body": None, "timeout_s": None}
    assert directory.calls == []                         # a remote user's profile is not stored


@pytest.mark.parametrize("remote,status,errcode", [
    (answer(404, {"errcode": "M_NOT_FOUND", "error": "no"}), 404, "M_NOT_FOUND"),
    (NO_ANSWER, 502, "M_UNKNOWN"),
    (answer(500, {"errcode": "M_UNKNOWN", "error": "boom"}), 502, "M_UNKNOWN"),
    (answer(403, {"errcode": "M_FORBIDDEN", "error": "acl"}), 502, "M_UNKNOWN"),
])
async def test_remote_profile_failures(public_client, directory, fake_tx, remote, status, errcode):
    fake_tx.federation["remote.test"] = remote
    resp = await public_client.get(profile(BOB))
    assert resp.status_code == status, resp.text
    assert resp.json()["errcode"] == errcode
    assert [x["destination"] for x in directory.federation_calls()] == ["remote.test"]


async def test_query_handler_is_registered_below(public_client, directory):
    body = {"query_type": "com.example.thing", "url": "http://homeserver.local/q"}
    resp = await public_client.post(c.QUERY_HANDLERS, json=body)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {}
    assert directory.calls == [("put_query_handler", None, body)]
    assert directory.handlers == {"com.example.thing": "http://homeserver.local/q"}
    # registering again replaces the URL
    await public_client.post(c.QUERY_HANDLERS, json=dict(body, url="https://other.local/q"))
    assert directory.handlers == {"com.example.thing": "https://other.local/q"}


@pytest.mark.parametrize("query_type", ["profile", "directory"])
async def test_query_handler_for_a_builtin_type_is_refused(public_client, directory, query_type):
    resp = await public_client.post(c.QUERY_HANDLERS, json={"query_type": query_type, "url": "http://h/q"})
    assert resp.status_code == 400 and resp.json()["errcode"] == "M_INVALID_PARAM"
    assert directory.handlers == {}


@pytest.mark.parametrize("body", [
    {"query_type": "thing"},                                   # url missing
    {"query_type": "thing", "url": "ftp://h/q"},              # not http(s)
    {"query_type": "a b", "url": "http://h/q"},               # not a query type
    {"query_type": "", "url": "http://h/q"},
    {"query_type": "thing", "url": "http://h/" + "q" * 2000},
])
async def test_query_handler_bad_body_is_400_and_nothing_asked(public_client, directory, body):
    resp = await public_client.post(c.QUERY_HANDLERS, json=body)
    assert resp.status_code == 400 and resp.json()["errcode"] == "M_BAD_JSON", resp.text
    assert directory.calls == []
