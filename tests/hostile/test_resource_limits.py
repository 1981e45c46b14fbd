"""Catalogue: Resource limits.

Request bodies over the cap (413 before any parsing, over the wire too), responses we read
capped, per-origin rate limits (429 M_LIMIT_EXCEEDED with retry_after_ms), the caps on
get_missing_events (20) and backfill (100), and outbound requests to private or loopback
addresses refused unless configured.
"""
from __future__ import annotations

import asyncio
import ssl

import pytest

from shared.errors import MatrixError
from shared.settings import Settings
from tests.fakes.remote import FED, Fault, Target, q, wait_for
from tests.hostile.conftest import errcode, joined_room, serve_tls

CAP = Settings().max_body_bytes


# --------------------------------------------------------------------------- request bodies

async def test_body_over_the_cap_is_413_before_parsing_or_auth(hs, remote):
    room, froom = await joined_room(hs, remote)
    over = b'{"pdus": [], "pad": "' + b"x" * CAP + b'"}'
    r = await remote.request(hs, "PUT", f"{FED}/v1/send/big", raw_body=over, auth=False)
    assert errcode(r) == (413, "M_TOO_LARGE")
    r = await remote.request(hs, "PUT", f"{FED}/v1/send/big", raw_body=b"x" * (CAP + 1), auth=False)
    assert errcode(r) == (413, "M_TOO_LARGE")          # not 400 M_NOT_JSON: never parsed
    r = await remote.request(hs, "POST", f"{FED}/v1/get_missing_events/{q(room)}",
                             raw_body=b"[" * (CAP + 1), auth=False)
    assert errcode(r) == (413, "M_TOO_LARGE")
    # just under the cap is parsed (and then refused for what it is)
    r = await remote.request(hs, "PUT", f"{FED}/v1/send/big", raw_body=b"x" * (CAP - 1), auth=False)
    assert errcode(r) == (400, "M_NOT_JSON")
    eid, ev = froom.message("fred", "fine")
    r = await remote.send_transaction(hs, [ev], txn_id="big")
    assert r.status_code == 200 and r.json() == {"pdus": {eid: {}}}


async def test_messaging_api_body_over_the_cap_is_413(hs):
    room = await hs.api.create_room(hs.user("alice"))
    status, body = await hs.api.request("POST", f"/v1/rooms/{q(room)}/events",
                                        {"sender": hs.user("alice"), "type": "m.room.message",
                                         "content": {"body": "x" * CAP}})
    assert (status, body["errcode"]) == (413, "M_TOO_LARGE")


async def _raw_https(url: str, head: bytes, body_chunks=(), pause: float = 0.0) -> bytes:
    host, port = url.removeprefix("https://").split(":")
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(host, int(port), ssl=ctx)
    writer.write(head)
    await writer.drain()
    try:
        for chunk in body_chunks:
            if reader.at_eof():
                break
            writer.write(chunk)
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)
    except (ConnectionError, ssl.SSLError):
        pass
    try:
        return await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()


async def test_declared_oversized_body_is_refused_on_the_wire_without_reading_it(hs):
    async with serve_tls(hs) as url:
        head = (f"PUT {FED}/v1/send/huge HTTP/1.1\r\nHost: {hs.server_name}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {200 * 1024 * 1024}\r\n\r\n").encode()
        answer = await asyncio.wait_for(_raw_https(url, head), 10)   # no body is ever sent
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    assert b"M_TOO_LARGE" in answer


async def test_chunked_body_growing_over_the_cap_is_refused_on_the_wire(hs):
    chunk = b"x" * (1024 * 1024)
    framed = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    async with serve_tls(hs) as url:
        head = (f"PUT {FED}/v1/send/chunky HTTP/1.1\r\nHost: {hs.server_name}\r\n"
                f"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
        answer = await _raw_https(url, head, [framed] * (CAP // len(chunk) + 2))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]


# --------------------------------------------------------------------------- responses

@pytest.mark.parametrize("tls", [False, True])
@pytest.mark.parametrize("declare", [False, True])
async def test_oversized_answers_are_cut_off(world, tls, declare):
    hs = await world.homeserver(max_response_bytes=256 * 1024)
    remote = await world.remote("big.test:8448", tls=tls)
    froom = remote.create_room(version="12")
    make, send = remote.serve_joins(froom)
    make.fail_always(Fault.oversized(2 * 1024 * 1024, declare=declare))
    with pytest.raises(MatrixError) as exc:
        await hs.api.join(froom.room_id, hs.user("alice"), servers=[remote.server_name])
    assert exc.value.status == 502
    assert "too large" in exc.value.error
    assert make.calls and not send.calls
    assert await hs.tx.get_room(froom.room_id) is None


async def test_oversized_key_response_gives_no_keys(world):
    hs = await world.homeserver(max_response_bytes=64 * 1024)
    remote = await world.remote()
    remote.keys_route.fail_always(Fault.oversized(1024 * 1024))
    room = await hs.api.create_room(hs.user("alice"), preset="public_chat")
    r = await remote.request(hs, "GET", f"{FED}/v1/make_join/{q(room)}/{q(remote.user('fred'))}",
                             query=[("ver", "12")])
    assert errcode(r) == (401, "M_UNAUTHORIZED")
    assert remote.keys_route.calls


async def test_default_response_cap_allows_a_large_ordinary_answer(world, hs):
    """A send_join answer of a few MiB (a big room) is fine with the default cap."""
    remote = await world.remote()
    froom = remote.create_room(version="12")
    for i in range(60):
        froom.build("creator", "m.room.topic", {"topic": "t" * 60_000, "i": i}, state_key="")
    remote.serve_joins(froom)
    await hs.api.join(froom.room_id, hs.user("alice"), servers=[remote.server_name])


# --------------------------------------------------------------------------- rate limits

async def test_per_origin_rate_limit_429_with_retry_after(world):
    hs = await world.homeserver(federation_rate_per_s=2.0, federation_rate_burst=5)
    now = [1000.0]
    hs.transport_app.state.svc.limiter.clock = lambda: now[0]     # time moves only when told
    remote = await world.remote()
    other = await world.remote("other.test:8448")
    room = await hs.api.create_room(hs.user("alice"), preset="public_chat")
    msg = await hs.api.send(room, hs.user("alice"), "m.room.message", {"body": "x"})
    path = f"{FED}/v1/make_join/{q(room)}/{q(remote.user('fred'))}"
    answers = [await remote.request(hs, "GET", path, query=[("ver", "12")]) for _ in range(6)]
    assert [a.status_code for a in answers[:5]] == [200] * 5
    limited = answers[5]
    assert errcode(limited) == (429, "M_LIMIT_EXCEEDED")
    retry_ms = limited.json()["retry_after_ms"]
    assert retry_ms == 500                               # one token at 2 per second
    assert int(limited.headers["retry-after"]) >= 1
    # /send is not request-rate limited (one transaction in flight per origin bounds it)
    r = await remote.send_transaction(hs, [], txn_id="while-limited")
    assert r.status_code == 200 and r.json() == {"pdus": {}}
    r = await remote.request(hs, "GET", path, query=[("ver", "12")])
    assert errcode(r) == (429, "M_LIMIT_EXCEEDED")
    # other origins are not affected
    r = await other.request(hs, "GET", f"{FED}/v1/make_join/{q(room)}/{q(other.user('olga'))}",
                            query=[("ver", "12")])
    assert r.status_code == 200
    # unauthenticated requests do not use up the origin's allowance
    now[0] += retry_ms / 1000
    for _ in range(3):
        r = await remote.request(hs, "GET", path, query=[("ver", "12")], auth=False)
        assert errcode(r) == (401, "M_UNAUTHORIZED")
    r = await remote.request(hs, "GET", path, query=[("ver", "12")])
    assert r.status_code == 200
    assert msg


async def test_default_rate_limit_is_generous(hs, remote):
    room, froom = await joined_room(hs, remote)
    for i in range(20):
        eid, ev = froom.message("fred", f"m{i}")
        r = await remote.send_transaction(hs, [ev])
        assert r.status_code == 200
    await hs.wait_live(room, eid)
    rs = await asyncio.gather(*[remote.request(hs, "GET", f"{FED}/v1/event/{q(eid)}") for _ in range(60)])
    assert {r.status_code for r in rs} == {200}


# --------------------------------------------------------------------------- size caps

@pytest.fixture
async def long_room(hs, remote):
    room, froom = await joined_room(hs, remote)
    alice = hs.user("alice")
    ids = [await hs.api.send(room, alice, "m.room.message", {"body": f"h{i}"}) for i in range(110)]
    return room, ids


async def test_get_missing_events_is_capped_at_20(hs, remote, long_room):
    room, ids = long_room
    r = await remote.request(hs, "POST", f"{FED}/v1/get_missing_events/{q(room)}",
                             {"earliest_events": [], "latest_events": [ids[-1]], "limit": 10_000})
    assert r.status_code == 200
    evs = r.json()["events"]
    assert len(evs) == 20
    assert [e["content"]["body"] for e in evs] == [f"h{i}" for i in range(89, 109)]
    for bad in ("ten", 1.5, None, [], {"n": 1}):
        r = await remote.request(hs, "POST", f"{FED}/v1/get_missing_events/{q(room)}",
                                 {"earliest_events": [], "latest_events": [ids[-1]], "limit": bad})
        assert errcode(r) == (400, "M_BAD_JSON"), (bad, r.text)
    r = await remote.request(hs, "POST", f"{FED}/v1/get_missing_events/{q(room)}",
                             {"earliest_events": [], "latest_events": [ids[-1]], "limit": -5})
    assert r.status_code == 200 and r.json()["events"] == []


async def test_backfill_is_capped_at_100(hs, remote, long_room):
    room, ids = long_room
    r = await remote.request(hs, "GET", f"{FED}/v1/backfill/{q(room)}",
                             query=[("v", ids[-1]), ("limit", "100000")])
    assert r.status_code == 200
    assert len(r.json()["pdus"]) == 100
    r = await remote.request(hs, "GET", f"{FED}/v1/backfill/{q(room)}",
                             query=[("v", i) for i in ids[-100:]] + [("limit", "5")])
    assert r.status_code == 200 and len(r.json()["pdus"]) == 5


# --------------------------------------------------------------------------- private addresses

@pytest.mark.parametrize("dest", ["127.0.0.1:{port}", "localhost:{port}", "127.0.0.2:{port}",
                                  "[::1]:{port}", "0.0.0.0:{port}", "10.1.2.3:8448", "192.168.1.1:8448",
                                  "169.254.169.254:80", "[fe80::1]:8448", "[::ffff:127.0.0.1]:{port}"])
async def test_outbound_requests_to_private_addresses_are_refused(world, dest):
    hs = await world.homeserver(allow_private_destinations=False)
    remote = await world.remote(tls=True)
    dest = dest.format(port=remote.port)
    resp = await hs.tx.federation_request(dest, "GET", f"{FED}/v1/version")
    assert resp["status"] == 0 and "private" in resp["error"], resp
    assert not remote.requests


async def test_private_destination_refused_for_keys_and_joins_but_allowed_when_configured(world):
    strict = await world.homeserver(allow_private_destinations=False)
    remote = await world.remote(tls=True)
    froom = remote.create_room(version="12")
    remote.serve_joins(froom)
    room = await strict.api.create_room(strict.user("alice"), preset="public_chat")
    r = await remote.request(strict, "GET", f"{FED}/v1/make_join/{q(room)}/{q(remote.user('fred'))}",
                             query=[("ver", "12")])
    assert errcode(r) == (401, "M_UNAUTHORIZED")        # its keys are on a loopback address
    with pytest.raises(MatrixError):
        await strict.api.join(froom.room_id, strict.user("alice"), servers=[remote.server_name])
    assert not remote.requests
    # the same homeserver configured for a loopback test network reaches it
    await strict.stop()
    lenient = await world.homeserver("lenient.test:8448", allow_private_destinations=True)
    await lenient.api.join(froom.room_id, lenient.user("alice"), servers=[remote.server_name])
    assert remote.requests
