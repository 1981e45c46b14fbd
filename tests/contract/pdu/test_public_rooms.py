"""The public room list (issue #14): the internal `POST /public_rooms` the domain API lists
ours through, and the federation `GET`/`POST /publicRooms` transport forwards with the
verified origin. The pdu service alone; the real transaction service behind it holds which
rooms are published (`recorder.put_visibility`), as the domain API's PUT visibility does.

Contract (shared/contracts/pdu.py PublicRoomsRequest/Response, services/pdu/directory.py):
only published rooms we hold, with the spec's chunk fields, most joined members first,
`since`/`next_batch` paging, a generic search term, rooms whose ACL denies the asker left
out; a bad token or body 400, no origin 401."""
from __future__ import annotations

import pytest

from shared.contracts import pdu as c
from tests.contract.pdu.conftest import REMOTE
from tests.contract.pdu.test_with_fakes import ALICE, q, send

# Rooms here are made as the in-process service's own server (hs.test): not against
# --base-url, whose service has another name.
pytestmark = pytest.mark.usefixtures("inprocess")

FED_ROOMS = c.FEDERATION + "/v1/publicRooms"
HEADERS = {c.ORIGIN_HEADER: REMOTE}


async def new_room(client, *, preset="public_chat", name=None, room_type=None) -> str:
    body = {"creator": ALICE, "room_version": "12", "preset": preset}
    if name:
        body["name"] = name
    if room_type:
        body["room_type"] = room_type
    resp = await client.post(c.ROOMS, json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()["room_id"]


async def join_locals(client, room: str, n: int) -> None:
    for i in range(n):
        resp = await client.post(c.JOIN.format(room_id=q(room)), json={"user_id": f"@m{i}:hs.test"})
        assert resp.status_code == 200, resp.text


async def state_event(client, room: str, type_: str, content: dict) -> None:
    await send(client, room, {"sender": ALICE, "type": type_, "state_key": "", "content": content})


async def internal(client, body: dict | None = None):
    resp = await client.post(c.PUBLIC_ROOMS, json=body or {})
    assert resp.status_code == 200, resp.text
    return c.PublicRoomsResponse.model_validate(resp.json()).model_dump(exclude_none=True)


@pytest.fixture
async def three_rooms(service_client, recorder):
    """Published: "big" (3 members), "mid" (2), "small" (1, a space with every optional
    field); "hidden" is held but not published; a published room ID we hold nothing of."""
    big = await new_room(service_client, name="Big Room")
    await join_locals(service_client, big, 2)
    mid = await new_room(service_client, name="Middle")
    await join_locals(service_client, mid, 1)
    small = await new_room(service_client, name="Small", room_type="m.space")
    for type_, content in (("m.room.topic", {"topic": "A quiet TOPIC"}),
                           ("m.room.canonical_alias", {"alias": "#small:hs.test"}),
                           ("m.room.avatar", {"url": "mxc://hs.test/pic"}),
                           ("m.room.history_visibility", {"history_visibility": "world_readable"}),
                           ("m.room.guest_access", {"guest_access": "can_join"})):
        await state_event(service_client, small, type_, content)
    hidden = await new_room(service_client, name="Hidden")
    for room in (big, mid, small, "!notheld:elsewhere.test"):
        await recorder.put_visibility(room, "public")
    return {"big": big, "mid": mid, "small": small, "hidden": hidden}


async def test_internal_list_has_the_spec_fields_most_members_first(service_client, three_rooms):
    r = three_rooms
    out = await internal(service_client)
    assert [e["room_id"] for e in out["chunk"]] == [r["big"], r["mid"], r["small"]]
    assert out["total_room_count_estimate"] == 3 and "next_batch" not in out and "prev_batch" not in out
    big, _mid, small = out["chunk"]
    assert big == {"room_id": r["big"], "num_joined_members": 3, "world_readable": False,
                   "guest_can_join": False, "join_rule": "public", "name": "Big Room"}
    assert small == {"room_id": r["small"], "num_joined_members": 1, "world_readable": True,
                     "guest_can_join": True, "join_rule": "public", "name": "Small",
                     "topic": "A quiet TOPIC", "canonical_alias": "#small:hs.test",
                     "avatar_url": "mxc://hs.test/pic", "room_type": "m.space"}


async def test_internal_list_pages_with_since_and_next_batch(service_client, three_rooms):
    r = three_rooms
    first = await internal(service_client, {"limit": 2})
    assert [e["room_id"] for e in first["chunk"]] == [r["big"], r["mid"]]
    assert first["total_room_count_estimate"] == 3 and "prev_batch" not in first
    second = await internal(service_client, {"limit": 2, "since": first["next_batch"]})
    assert [e["room_id"] for e in second["chunk"]] == [r["small"]]
    assert "next_batch" not in second
    back = await internal(service_client, {"limit": 2, "since": second["prev_batch"]})
    assert back["chunk"] == first["chunk"]


async def test_internal_list_search_term_matches_name_topic_or_alias(service_client, three_rooms):
    r = three_rooms
    for term, expected in (("middle", [r["mid"]]), ("quiet topic", [r["small"]]),
                           ("#SMALL:", [r["small"]]), ("room", [r["big"]]), ("nothing", [])):
        out = await internal(service_client, {"filter": {"generic_search_term": term}})
        assert [e["room_id"] for e in out["chunk"]] == expected, term
        assert out["total_room_count_estimate"] == len(expected)


async def test_unpublishing_takes_a_room_off_the_list(service_client, recorder, three_rooms):
    await recorder.put_visibility(three_rooms["mid"], "private")
    out = await internal(service_client)
    assert three_rooms["mid"] not in [e["room_id"] for e in out["chunk"]]


@pytest.mark.parametrize("body", [{"since": "bogus"}, {"since": "o-1"}, {"limit": 0},
                                  {"limit": "ten"}, {"filter": "x"}])
async def test_internal_bad_bodies_are_400(service_client, body):
    resp = await service_client.post(c.PUBLIC_ROOMS, json=body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["errcode"] in ("M_BAD_JSON", "M_INVALID_PARAM")
    if "since" in body:
        assert resp.json()["errcode"] == "M_INVALID_PARAM"


async def test_federation_get_with_limit_and_since(service_client, three_rooms):
    r = three_rooms
    resp = await service_client.get(FED_ROOMS, params={"limit": 1}, headers=HEADERS)
    assert resp.status_code == 200, resp.text
    page = c.PublicRoomsResponse.model_validate(resp.json())
    assert [e["room_id"] for e in page.chunk] == [r["big"]] and page.total_room_count_estimate == 3
    resp = await service_client.get(FED_ROOMS, params={"limit": 5, "since": page.next_batch},
                                    headers=HEADERS)
    assert [e["room_id"] for e in resp.json()["chunk"]] == [r["mid"], r["small"]]
    assert resp.json()["prev_batch"] == "o0"


async def test_federation_post_filters_by_search_term(service_client, three_rooms):
    resp = await service_client.post(FED_ROOMS, json={"limit": 10, "filter": {"generic_search_term": "BIG"}},
                                     headers=HEADERS)
    assert resp.status_code == 200, resp.text
    assert [e["room_id"] for e in resp.json()["chunk"]] == [three_rooms["big"]]
    resp = await service_client.post(FED_ROOMS, json={}, headers=HEADERS)
    assert len(resp.json()["chunk"]) == 3


async def test_a_room_whose_acl_denies_the_asker_is_left_out(service_client, three_rooms):
    await state_event(service_client, three_rooms["mid"], "m.room.server_acl",
                      {"allow": ["*"], "deny": [REMOTE], "allow_ip_literals": True})
    for resp in (await service_client.get(FED_ROOMS, headers=HEADERS),
                 await service_client.post(FED_ROOMS, json={}, headers=HEADERS)):
        assert resp.status_code == 200, resp.text
        assert [e["room_id"] for e in resp.json()["chunk"]] == [three_rooms["big"], three_rooms["small"]]
        assert resp.json()["total_room_count_estimate"] == 2
    other = await service_client.get(FED_ROOMS, headers={c.ORIGIN_HEADER: "other.test"})
    assert len(other.json()["chunk"]) == 3
    assert len((await internal(service_client))["chunk"]) == 3       # our own domain API sees all


@pytest.mark.parametrize("body", [[], "x", {"filter": {"generic_search_term": 5}},
                                  {"since": 3}, {"since": "nonsense"}])
async def test_federation_post_bad_bodies_are_400(service_client, body):
    resp = await service_client.post(FED_ROOMS, json=body, headers=HEADERS)
    assert resp.status_code == 400, resp.text
    assert resp.json()["errcode"] in ("M_BAD_JSON", "M_INVALID_PARAM"), resp.text


@pytest.mark.parametrize("params", [{"since": "nonsense"}, {"limit": "many"}])
async def test_federation_get_bad_parameters_are_400(service_client, params):
    resp = await service_client.get(FED_ROOMS, params=params, headers=HEADERS)
    assert resp.status_code == 400, resp.text
    assert resp.json()["errcode"] in ("M_BAD_JSON", "M_INVALID_PARAM")


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_federation_list_without_an_origin_is_401(service_client, method):
    resp = await service_client.request(method, FED_ROOMS, json={} if method == "POST" else None)
    assert resp.status_code == 401 and resp.json()["errcode"] == "M_UNAUTHORIZED"
