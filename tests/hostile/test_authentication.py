"""Catalogue: Authentication.

X-Matrix request signatures (refused → 401 M_UNAUTHORIZED, and nothing behind the
transport sees the request), the lenient parsing real servers need, server keys (validity,
the 7-day cap, old keys, responses that are not self-signed or name another server), and
the retrieval endpoints refused to servers without a member in the room.
"""
from __future__ import annotations

import time

import orjson
import pytest

from shared.crypto import SigningKey
from tests.fakes.remote import FED, FakeRemote, Fault, Target, now_ms, q
from tests.hostile.conftest import (delivered, errcode, joined_room, sentinel, serve_tls,
                                    subscribe)

DAY_MS = 24 * 3600 * 1000


def txn(remote, pdus, ts=None):
    return {"origin": remote.server_name, "origin_server_ts": ts or now_ms(), "pdus": pdus}


async def assert_txn_unused(hs, remote, froom, txn_id):
    """Nothing was processed or stored under txn_id: a good transaction with it works."""
    eid, ev = froom.message("fred", "afterwards")
    r = await remote.send_transaction(hs, [ev], txn_id=txn_id)
    assert r.status_code == 200 and r.json() == {"pdus": {eid: {}}}
    await hs.wait_live(froom.room_id, eid)


# --------------------------------------------------------------------------- signatures

def _tamper_cases():
    other_key = SigningKey.generate("other")
    return {
        "no header": dict(auth=False),
        "wrong destination": dict(destination="elsewhere.test:8448"),
        "method changed": dict(sign_method="POST"),
        "uri changed": dict(sign_uri=f"{FED}/v1/send/another"),
        "uri decoded": dict(sign_uri=f"{FED}/v1/send/t!x"),
        "body changed": dict(sign_content="TAMPER"),
        "origin is us": dict(origin="ours.test:8448"),
        "origin is a third server": dict(origin="third.test:8448"),
        "unknown key": dict(key=SigningKey.generate("nope")),
        "other key same id": dict(key=other_key),
    }


@pytest.mark.parametrize("case", list(_tamper_cases()))
async def test_send_with_a_bad_signature_is_refused_and_changes_nothing(world, hs, remote, case):
    await world.remote("third.test:8448")     # exists, but never signed anything
    room, froom = await joined_room(hs, remote)
    sid = await subscribe(hs, room)
    kw = dict(_tamper_cases()[case])
    if case == "other key same id":
        kw["key"] = SigningKey(kw["key"].seed, remote.key.version)
    eid, ev = froom.message("fred", "forged", add=False)
    body = txn(remote, [ev])
    if kw.get("sign_content") == "TAMPER":
        kw["sign_content"] = dict(body, origin_server_ts=body["origin_server_ts"] + 1)
    txn_id = "t!x"
    r = await remote.request(hs, "PUT", f"{FED}/v1/send/{q(txn_id)}", body, **kw)
    assert errcode(r) == (401, "M_UNAUTHORIZED"), r.text
    await assert_txn_unused(hs, remote, froom, txn_id)
    assert await hs.records(eid) == {}
    assert eid not in delivered(hs, sid)


async def test_a_changed_query_string_is_refused(hs, remote):
    room, froom = await joined_room(hs, remote)
    mine = await hs.api.send(room, hs.user("alice"), "m.room.message", {"body": "x"})
    path = f"{FED}/v1/state_ids/{q(room)}"
    ok = await remote.request(hs, "GET", path, query=[("event_id", mine)])
    assert ok.status_code == 200
    r = await remote.request(hs, "GET", path, query=[("event_id", mine)],
                             sign_uri=f"{path}?event_id={q(froom.extremities[0])}")
    assert errcode(r) == (401, "M_UNAUTHORIZED")
    r = await remote.request(hs, "GET", path, query=[("event_id", mine)], sign_uri=path)
    assert errcode(r) == (401, "M_UNAUTHORIZED")


async def test_a_signature_by_an_old_key_does_not_authenticate_requests(world, hs):
    old = SigningKey.generate("old")
    remote = await world.remote()
    remote.old_verify_keys = {old.key_id: {"key": old.public_key_base64, "expired_ts": now_ms() + DAY_MS}}
    room, froom = await joined_room(hs, remote)
    eid, ev = froom.message("fred", "old key", add=False)
    r = await remote.send_transaction(hs, [ev], txn_id="old", key=old)
    assert errcode(r) == (401, "M_UNAUTHORIZED")
    await assert_txn_unused(hs, remote, froom, "old")


@pytest.mark.parametrize("header", [
    "Bearer abc",
    "Basic dXNlcjpwYXNz",
])
async def test_other_schemes_count_as_no_authorization(hs, remote, header):
    room, froom = await joined_room(hs, remote)
    r = await remote.send_transaction(hs, [], txn_id="scheme", auth=header)
    assert errcode(r) == (401, "M_UNAUTHORIZED")
    await assert_txn_unused(hs, remote, froom, "scheme")


@pytest.mark.parametrize("header", [
    'X-Matrix origin="remote.test:8448"',
    'X-Matrix origin="remote.test:8448",key="ed25519:x"',
    'X-Matrix origin="not a server",key="ed25519:x",sig="abc"',
    'X-Matrix origin="unterminated,key="ed25519:x",sig="abc',
    "X-Matrix ,,,",
    "X-Matrix",
])
async def test_unparseable_x_matrix_header_is_400_and_changes_nothing(hs, remote, header):
    room, froom = await joined_room(hs, remote)
    r = await remote.send_transaction(hs, [], txn_id="unparseable", auth=header)
    assert errcode(r) == (400, "M_UNAUTHORIZED")
    await assert_txn_unused(hs, remote, froom, "unparseable")


# --------------------------------------------------------------------------- leniency

def _lenient(origin, dest, key_id, sig):
    return {
        "spaces after commas": f'X-Matrix origin="{origin}", destination="{dest}", key="{key_id}", sig="{sig}"',
        "blanks around =": f'X-Matrix origin = "{origin}" ,destination= "{dest}",key ="{key_id}",sig="{sig}"',
        "bare values": f"X-Matrix origin={origin},destination={dest},key={key_id},sig={sig}",
        "lower-case scheme": f'x-matrix origin="{origin}",destination="{dest}",key="{key_id}",sig="{sig}"',
        "upper-case names": f'X-Matrix ORIGIN="{origin}",Destination="{dest}",KEY="{key_id}",Sig="{sig}"',
        "any order": f'X-Matrix sig="{sig}",key="{key_id}",destination="{dest}",origin="{origin}"',
        "no destination": f'X-Matrix origin="{origin}",key="{key_id}",sig="{sig}"',
        "unknown parameters": f'X-Matrix origin="{origin}",foo="bar",destination="{dest}",key="{key_id}",x=y,sig="{sig}"',
        "escaped chars": 'X-Matrix origin="{}",destination="{}",key="{}",sig="{}"'.format(
            origin, dest, key_id.replace(":", "\\:"), sig),
        "tabs": f'X-Matrix\torigin="{origin}",\tdestination="{dest}",key="{key_id}",\tsig="{sig}"',
    }


@pytest.mark.parametrize("style", list(_lenient("o", "d", "k", "s")))
async def test_x_matrix_headers_as_real_servers_send_them(hs, remote, style):
    from shared.xmatrix import sign_request
    room, froom = await joined_room(hs, remote)
    eid, ev = froom.message("fred", style)
    body = txn(remote, [ev])
    path = f"{FED}/v1/send/lenient"
    strict = sign_request("PUT", path, remote.server_name, hs.server_name, remote.key, body)
    sig = strict.rsplit('sig="', 1)[1].rstrip('"')
    header = _lenient(remote.server_name, hs.server_name, remote.key.key_id, sig)[style]
    r = await remote.request(hs, "PUT", path, body, auth=header)
    assert r.status_code == 200, r.text
    assert r.json() == {"pdus": {eid: {}}}
    await hs.wait_live(room, eid)


async def test_several_authorization_headers_one_good_is_enough(hs, remote):
    from shared.xmatrix import sign_request
    room, froom = await joined_room(hs, remote)
    eid, ev = froom.message("fred", "two headers")
    body = txn(remote, [ev])
    path = f"{FED}/v1/send/two"
    good = sign_request("PUT", path, remote.server_name, hs.server_name, remote.key, body)
    bad = good.rsplit('sig="', 1)[0] + 'sig="' + "A" * 86 + '"'
    r = await remote.request(hs, "PUT", path, body, auth=[bad, "Bearer x", good])
    assert r.status_code == 200 and r.json() == {"pdus": {eid: {}}}


async def test_over_the_wire_raw_request_target_is_what_is_verified(world, hs, remote):
    """Real HTTPS: the signature covers the request target byte for byte, as sent."""
    room, froom = await joined_room(hs, remote)
    mine = await hs.api.send(room, hs.user("alice"), "m.room.message", {"body": "x"})
    async with serve_tls(hs) as url:
        target = Target(hs.server_name, url)
        path = f"{FED}/v1/event/{q(mine)}"
        r = await remote.request(target, "GET", path)
        assert r.status_code == 200 and r.json()["pdus"][0]["content"] == {"body": "x"}
        # encoded differently on the wire than what was signed: refused
        r = await remote.request(target, "GET", path, sign_uri=f"{FED}/v1/event/{mine}")
        assert errcode(r) == (401, "M_UNAUTHORIZED")
        # a lenient header over the wire; the raw '!' and ':' of a room id stay as sent
        eid, ev = froom.message("fred", "wire")
        body = txn(remote, [ev])
        r = await remote.request(target, "PUT", f"{FED}/v1/send/wire%3F1", body)
        assert r.status_code == 200 and r.json() == {"pdus": {eid: {}}}
        r = await remote.request(target, "GET", f"{FED}/v1/state_ids/{room}", query=[("event_id", eid)])
        assert r.status_code == 200
        r = await remote.request(target, "GET", f"{FED}/v1/state_ids/{room}", query=[("event_id", eid)],
                                 sign_uri=f"{FED}/v1/state_ids/{q(room)}?event_id={q(eid)}")
        assert errcode(r) == (401, "M_UNAUTHORIZED")


# --------------------------------------------------------------------------- keys

def _bad_key_responses(remote: FakeRemote):
    other = SigningKey.generate("k2")
    stranger = FakeRemote("stranger.test:8448")
    return {
        "unsigned": remote.signed_key_response(sign=False),
        "signed by a key it does not list": remote.signed_key_response(
            verify_keys={other.key_id: {"key": other.public_key_base64}}),
        "signed under another name": remote.signed_key_response(sign_as="stranger.test:8448"),
        "names another server": stranger.signed_key_response(
            verify_keys={remote.key.key_id: {"key": remote.key.public_key_base64}},
            sign_with=remote.key),
        "another server's honest response": stranger.signed_key_response(),
        "expired": remote.signed_key_response(valid_until_ts=now_ms() - 1000),
        "garbage key": remote.signed_key_response(
            verify_keys={remote.key.key_id: {"key": "!!not base64!!"}}, sign=False),
        "no valid_until_ts": {k: v for k, v in remote.signed_key_response().items()
                              if k != "valid_until_ts"},
        "valid_until_ts a string": remote.signed_key_response(valid_until_ts="soon"),
        "not an object": ["keys"],
    }


@pytest.mark.parametrize("case", list(_bad_key_responses(FakeRemote("x.test"))))
async def test_key_responses_that_are_not_self_signed_or_name_another_server_are_refused(world, hs, case):
    remote = await world.remote("keyless.test:8448")
    remote.key_response_override = _bad_key_responses(remote)[case]
    room = await hs.api.create_room(hs.user("alice"), preset="public_chat")
    r = await remote.request(hs, "GET", f"{FED}/v1/make_join/{q(room)}/{q(remote.user('fred'))}",
                             query=[("ver", "12")])
    assert errcode(r) == (401, "M_UNAUTHORIZED"), r.text
    assert remote.keys_route.calls, "our server never asked for the keys"


async def test_request_signed_while_keys_expired_is_refused(world, hs):
    """Keys whose valid_until_ts has passed do not verify requests, even if fetched just now."""
    remote = await world.remote()
    room, froom = await joined_room(hs, remote)
    remote.key = SigningKey.generate("rotated")
    remote.key_response_override = lambda r: r.signed_key_response(valid_until_ts=now_ms() - 1)
    r = await remote.send_transaction(hs, [], txn_id="expired")
    assert errcode(r) == (401, "M_UNAUTHORIZED")


async def _event_accepted(hs, remote, froom, ev, eid) -> bool:
    r = await remote.send_transaction(hs, [ev])
    assert r.status_code == 200 and r.json() == {"pdus": {eid: {}}}
    await sentinel(hs, remote, froom)
    return bool(await hs.records(eid))


async def test_event_key_validity_is_capped_at_seven_days(world, hs):
    remote = await world.remote(key_validity_s=30 * 24 * 3600)
    room, froom = await joined_room(hs, remote)
    far, far_ev = froom.message("fred", "8 days ahead", ts=now_ms() + 8 * DAY_MS, add=False)
    assert not await _event_accepted(hs, remote, froom, far_ev, far)
    near, near_ev = froom.message("fred", "6 days ahead", ts=now_ms() + 6 * DAY_MS)
    assert await _event_accepted(hs, remote, froom, near_ev, near)


async def test_event_newer_than_its_key_validity_is_dropped(world, hs):
    remote = await world.remote(key_validity_s=3600)
    room, froom = await joined_room(hs, remote)
    eid, ev = froom.message("fred", "too new", ts=now_ms() + 2 * 3600 * 1000, add=False)
    assert not await _event_accepted(hs, remote, froom, ev, eid)
    await hs.assert_absent(room, eid)


async def test_old_verify_keys_sign_events_only_until_expired_ts(world, hs):
    old = SigningKey.generate("old")
    remote = await world.remote()
    expired = now_ms() - 3600 * 1000
    remote.old_verify_keys = {old.key_id: {"key": old.public_key_base64, "expired_ts": expired}}
    room, froom = await joined_room(hs, remote)
    before, ev1 = froom.message("fred", "signed before expiry", ts=expired - 1000, key=old)
    assert await _event_accepted(hs, remote, froom, ev1, before)
    after, ev2 = froom.message("fred", "signed after expiry", ts=expired + 1000, key=old, add=False)
    assert not await _event_accepted(hs, remote, froom, ev2, after)


# --------------------------------------------------------------------------- retrieval

RETRIEVAL = ["event", "state", "state_ids", "backfill", "get_missing_events", "event_auth"]


async def _retrieve(remote, hs, what, room, eid):
    if what == "event":
        return await remote.request(hs, "GET", f"{FED}/v1/event/{q(eid)}")
    if what in ("state", "state_ids"):
        return await remote.request(hs, "GET", f"{FED}/v1/{what}/{q(room)}", query=[("event_id", eid)])
    if what == "backfill":
        return await remote.request(hs, "GET", f"{FED}/v1/backfill/{q(room)}",
                                    query=[("v", eid), ("limit", "10")])
    if what == "get_missing_events":
        return await remote.request(hs, "POST", f"{FED}/v1/get_missing_events/{q(room)}",
                                    {"earliest_events": [], "latest_events": [eid], "limit": 10})
    return await remote.request(hs, "GET", f"{FED}/v1/event_auth/{q(room)}/{q(eid)}")


@pytest.mark.parametrize("what", RETRIEVAL)
async def test_retrieval_refused_to_a_server_without_members(world, hs, what):
    stranger = await world.remote("stranger.test:8448")
    member = await world.remote("member.test:8448")
    room, _froom = await joined_room(hs, member)
    alice = hs.user("alice")
    await hs.api.send(room, alice, "m.room.message", {"body": "one"})
    eid = await hs.api.send(room, alice, "m.room.message", {"body": "secret"})
    r = await _retrieve(stranger, hs, what, room, eid)
    assert errcode(r) == (403, "M_FORBIDDEN"), r.text
    assert "secret" not in r.text
    ok = await _retrieve(member, hs, what, room, eid)
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("what", RETRIEVAL)
async def test_retrieval_refused_once_the_servers_members_left(world, hs, remote, what):
    room, froom = await joined_room(hs, remote)
    alice = hs.user("alice")
    kick = await hs.api.moderate("kick", room, alice, remote.user("fred"))
    eid = await hs.api.send(room, alice, "m.room.message", {"body": "after the kick"})
    r = await _retrieve(remote, hs, what, room, eid)
    assert errcode(r) == (403, "M_FORBIDDEN"), r.text
    from tests.fakes.remote import wait_for
    await wait_for(lambda: kick in remote.received_event_ids(), what="the kick reached the fake")
