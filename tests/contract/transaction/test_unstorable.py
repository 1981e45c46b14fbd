"""Values an engine cannot store are the caller's bad input, never a 500: an integer beyond
64 bits (both engines), a NUL character in text (PostgreSQL refuses it; sqlite stores it).
The refused call's writes are undone and the service goes on serving."""
from __future__ import annotations

from urllib.parse import quote

from shared.contracts import directory as dc
from shared.contracts import transaction as c
from tests.contract.helpers import unique
from tests.contract.transaction.conftest import new_room


async def test_an_integer_beyond_64_bits_is_400_and_nothing_is_stored(service_client):
    room = await new_room(service_client)
    eid = f"${unique()}"
    resp = await service_client.post(c.PERSIST, json={"events": [{
        "event_id": eid, "room_id": room, "event": {"type": "m.room.message", "room_id": room},
        "state_after": {"group": 2**70}}]})
    assert resp.status_code == 400, resp.text
    assert resp.json()["errcode"] in ("M_BAD_JSON", "M_INVALID_PARAM", "M_NOT_FOUND")
    got = await service_client.post(c.GET_EVENTS, json={"event_ids": [eid]})
    assert got.status_code == 200 and got.json()["events"] == {}


async def test_a_nul_in_text_is_stored_or_refused_with_400(service, service_client, db_engine):
    user = f"@{unique('n')}:{service.settings.server_name}"
    path = dc.PROFILE.format(user_id=quote(user, safe=""))
    resp = await service_client.put(path, json={"displayname": "a\u0000b"})
    if db_engine == "postgresql":
        assert resp.status_code == 400, resp.text
        assert resp.json()["errcode"] == "M_INVALID_PARAM"
        assert (await service_client.get(path)).status_code == 404     # nothing stored
    else:
        assert resp.status_code == 200, resp.text
        assert (await service_client.get(path)).json() == {"displayname": "a\u0000b"}
    assert (await service_client.put(path, json={"displayname": "ok"})).status_code == 200
    assert (await service_client.get(path)).json() == {"displayname": "ok"}
