"""The domain API's aliases and visibility (services/messaging/routes/directory.py):
what each route asks of the transaction service (aliases, visibility) and of the pdu
service (that the room exists; the room and its m.room.canonical_alias at creation; the
join), how a remote alias is resolved through `/query/directory`, and the error answers:
400 M_INVALID_PARAM for what is no alias of ours, 404 M_NOT_FOUND, 409 taken, 502 when the
alias's server gives no usable answer."""
from __future__ import annotations

from urllib.parse import quote

import pytest

from shared.contracts import directory as d
from shared.contracts import messaging as c
from tests.contract.messaging.directory_fakes import NO_ANSWER, FakeDirectory, answer

ALICE = "@alice:hs.test"
ROOM, OTHER = "!room:hs.test", "!other:hs.test"
LOBBY = "#lobby:hs.test"
REMOTE_ALIAS = "#there:remote.test"
QUERY_DIRECTORY = "/_matrix/federation/v1/query/directory"


@pytest.fixture
def directory(fake_pdu, fake_tx):
    fake_pdu.servers[ROOM] = ["hs.test", "b.test"]
    fake_pdu.servers[OTHER] = ["hs.test"]
    fake = FakeDirectory(fake_pdu, fake_tx)
    yield fake
    assert not fake.errors, f"messaging called below off the contract: {fake.errors}"


def alias_path(alias: str) -> str:
    return c.DIRECTORY.format(room_alias=quote(alias, safe=""))


def pdu_names(fake_pdu) -> list[str]:
    return [name for name, _, _ in fake_pdu.calls]


async def test_put_resolve_delete_our_alias(public_client, directory, fake_pdu):
    resp = await public_client.put(alias_path(LOBBY), json={"room_id": ROOM})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {}
    assert fake_pdu.calls == [("room_servers", ROOM, None)]           # the room must exist
    assert directory.calls == [("put_alias", LOBBY, {"room_id": ROOM, "servers": ["hs.test"]})]
    resp = await public_client.get(alias_path(LOBBY))
    assert resp.status_code == 200, resp.text
    assert d.Alias.model_validate(resp.json()) == d.Alias(room_id=ROOM, servers=["hs.test"])
    # the same alias for the same room again is a no-op
    assert (await public_client.put(alias_path(LOBBY), json={"room_id": ROOM})).status_code == 200
    resp = await public_client.delete(alias_path(LOBBY))
    assert resp.status_code == 200 and resp.json() == {}
    assert directory.calls[-1] == ("delete_alias", LOBBY, None)
    resp = await public_client.get(alias_path(LOBBY))
    assert resp.status_code == 404 and resp.json()["errcode"] == "M_NOT_FOUND"
    resp = await public_client.delete(alias_path(LOBBY))
    assert resp.status_code == 404 and resp.json()["errcode"] == "M_NOT_FOUND"
    assert directory.federation_calls() == []


async def test_servers_given_by_the_caller_are_not_stored(public_client, directory):
    resp = await public_client.put(alias_path(LOBBY), json={"room_id": ROOM, "servers": ["evil.test"]})
    assert resp.status_code == 200, resp.text
    assert directory.aliases[LOBBY] == {"room_id": ROOM, "servers": ["hs.test"]}


async def test_alias_naming_another_room_is_409(public_client, directory):
    assert (await public_client.put(alias_path(LOBBY), json={"room_id": ROOM})).status_code == 200
    resp = await public_client.put(alias_path(LOBBY), json={"room_id": OTHER})
    assert resp.status_code == 409, resp.text
    assert directory.aliases[LOBBY]["room_id"] == ROOM


async def test_alias_for_an_unknown_room_is_404_and_nothing_stored(public_client, directory, fake_pdu):
    resp = await public_client.put(alias_path(LOBBY), json={"room_id": "!ghost:hs.test"})
    assert resp.status_code == 404 and resp.json()["errcode"] == "M_NOT_FOUND"
    assert fake_pdu.calls == [("room_servers", "!ghost:hs.test", None)]
    assert directory.calls == []


@pytest.mark.parametrize("alias", ["lobby:hs.test", "#lobby", "#lobby:bad host", "!room:hs.test",
                                   "#" + "x" * 250 + ":hs.test"])
@pytest.mark.parametrize("method", ["PUT", "GET", "DELETE"])
async def test_what_is_no_alias_is_400_and_nothing_asked(public_client, directory, fake_pdu, alias, method):
    resp = await public_client.request(method, alias_path(alias),
                                       json={"room_id": ROOM} if method == "PUT" else None)
    assert resp.status_code == 400 and resp.json()["errcode"] == "M_INVALID_PARAM", resp.text
    assert directory.calls == [] and fake_pdu.calls == [] and directory.federation_calls() == []


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
async def test_another_servers_alias_cannot_be_made_or_deleted(public_client, directory, method):
    resp = await public_client.request(method, alias_path(REMOTE_ALIAS),
                                       json={"room_id": ROOM} if method == "PUT" else None)
    assert resp.status_code == 400 and resp.json()["errcode"] == "M_INVALID_PARAM", resp.text
    assert directory.aliases == {} and directory.federation_calls() == []


@pytest.mark.parametrize("body", [{}, {"room_id": 5}, {"room_id": ""}, {"room_id": "!" + "r" * 255}])
async def test_put_alias_bad_body_is_400(public_client, directory, fake_pdu, body):
    resp = await public_client.put(alias_path(LOBBY), json=body)
    assert resp.status_code == 400 and resp.json()["errcode"] == "M_BAD_JSON", resp.text
    assert directory.calls == [] and fake_pdu.calls == []


async def test_remote_alias_is_asked_of_its_server(public_client, directory, fake_tx):
    fake_tx.federation["remote.test"] = answer(200, {
        "room_id": "!r:remote.test", "servers": ["remote.test", 5, "b.test", "", "bad host", None]})
    resp = await public_client.get(alias_path(REMOTE_ALIAS))
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"room_id": "!r:remote.test", "servers": ["remote.test", "b.test"]}
    [call] = directory.federation_calls()
    assert call == {"destination": "remote.test", "method": "GET", "path": QUERY_DIRECTORY,
                    "query": [["room_alias", REMOTE_ALIAS]], "body": None, "timeout_s": None}
    assert directory.calls == []                      # not asked of our own aliases


@pytest.mark.parametrize("servers", [None, [], "remote.test", ["not a name"]])
async def test_remote_alias_without_servers_is_joined_through_its_server(public_client, directory, fake_tx,
                                                                         servers):
    body = {"room_id": "!r:remote.test"} | ({} if servers is None else {"servers": servers})
    fake_tx.federation["remote.test"] = answer(200, body)
    resp = await public_client.get(alias_path(REMOTE_ALIAS))
    assert resp.json() == {"room_id": "!r:remote.test", "servers": ["remote.test"]}


@pytest.mark.parametrize("remote,status", [
    (answer(404, {"errcode": "M_NOT_FOUND", "error": "no"}), 404),
    (NO_ANSWER, 502),
    (answer(500, {"errcode": "M_UNKNOWN", "error": "boom"}), 502),
    (answer(200, {"servers": ["remote.test"]}), 502),                  # no room_id
    (answer(200, {"room_id": "not-a-room"}), 502),
    (answer(200, ["!r:remote.test"]), 502),
])
async def test_remote_alias_failures(public_client, directory, fake_tx, remote, status):
    fake_tx.federation["remote.test"] = remote
    resp = await public_client.get(alias_path(REMOTE_ALIAS))
    assert resp.status_code == status, resp.text
    assert resp.json()["errcode"] == ("M_NOT_FOUND" if status == 404 else "M_UNKNOWN")


# --------------------------------------------------------------------------- create and join

async def test_create_room_with_alias_and_public_visibility(public_client, directory, fake_pdu):
    resp = await public_client.post(c.ROOMS, json={"creator": ALICE, "room_alias_name": "town",
                                                   "visibility": "public", "name": "Town"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"room_id": "!created:hs.test"}
    [create, canonical] = fake_pdu.calls
    assert create == ("create_room", None, {"creator": ALICE, "room_version": "12", "preset": "private_chat",
                                            "name": "Town", "room_type": None})
    assert canonical == ("send", "!created:hs.test", {
        "sender": ALICE, "type": "m.room.canonical_alias", "content": {"alias": "#town:hs.test"},
        "state_key": ""})
    assert directory.calls == [
        ("get_alias", "#town:hs.test", None),                      # free before the room is made
        ("put_alias", "#town:hs.test", {"room_id": "!created:hs.test", "servers": ["hs.test"]}),
        ("put_visibility", "!created:hs.test", {"visibility": "public"})]


async def test_create_room_private_by_default_makes_no_alias(public_client, directory, fake_pdu):
    resp = await public_client.post(c.ROOMS, json={"creator": ALICE})
    assert resp.status_code == 200, resp.text
    assert pdu_names(fake_pdu) == ["create_room"] and directory.calls == []


async def test_create_room_with_a_taken_alias_makes_no_room(public_client, directory, fake_pdu):
    directory.aliases["#town:hs.test"] = {"room_id": OTHER, "servers": ["hs.test"]}
    resp = await public_client.post(c.ROOMS, json={"creator": ALICE, "room_alias_name": "town"})
    assert resp.status_code == 400 and resp.json()["errcode"] == "M_ROOM_IN_USE"
    assert fake_pdu.calls == [] and directory.names() == ["get_alias"]


@pytest.mark.parametrize("body", [{"room_alias_name": "a:b"}, {"room_alias_name": "#a"},
                                  {"room_alias_name": "a b"}, {"room_alias_name": ""},
                                  {"visibility": "hidden"}])
async def test_create_room_bad_alias_or_visibility_is_400(public_client, directory, fake_pdu, body):
    resp = await public_client.post(c.ROOMS, json={"creator": ALICE, **body})
    assert resp.status_code == 400 and resp.json()["errcode"] == "M_BAD_JSON", resp.text
    assert fake_pdu.calls == [] and directory.calls == []


async def test_join_by_our_alias(public_client, directory, fake_pdu):
    directory.aliases[LOBBY] = {"room_id": ROOM, "servers": ["b.test"]}
    resp = await public_client.post(c.JOIN.format(room_id=quote(LOBBY, safe="")),
                                    json={"user_id": ALICE, "servers": ["c.test", "b.test"]})
    assert resp.status_code == 200, resp.text
    [join] = fake_pdu.calls
    # the caller's servers first, then the alias's (ours first), each once
    assert join == ("join", ROOM, {"user_id": ALICE, "servers": ["c.test", "b.test", "hs.test"]})


async def test_join_by_remote_alias(public_client, directory, fake_pdu, fake_tx):
    fake_tx.federation["remote.test"] = answer(200, {"room_id": "!r:remote.test", "servers": ["remote.test"]})
    resp = await public_client.post(c.JOIN.format(room_id=quote(REMOTE_ALIAS, safe="")),
                                    json={"user_id": ALICE})
    assert resp.status_code == 200, resp.text
    assert fake_pdu.calls == [("join", "!r:remote.test", {"user_id": ALICE, "servers": ["remote.test"]})]
    assert [x["path"] for x in directory.federation_calls()] == [QUERY_DIRECTORY]


@pytest.mark.parametrize("target,remote,status", [
    ("#missing:hs.test", None, 404),
    ("#missing:remote.test", answer(404, {"errcode": "M_NOT_FOUND", "error": "no"}), 404),
    ("#down:remote.test", NO_ANSWER, 502),
    ("#x:bad host", None, 400),
])
async def test_join_by_alias_that_does_not_resolve_joins_nothing(public_client, directory, fake_pdu,
                                                                 fake_tx, target, remote, status):
    if remote is not None:
        fake_tx.federation["remote.test"] = remote
    resp = await public_client.post(c.JOIN.format(room_id=quote(target, safe="")), json={"user_id": ALICE})
    assert resp.status_code == status, resp.text
    assert fake_pdu.calls == []


# --------------------------------------------------------------------------- visibility

async def test_publish_and_unpublish(public_client, directory, fake_pdu):
    path = c.VISIBILITY.format(room_id=quote(ROOM, safe=""))
    assert (await public_client.get(path)).json() == {"visibility": "private"}
    resp = await public_client.put(path, json={"visibility": "public"})
    assert resp.status_code == 200 and resp.json() == {}
    assert directory.calls[-1] == ("put_visibility", ROOM, {"visibility": "public"})
    resp = await public_client.get(path)
    assert d.Visibility.model_validate(resp.json()).visibility == "public"
    await public_client.put(path, json={"visibility": "private"})
    assert (await public_client.get(path)).json() == {"visibility": "private"}
    assert ("room_servers", ROOM, None) in fake_pdu.calls
    assert directory.published == set()


@pytest.mark.parametrize("method", ["PUT", "GET"])
async def test_visibility_of_an_unknown_room_is_404(public_client, directory, method):
    resp = await public_client.request(method, c.VISIBILITY.format(room_id=quote("!ghost:hs.test", safe="")),
                                       json={"visibility": "public"} if method == "PUT" else None)
    assert resp.status_code == 404 and resp.json()["errcode"] == "M_NOT_FOUND", resp.text
    assert directory.calls == []


@pytest.mark.parametrize("body", [{}, {"visibility": "hidden"}, {"visibility": True}])
async def test_visibility_bad_body_is_400(public_client, directory, body):
    resp = await public_client.put(c.VISIBILITY.format(room_id=quote(ROOM, safe="")), json=body)
    assert resp.status_code == 400 and resp.json()["errcode"] == "M_BAD_JSON"
    assert directory.calls == []
