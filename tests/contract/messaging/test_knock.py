"""`POST /v1/rooms/{room_id}/knock` (services/messaging/routes/knock.py): the knock goes to
the pdu service in its contract shape (tests/contract/messaging/test_routes.py), its
errors come back unchanged (a room whose join rule allows no knock, an unknown room, no
server answering make_knock: 502), and a bad body reaches nothing below."""
from __future__ import annotations

from urllib.parse import quote

import pytest

from shared.contracts import messaging as c

ROOM = "!room:remote.test"
ALICE = "@alice:hs.test"
PATH = c.KNOCK.format(room_id=quote(ROOM, safe=""))


@pytest.mark.parametrize("status,errcode", [(403, "M_FORBIDDEN"), (404, "M_NOT_FOUND"),
                                            (400, "M_INCOMPATIBLE_ROOM_VERSION"), (502, "M_UNKNOWN")])
async def test_knock_errors_come_back_unchanged(public_client, fake_pdu, status, errcode):
    fake_pdu.fail = (status, {"errcode": errcode, "error": "from pdu"})
    resp = await public_client.post(PATH, json={"user_id": ALICE, "servers": ["remote.test"]})
    assert resp.status_code == status
    assert resp.json() == {"errcode": errcode, "error": "from pdu"}
    assert fake_pdu.calls == [("knock", ROOM, {"user_id": ALICE, "servers": ["remote.test"], "reason": None})]


@pytest.mark.parametrize("body", [{}, {"servers": ["remote.test"]}, {"user_id": ALICE, "servers": "remote.test"},
                                  {"user_id": ALICE, "reason": 5}, []])
async def test_knock_bad_body_is_400_and_nothing_asked(public_client, fake_pdu, body):
    resp = await public_client.post(PATH, json=body)
    assert resp.status_code == 400 and resp.json()["errcode"] == "M_BAD_JSON", resp.text
    assert fake_pdu.calls == []
