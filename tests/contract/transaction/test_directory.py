"""The transaction service's directory routes (shared/contracts/directory.py): profiles,
query handlers, aliases and published rooms, stored for our own users and aliases only."""
from __future__ import annotations

from urllib.parse import quote

import pytest

from shared.contracts import directory as c
from tests.contract.helpers import unique


def q(v: str) -> str:
    return quote(v, safe="")


@pytest.fixture
def ours(service):
    return lambda sigil="@": f"{sigil}{unique('x')}:{service.settings.server_name}"


async def test_profile_put_get_replace(service_client, ours):
    user = ours()
    path = c.PROFILE.format(user_id=q(user))
    assert (await service_client.get(path)).status_code == 404
    assert (await service_client.put(path, json={"displayname": "Alice", "avatar_url": "mxc://x/y"})).status_code == 200
    assert (await service_client.get(path)).json() == {"displayname": "Alice", "avatar_url": "mxc://x/y"}
    assert (await service_client.put(path, json={"displayname": "A2"})).status_code == 200
    assert (await service_client.get(path)).json() == {"displayname": "A2"}


@pytest.mark.parametrize("user", ["@bob:other.test", "bob", "@:x", ""])
async def test_profile_of_another_server_is_refused(service_client, user):
    resp = await service_client.put(c.PROFILE.format(user_id=q(user) or "%20"), json={"displayname": "B"})
    assert resp.status_code in (400, 404), resp.text
    assert resp.json()["errcode"] in ("M_INVALID_PARAM", "M_UNRECOGNIZED", "M_NOT_FOUND")


async def test_profile_bad_types_are_400(service_client, ours):
    resp = await service_client.put(c.PROFILE.format(user_id=q(ours())), json={"displayname": 5})
    assert resp.status_code == 400 and "errcode" in resp.json()


async def test_query_handler_registry(service_client):
    qt = unique("com.example.q")
    path = c.QUERY_HANDLER.format(query_type=q(qt))
    assert (await service_client.get(path)).status_code == 404
    resp = await service_client.post(c.QUERY_HANDLERS, json={"query_type": qt, "url": "http://hs.local/q"})
    assert resp.status_code == 200, resp.text
    assert (await service_client.get(path)).json() == {"query_type": qt, "url": "http://hs.local/q"}
    for bad in ({"query_type": "profile", "url": "http://x/"}, {"query_type": "directory", "url": "http://x/"},
                {"query_type": qt, "url": "ftp://x/"}, {"query_type": "a b", "url": "http://x/"}):
        resp = await service_client.post(c.QUERY_HANDLERS, json=bad)
        assert resp.status_code == 400, (bad, resp.text)


async def test_alias_lifecycle_and_conflict(service_client, ours):
    alias = ours("#")
    path = c.ALIAS.format(alias=q(alias))
    assert (await service_client.get(path)).status_code == 404
    assert (await service_client.put(path, json={"room_id": "!a:x.test", "servers": ["x.test"]})).status_code == 200
    assert (await service_client.put(path, json={"room_id": "!a:x.test"})).status_code == 200   # same room
    resp = await service_client.put(path, json={"room_id": "!b:x.test"})
    assert resp.status_code == 409, resp.text
    assert (await service_client.get(path)).json() == {"room_id": "!a:x.test", "servers": []}
    aliases = await service_client.get(c.ROOM_ALIASES.format(room_id=q("!a:x.test")))
    assert alias in aliases.json()["aliases"]
    assert (await service_client.delete(path)).status_code == 200
    assert (await service_client.delete(path)).status_code == 404
    assert (await service_client.put(path, json={"room_id": "!b:x.test"})).status_code == 200


@pytest.mark.parametrize("alias", ["#a:other.test", "a:b", "#nosep"])
async def test_alias_of_another_server_is_refused(service_client, alias):
    resp = await service_client.put(c.ALIAS.format(alias=q(alias)), json={"room_id": "!a:x.test"})
    assert resp.status_code == 400 and resp.json()["errcode"] == "M_INVALID_PARAM"
    assert (await service_client.get(c.ALIAS.format(alias=q(alias)))).status_code == 404


async def test_alias_needs_a_room_id(service_client, ours):
    resp = await service_client.put(c.ALIAS.format(alias=q(ours("#"))), json={"room_id": "#not-a-room"})
    assert resp.status_code == 400


async def test_visibility_and_published_list(service_client):
    room = f"!{unique('r')}:x.test"
    vis = c.VISIBILITY.format(room_id=q(room))
    assert (await service_client.get(vis)).json() == {"visibility": "private"}
    assert (await service_client.put(vis, json={"visibility": "public"})).status_code == 200
    assert (await service_client.get(vis)).json() == {"visibility": "public"}
    assert room in (await service_client.get(c.PUBLISHED)).json()["room_ids"]
    assert (await service_client.put(vis, json={"visibility": "private"})).status_code == 200
    assert room not in (await service_client.get(c.PUBLISHED)).json()["room_ids"]
    assert (await service_client.put(vis, json={"visibility": "secret"})).status_code == 400
