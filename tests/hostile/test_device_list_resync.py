"""Catalogue: received device list updates and resyncs.

An update whose prev_id we never saw makes us fetch the user's list from the origin's
/user/devices (X-Matrix signed) and hand the answer to subscribers as a
`fedstack.user_devices` EDU; updates that follow on from what we know cost no fetch; a
peer whose prev_ids never line up gets at most one fetch per interval; a prev_id chain
that loops is dropped; a malformed answer is not delivered and the resync is retried."""
from __future__ import annotations

import asyncio
import time

from tests.fakes.remote import FED, wait_for
from tests.hostile.test_inbound_edus import device_update, edus_of, wait_edus


def devices_route(remote, answers: list):
    """Serve /user/devices from `answers` (the last one repeats)."""
    def handler(req):
        return answers.pop(0) if len(answers) > 1 else answers[0]
    return remote.route("GET", FED + "/v1/user/devices/{user_id}", handler)


async def test_unknown_prev_id_resyncs_once_and_delivers_the_list(hs, remote):
    fred = remote.user("fred")
    sid = await hs.api.subscribe("http://cb/callback",
                                 types=["m.device_list_update", "fedstack.user_devices"])
    keys = {"user_id": fred, "device_id": "D1", "keys": {"ed25519:D1": "k"}}
    answer = {"user_id": fred, "stream_id": 10,
              "devices": [{"device_id": "D1", "keys": keys},
                          {"device_id": "BAD", "keys": {"user_id": "@mallory:evil.test", "device_id": "BAD"}}]}
    route = devices_route(remote, [answer])
    assert (await remote.send_transaction(hs, [], [device_update(fred, 10, [9])])).status_code == 200
    got = await wait_edus(hs, sid, 2)
    assert [e["edu_type"] for e in got] == ["m.device_list_update", "fedstack.user_devices"]
    assert got[1]["content"] == {"user_id": fred, "stream_id": 10,
                                 "devices": [{"device_id": "D1", "keys": keys}]}
    assert got[1]["origin"] == remote.server_name
    [call] = route.calls
    assert call.params["user_id"] == fred
    # follows on from what we know: applied, no fetch
    assert (await remote.send_transaction(hs, [], [device_update(fred, 11, [10])])).status_code == 200
    await wait_edus(hs, sid, 3)
    # a prev_id we never saw, again soon: owed, but not fetched before the interval
    assert (await remote.send_transaction(hs, [], [device_update(fred, 14, [13])])).status_code == 200
    await wait_edus(hs, sid, 4)
    await asyncio.sleep(0.5)
    assert len(route.calls) == 1 and len(edus_of(hs, sid)) == 4


async def test_first_update_without_prev_id_needs_no_resync(hs, remote):
    fred = remote.user("fred")
    sid = await hs.api.subscribe("http://cb/callback", types=["m.device_list_update"])
    route = devices_route(remote, [(500, {"errcode": "M_UNKNOWN", "error": "should not be asked"})])
    for sid_, prev in ((1, []), (2, [1])):
        assert (await remote.send_transaction(hs, [], [device_update(fred, sid_, prev)])).status_code == 200
    await wait_edus(hs, sid, 2)
    await asyncio.sleep(0.3)
    assert route.calls == []


async def test_malformed_answer_is_not_delivered_and_the_resync_is_retried(hs, remote):
    fred = remote.user("fred")
    sid = await hs.api.subscribe("http://cb/callback", types=["fedstack.user_devices"])
    resync = hs.tx_app.state.svc.device_resync
    offset = [0.0]
    resync.clock = lambda: time.time() + offset[0]     # the wall clock, as the inbound path
    route = devices_route(remote, [{"user_id": "@someone:else.test", "stream_id": 3, "devices": []},
                                   {"user_id": fred, "stream_id": 3, "devices": []}])
    assert (await remote.send_transaction(hs, [], [device_update(fred, 3, [2])])).status_code == 200
    await wait_for(lambda: len(route.calls) == 1, 10, what="first fetch")
    await asyncio.sleep(0.3)
    assert edus_of(hs, sid) == []
    offset[0] = 3600.0                        # past the retry interval
    resync.wake()
    got = await wait_edus(hs, sid, 1)
    assert got[0]["content"] == {"user_id": fred, "stream_id": 3, "devices": []}
    assert len(route.calls) == 2
