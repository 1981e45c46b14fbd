"""The pdu service's membership answers to other servers, against the spec: make_join and
make_leave templates carry `origin`; exchange_third_party_invite turns a third-party invite
into a countersigned m.room.member invite and commits it for the room's servers."""
from __future__ import annotations

import pytest

from shared.contracts import pdu as c
from shared.crypto import SigningKey, sign_json
from shared.events import sign_event
from shared.room_versions import get_room_version
from tests.contract.pdu.conftest import REMOTE
from tests.contract.pdu.test_with_fakes import ALICE, create_room, q, remote_join, send, state

HEADERS = {c.ORIGIN_HEADER: REMOTE}


@pytest.mark.parametrize("version", ["10", "11", "12"])
async def test_make_join_and_make_leave_templates_carry_origin(service_client, fake_transport, version):
    room = await create_room(service_client, version)
    bob = f"@bob:{REMOTE}"
    resp = await service_client.get(c.FEDERATION + f"/v1/make_join/{q(room)}/{q(bob)}",
                                    params={"ver": version}, headers=HEADERS)
    assert resp.status_code == 200, resp.text
    assert resp.json()["event"]["origin"] == "hs.test"
    await remote_join(service_client, fake_transport, room, version)
    resp = await service_client.get(c.FEDERATION + f"/v1/make_leave/{q(room)}/{q(bob)}", headers=HEADERS)
    assert resp.status_code == 200, resp.text
    assert resp.json()["event"]["origin"] == "hs.test"


async def third_party_room(client, version: str) -> tuple[str, SigningKey]:
    """A private room with alice's m.room.third_party_invite (token "tok"); returns the
    room and the identity server's key it lists."""
    room = await create_room(client, version, preset="private_chat")
    ids = SigningKey.generate("0")
    await send(client, room, {"sender": ALICE, "type": "m.room.third_party_invite", "state_key": "tok",
                              "content": {"display_name": "b***@example.org",
                                          "public_key": ids.public_key_base64}})
    return room, ids


def exchange_body(room: str, target: str, ids: SigningKey) -> dict:
    signed = sign_json({"mxid": target, "token": "tok"}, "id.example", ids)
    return {"type": "m.room.member", "room_id": room, "sender": ALICE, "state_key": target,
            "content": {"membership": "invite",
                        "third_party_invite": {"display_name": "b", "signed": signed}}}


@pytest.mark.parametrize("version", ["10", "11", "12"])
async def test_exchange_third_party_invite_commits_a_countersigned_invite(service_client, recorder,
                                                                         fake_transport, version):
    rv = get_room_version(version)
    room, ids = await third_party_room(service_client, version)
    bob = f"@bob:{REMOTE}"
    asked = []

    async def remote(method, path, query, body):
        asked.append(path)
        ev = dict(body["event"])
        sign_event(ev, REMOTE, fake_transport.remote_key, rv)
        return 200, {"event": ev}
    fake_transport.remote = remote
    n = len(recorder.persists)
    resp = await service_client.put(c.FEDERATION + f"/v1/exchange_third_party_invite/{q(room)}",
                                    json=exchange_body(room, bob, ids), headers=HEADERS)
    assert resp.status_code == 200 and resp.json() == {}, resp.text
    assert len(asked) == 1 and asked[0].startswith(f"/_matrix/federation/v2/invite/{q(room)}/")
    [req] = recorder.persists[n:]
    [ev] = req["events"]
    assert ev["event"]["state_key"] == bob and ev["event"]["sender"] == ALICE
    assert ev["event"]["content"]["third_party_invite"]["display_name"] == "b***@example.org"
    assert set(ev["event"]["signatures"]) == {"hs.test", REMOTE}
    assert req["destinations"][ev["event_id"]] == [REMOTE]
    assert (await state(service_client, room))[("m.room.member", bob)]["event_id"] == ev["event_id"]


async def test_exchange_third_party_invite_with_a_forged_signature_is_refused(service_client, recorder,
                                                                             fake_transport):
    room, _ids = await third_party_room(service_client, "12")
    bob = f"@bob:{REMOTE}"

    async def remote(method, path, query, body):
        raise AssertionError("no invite may be sent")
    fake_transport.remote = remote
    n = len(recorder.persists)
    resp = await service_client.put(c.FEDERATION + f"/v1/exchange_third_party_invite/{q(room)}",
                                    json=exchange_body(room, bob, SigningKey.generate("0")), headers=HEADERS)
    assert resp.status_code == 403 and resp.json()["errcode"] == "M_FORBIDDEN", resp.text
    assert recorder.persists[n:] == []
    assert ("m.room.member", bob) not in await state(service_client, room)
