"""`GET /v1/rooms/{room_id}/hierarchy` (services/messaging/routes/spaces.py): a room the pdu
service holds is answered from there (suggested_only passed down, nobody else asked);
any other is asked of the servers in `via`, then the room ID's server (each once, in that
order; not ourselves, nor a name that is no server name) through the federation
`/hierarchy`: the first 200 with a `room` object is passed on, reduced to {room, children,
inaccessible_children}; 404 from every one (or no one to ask) is 404 M_NOT_FOUND, any other
failure 502."""
from __future__ import annotations

from urllib.parse import quote

import pytest

from shared.contracts import messaging as c
from tests.contract.messaging.directory_fakes import NO_ANSWER, FakeDirectory, answer

SPACE = "!space:hs.test"
REMOTE_SPACE = "!space:remote.test"
FED_HIERARCHY = "/_matrix/federation/v1/hierarchy/" + quote(REMOTE_SPACE, safe="")
ROOM = {"room_id": REMOTE_SPACE, "room_type": "m.space", "num_joined_members": 3,
        "world_readable": True, "guest_can_join": False, "children_state": []}
NOT_FOUND = answer(404, {"errcode": "M_NOT_FOUND", "error": "Unknown room"})


@pytest.fixture
def directory(fake_pdu, fake_tx):
    fake = FakeDirectory(fake_pdu, fake_tx)
    yield fake
    assert not fake.errors, f"messaging called below off the contract: {fake.errors}"


def path(room_id: str) -> str:
    return c.HIERARCHY.format(room_id=quote(room_id, safe=""))


def asked(directory) -> list[str]:
    return [x["destination"] for x in directory.federation_calls()]


@pytest.mark.parametrize("params,flag", [({}, "false"), ({"suggested_only": "true"}, "true"),
                                         ({"suggested_only": "false", "via": "remote.test"}, "false")])
async def test_our_space_is_answered_by_the_pdu_service(public_client, directory, params, flag):
    ours = {"room": {"room_id": SPACE, "room_type": "m.space", "children_state": []},
            "children": [{"room_id": "!child:hs.test"}], "inaccessible_children": []}
    directory.hierarchies[SPACE] = (200, ours)
    resp = await public_client.get(path(SPACE), params=params)
    assert resp.status_code == 200, resp.text
    assert resp.json() == ours
    assert directory.calls == [("hierarchy", SPACE, [("suggested_only", flag)])]
    assert directory.federation_calls() == []


async def test_remote_space_is_asked_of_the_via_servers(public_client, directory, fake_tx):
    child = {"room_id": "!c:remote.test", "num_joined_members": 1}
    fake_tx.federation["remote.test"] = answer(200, {
        "room": ROOM, "children": [child, "junk"], "inaccessible_children": ["!p:remote.test", 5],
        "extra": "dropped"})
    resp = await public_client.get(path(REMOTE_SPACE), params={"via": "remote.test", "suggested_only": "true"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"room": ROOM, "children": [child], "inaccessible_children": ["!p:remote.test"]}
    assert directory.calls == [("hierarchy", REMOTE_SPACE, [("suggested_only", "true")])]
    [call] = directory.federation_calls()
    assert call == {"destination": "remote.test", "method": "GET", "path": FED_HIERARCHY,
                    "query": [["suggested_only", "true"]], "body": None, "timeout_s": None}


async def test_servers_are_tried_in_turn_until_one_answers(public_client, directory, fake_tx):
    fake_tx.federation["a.test"] = NO_ANSWER
    fake_tx.federation["b.test"] = NOT_FOUND
    fake_tx.federation["remote.test"] = answer(200, {"room": ROOM})
    via = [("via", v) for v in ("a.test", "hs.test", "bad host", "a.test", "b.test", "c.test")]
    fake_tx.federation["c.test"] = answer(200, {"room": "not an object"})
    resp = await public_client.get(path(REMOTE_SPACE), params=via)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"room": ROOM, "children": [], "inaccessible_children": []}
    # each once, in order, not ourselves nor "bad host"; the room ID's server last
    assert asked(directory) == ["a.test", "b.test", "c.test", "remote.test"]


async def test_without_via_the_room_ids_server_is_asked(public_client, directory, fake_tx):
    fake_tx.federation["remote.test"] = answer(200, {"room": ROOM})
    resp = await public_client.get(path(REMOTE_SPACE))
    assert resp.status_code == 200, resp.text
    assert asked(directory) == ["remote.test"]


@pytest.mark.parametrize("answers,status", [
    ({"a.test": NOT_FOUND, "remote.test": NOT_FOUND}, 404),
    ({"a.test": NOT_FOUND, "remote.test": NO_ANSWER}, 502),
    ({"a.test": answer(403, {"errcode": "M_FORBIDDEN", "error": "acl"}), "remote.test": NOT_FOUND}, 502),
    ({"a.test": answer(200, {"children": []}), "remote.test": NOT_FOUND}, 502),      # no room
    ({"a.test": answer(200, ["x"]), "remote.test": NOT_FOUND}, 502),
])
async def test_no_server_answering(public_client, directory, fake_tx, answers, status):
    fake_tx.federation.update(answers)
    resp = await public_client.get(path(REMOTE_SPACE), params={"via": "a.test"})
    assert resp.status_code == status, resp.text
    assert resp.json()["errcode"] == ("M_NOT_FOUND" if status == 404 else "M_UNKNOWN")
    assert asked(directory) == ["a.test", "remote.test"]


@pytest.mark.parametrize("room_id,via", [
    ("!nowhere", []),                          # no server part, no via: no one to ask
    ("!ours:hs.test", ["hs.test"]),            # only ourselves, who do not hold it
    ("!x:bad host", ["also bad"]),             # names that are none are not asked
])
async def test_no_one_to_ask_is_404(public_client, directory, room_id, via):
    resp = await public_client.get(path(room_id), params=[("via", v) for v in via])
    assert resp.status_code == 404 and resp.json()["errcode"] == "M_NOT_FOUND", resp.text
    assert directory.names() == ["hierarchy"] and directory.federation_calls() == []


@pytest.mark.parametrize("field", ["children", "inaccessible_children"])
@pytest.mark.parametrize("value", [5, True, "abc", {"a": {"room_id": "!x"}}])
async def test_remote_lists_that_are_no_lists_are_empty(public_client, directory, fake_tx, field, value):
    fake_tx.federation["remote.test"] = answer(200, {"room": ROOM, field: value})
    resp = await public_client.get(path(REMOTE_SPACE))
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"room": ROOM, "children": [], "inaccessible_children": []}


async def test_pdu_failure_other_than_404_is_502_and_no_one_asked(public_client, directory):
    directory.hierarchies[REMOTE_SPACE] = (500, {"errcode": "M_UNKNOWN", "error": "db"})
    resp = await public_client.get(path(REMOTE_SPACE), params={"via": "remote.test"})
    assert resp.status_code == 502 and resp.json()["errcode"] == "M_UNKNOWN"
    assert directory.federation_calls() == []


@pytest.mark.parametrize("value", ["maybe", "2"])
async def test_bad_suggested_only_is_400_and_nothing_asked(public_client, directory, value):
    resp = await public_client.get(path(SPACE), params={"suggested_only": value})
    assert resp.status_code == 400 and resp.json()["errcode"] == "M_BAD_JSON", resp.text
    assert directory.calls == []
