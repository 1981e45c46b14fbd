"""Catalogue: Authentication — signing keys that change (issue #12, items 4 and 9).

A fake remote rotates its key mid-test: a request or an event signed by a key our cached
response lacks makes us fetch its keys again (at most once a minute per server), instead of
being refused until the cache expires. Every signature of the origin by a key we know must
verify. Our own events signed before `fedstack rotate-key` still verify when they come back.
"""
from __future__ import annotations

from fedstack.cli import rotate_key
from shared.crypto import SigningKey
from shared.events import sign_event
from tests.fakes.remote import now_ms
from tests.hostile.conftest import errcode, joined_room, sentinel


def publish(remote, *keys: SigningKey) -> None:
    """The remote's key response lists `keys` as current (signed by its main key)."""
    remote.key_response_override = lambda r: r.signed_key_response(
        verify_keys={k.key_id: {"key": k.public_key_base64} for k in keys})


async def settle(hs, remote, froom, ev, eid) -> bool:
    """Send `ev` alone; once the relay has handled it, whether it was stored."""
    r = await remote.send_transaction(hs, [ev])
    assert r.status_code == 200 and r.json() == {"pdus": {eid: {}}}, r.text
    await sentinel(hs, remote, froom)
    return bool(await hs.records(eid))


async def test_a_request_signed_by_a_rotated_key_is_accepted_after_one_refetch(hs, remote):
    room, froom = await joined_room(hs, remote)
    fetched = len(remote.keys_route.calls)
    old = remote.key
    remote.old_verify_keys = {old.key_id: {"key": old.public_key_base64, "expired_ts": now_ms()}}
    remote.key = SigningKey.generate("rotated")
    eid, ev = froom.message("fred", "signed by the new key")    # the event too
    r = await remote.send_transaction(hs, [ev])
    assert r.status_code == 200 and r.json() == {"pdus": {eid: {}}}, r.text
    await hs.wait_live(room, eid)
    # one fetch: the pdu's look-up of the new key was answered from the transport's cache
    assert len(remote.keys_route.calls) == fetched + 1
    remote.key = SigningKey.generate("rotated_again")           # within the minute
    r = await remote.send_transaction(hs, [], txn_id="again")
    assert errcode(r) == (401, "M_UNAUTHORIZED")
    assert len(remote.keys_route.calls) == fetched + 1          # not fetched a second time


async def test_an_event_signed_by_a_new_key_is_accepted_after_one_refetch(hs, remote):
    """The transaction is signed by the key we know; its event by one we have not seen: the
    pdu asks for that key, and the transport (whose cache lacks it too) fetches again."""
    room, froom = await joined_room(hs, remote)
    fetched = len(remote.keys_route.calls)
    second, third = SigningKey.generate("second"), SigningKey.generate("third")
    publish(remote, remote.key, second, third)
    eid, ev = froom.message("fred", "by the second key", key=second, add=False)
    assert await settle(hs, remote, froom, ev, eid)
    assert len(remote.keys_route.calls) == fetched + 1
    # the response we got lists the third key already; a fourth, unknown one is not
    # fetched for again within the minute: its event is dropped
    fourth = SigningKey.generate("fourth")
    publish(remote, remote.key, second, third, fourth)
    eid4, ev4 = froom.message("fred", "by the fourth key", key=fourth, add=False)
    assert not await settle(hs, remote, froom, ev4, eid4)
    await hs.assert_absent(room, eid4)
    eid3, ev3 = froom.message("fred", "by the third key", key=third, add=False)
    assert await settle(hs, remote, froom, ev3, eid3)
    assert len(remote.keys_route.calls) == fetched + 1


async def test_one_bad_signature_by_a_known_key_drops_the_event_though_another_verifies(hs, remote):
    second = SigningKey.generate("second")
    publish(remote, remote.key, second)
    room, froom = await joined_room(hs, remote)
    good, good_ev = froom.message("fred", "signed twice", add=False)
    sign_event(good_ev, remote.server_name, second, froom.rv)
    assert await settle(hs, remote, froom, good_ev, good)
    bad, bad_ev = froom.message("fred", "second signature forged", add=False)
    sigs = bad_ev["signatures"][remote.server_name]
    sigs[second.key_id] = sigs[remote.key.key_id]        # not a signature by `second`
    assert not await settle(hs, remote, froom, bad_ev, bad)
    await hs.assert_absent(room, bad)


async def test_our_events_signed_by_our_previous_key_verify_after_rotate_key(hs, remote):
    """Carol's join, signed by our key of the time, comes back in a send_join answer after
    `fedstack rotate-key`: it verifies by the old key (its ts is before expired_ts)."""
    froom = remote.create_room(version="11")
    carol = hs.user("carol")
    old = SigningKey.load(hs.settings.path("signing_key"))
    cj, _ = froom.build(carol, "m.room.member", {"membership": "join"}, state_key=carol,
                        signer=hs.server_name, key=old)
    await hs.stop()
    new_id = rotate_key(hs.settings)
    await hs.start()
    assert new_id != old.key_id
    remote.serve_joins(froom)
    await hs.api.join(froom.room_id, hs.user("alice"), servers=[remote.server_name])
    state = {(e["type"], e["state_key"]) for e in await hs.api.state(froom.room_id)}
    assert ("m.room.member", carol) in state
    assert await hs.records(cj)
