"""`GET /v1/public_rooms` (services/messaging/routes/directory.py): ours (no `server`, or
our own name) from the pdu service's public room list with limit / since / the search
term as its filter; another server's through its federation `publicRooms` (GET with
limit/since, POST when there is a search term), its answer reduced to the
PublicRoomsResponse shape; 400 M_INVALID_PARAM for a `server` that is no server name,
502 when that server gives no usable answer."""
from __future__ import annotations

import pytest

from shared.contracts import messaging as c
from shared.contracts import pdu as pdu_c
from tests.contract.messaging.directory_fakes import NO_ANSWER, FakeDirectory, answer

PUBLIC_ROOMS = "/_matrix/federation/v1/publicRooms"
ENTRY = {"room_id": "!a:hs.test", "num_joined_members": 2, "world_readable": False,
         "guest_can_join": False, "join_rule": "public", "name": "Apples"}


@pytest.fixture
def directory(fake_pdu, fake_tx):
    fake = FakeDirectory(fake_pdu, fake_tx)
    yield fake
    assert not fake.errors, f"messaging called below off the contract: {fake.errors}"


async def test_our_list_comes_from_the_pdu_service(public_client, directory):
    directory.public_rooms_answer = {"chunk": [ENTRY], "next_batch": "p1", "total_room_count_estimate": 3}
    resp = await public_client.get(c.PUBLIC_ROOMS)
    assert resp.status_code == 200, resp.text
    assert pdu_c.PublicRoomsResponse.model_validate(resp.json())
    assert resp.json() == directory.public_rooms_answer
    assert directory.calls == [("public_rooms", None, {"limit": None, "since": None})]
    assert directory.federation_calls() == []


@pytest.mark.parametrize("params,sent", [
    ({"limit": 2, "since": "p1"}, {"limit": 2, "since": "p1"}),
    ({"search": "app"}, {"limit": None, "since": None, "filter": {"generic_search_term": "app"}}),
    ({"search": ""}, {"limit": None, "since": None}),                 # no term: no filter
    ({"server": "hs.test", "limit": 1, "search": "x"},                 # our own name: ours
     {"limit": 1, "since": None, "filter": {"generic_search_term": "x"}}),
    ({"server": ""}, {"limit": None, "since": None}),
])
async def test_paging_and_filter_of_our_list(public_client, directory, params, sent):
    resp = await public_client.get(c.PUBLIC_ROOMS, params=params)
    assert resp.status_code == 200, resp.text
    assert directory.calls == [("public_rooms", None, sent)]
    assert directory.federation_calls() == []


async def test_errors_of_our_list_come_back_unchanged(public_client, directory):
    directory.public_rooms_fail = (400, "M_INVALID_PARAM", "since is not a next_batch of ours")
    resp = await public_client.get(c.PUBLIC_ROOMS, params={"since": "bogus"})
    assert resp.status_code == 400
    assert resp.json() == {"errcode": "M_INVALID_PARAM", "error": "since is not a next_batch of ours"}


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": -1}, {"limit": "ten"}])
async def test_bad_limit_is_400_and_nothing_asked(public_client, directory, params):
    resp = await public_client.get(c.PUBLIC_ROOMS, params=dict(params, server="remote.test"))
    assert resp.status_code == 400 and resp.json()["errcode"] == "M_BAD_JSON", resp.text
    assert directory.calls == [] and directory.federation_calls() == []


@pytest.mark.parametrize("server", ["bad host", "remote.test:99999x", "a/b", "[::1"])
async def test_server_that_is_no_server_name_is_400_and_nothing_asked(public_client, directory, server):
    resp = await public_client.get(c.PUBLIC_ROOMS, params={"server": server})
    assert resp.status_code == 400 and resp.json()["errcode"] == "M_INVALID_PARAM", resp.text
    assert directory.calls == [] and directory.federation_calls() == []


async def test_remote_list_is_asked_of_that_server(public_client, directory, fake_tx):
    remote_entry = dict(ENTRY, room_id="!r:remote.test")
    fake_tx.federation["remote.test"] = answer(200, {
        "chunk": [remote_entry, "junk", 5], "next_batch": "n2", "prev_batch": 7,
        "total_room_count_estimate": 9, "extra": "dropped"})
    resp = await public_client.get(c.PUBLIC_ROOMS, params={"server": "remote.test", "limit": 5, "since": "n1"})
    assert resp.status_code == 200, resp.text
    assert pdu_c.PublicRoomsResponse.model_validate(resp.json())
    assert resp.json() == {"chunk": [remote_entry], "next_batch": "n2", "total_room_count_estimate": 9}
    [call] = directory.federation_calls()
    assert call == {"destination": "remote.test", "method": "GET", "path": PUBLIC_ROOMS,
                    "query": [["limit", "5"], ["since", "n1"]], "body": None, "timeout_s": None}
    assert directory.calls == []


async def test_remote_search_is_a_post_with_the_filter(public_client, directory, fake_tx):
    fake_tx.federation["remote.test"] = answer(200, {"chunk": [], "total_room_count_estimate": 0})
    resp = await public_client.get(c.PUBLIC_ROOMS, params={"server": "remote.test", "search": "nan"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"chunk": [], "total_room_count_estimate": 0}
    [call] = directory.federation_calls()
    assert (call["method"], call["path"], call["query"]) == ("POST", PUBLIC_ROOMS, [])
    assert call["body"] == {"filter": {"generic_search_term": "nan"}}      # no null limit/since


@pytest.mark.parametrize("estimate", [None, "9", True, -1])
async def test_remote_estimate_that_is_no_count_is_the_rooms_listed(public_client, directory, fake_tx, estimate):
    body = {"chunk": [ENTRY, "junk"]}
    if estimate is not None:
        body["total_room_count_estimate"] = estimate
    fake_tx.federation["remote.test"] = answer(200, body)
    resp = await public_client.get(c.PUBLIC_ROOMS, params={"server": "remote.test"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"chunk": [ENTRY], "total_room_count_estimate": 1}
    assert type(resp.json()["total_room_count_estimate"]) is int        # true == 1 in Python


@pytest.mark.parametrize("remote", [
    NO_ANSWER,
    answer(500, {"errcode": "M_UNKNOWN", "error": "boom"}),
    answer(404, {"errcode": "M_UNRECOGNIZED", "error": "no"}),
    answer(200, {"rooms": []}),                 # no chunk
    answer(200, {"chunk": {"a": 1}}),
    answer(200, [ENTRY]),
])
async def test_remote_list_failures_are_502(public_client, directory, fake_tx, remote):
    fake_tx.federation["remote.test"] = remote
    resp = await public_client.get(c.PUBLIC_ROOMS, params={"server": "remote.test"})
    assert resp.status_code == 502 and resp.json()["errcode"] == "M_UNKNOWN", resp.text
    assert [x["destination"] for x in directory.federation_calls()] == ["remote.test"]
