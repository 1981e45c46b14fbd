"""Auth-checking a send_join answer: events that fail against their own auth events, and
events that depend on them, are rejected."""
from __future__ import annotations

import pytest

from services.pdu.builder import build_event
from services.pdu.membership import check_auth_chain
from shared.crypto import SigningKey
from shared.room_versions import get_room_version


@pytest.mark.parametrize("version", ["10", "11", "12"])
def test_forged_join_and_its_dependants_are_rejected(version):
    rv = get_room_version(version)
    key = SigningKey.generate()
    alice, mallory = "@alice:hs", "@mallory:evil"
    room_id = None if rv.room_id_is_create_id else "!r:hs"
    state, built = {}, {}
    last = []

    def add(type_, sender, sk, content):
        nonlocal room_id, last
        ev = build_event(rv=rv, server_name="hs", key=key, room_id=room_id, sender=sender,
                         type=type_, content=content, state_key=sk, prev=last, state=state)
        if room_id is None:
            room_id = "!" + ev["event_id"][1:]
        eid = ev.pop("event_id")
        state[(type_, sk)] = eid
        built[eid] = ev
        last = [dict(ev, event_id=eid)]
        return eid

    create_content = {"room_version": version, **({"creator": alice} if version == "10" else {})}
    create = add("m.room.create", alice, "", create_content)
    add("m.room.member", alice, alice, {"membership": "join"})
    add("m.room.power_levels", alice, "", {"users": {} if version == "12" else {alice: 100}})
    add("m.room.join_rules", alice, "", {"join_rule": "invite"})
    forged = add("m.room.member", mallory, mallory, {"membership": "join"})
    dependant = add("m.room.topic", mallory, "", {"topic": "owned"})
    rejected = check_auth_chain(built, rv, built[create])
    assert set(rejected) == {forged, dependant}
