"""Catalogue: profiles and federation queries.

A fake remote asks our /query/profile (field honoured, 404 for users we know nothing of or
of other servers, 400 for bad parameters); our domain API asks the fake for its users'
profiles; query types the stack does not answer go to the handler the homeserver
registered (with the origin, passed through, timed out), or are 404 M_UNRECOGNIZED; joins
and invites we build carry our users' profiles.
"""
from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from services.transport.routes import queries
from shared.errors import MatrixError
from tests.fakes.remote import FED, Reply
from tests.hostile.conftest import errcode

PROFILE = FED + "/v1/query/profile"


async def ask(remote, hs, query_type: str, **params):
    return await remote.request(hs, "GET", f"{FED}/v1/query/{query_type}", query=list(params.items()))


async def test_profile_query_answers_what_the_homeserver_told_us(hs, remote):
    alice = hs.user("alice")
    await hs.api.put_profile(alice, "Alice A", "mxc://ours.test/a")
    r = await ask(remote, hs, "profile", user_id=alice)
    assert r.status_code == 200 and r.json() == {"displayname": "Alice A", "avatar_url": "mxc://ours.test/a"}
    assert (await ask(remote, hs, "profile", user_id=alice, field="displayname")).json() == {"displayname": "Alice A"}
    assert (await ask(remote, hs, "profile", user_id=alice, field="avatar_url")).json() == \
        {"avatar_url": "mxc://ours.test/a"}
    assert errcode(await ask(remote, hs, "profile", user_id=hs.user("nobody"))) == (404, "M_NOT_FOUND")
    assert errcode(await ask(remote, hs, "profile", user_id="@x:elsewhere.test")) == (404, "M_NOT_FOUND")
    assert errcode(await ask(remote, hs, "profile")) == (400, "M_MISSING_PARAM")
    assert errcode(await ask(remote, hs, "profile", user_id=alice, field="bio")) == (400, "M_INVALID_PARAM")
    r = await remote.request(hs, "GET", PROFILE, query=[("user_id", alice)], auth=False)
    assert r.status_code == 401


async def test_remote_profile_asked_of_the_users_server(hs, remote):
    fred = remote.user("fred")
    remote.route("GET", PROFILE, lambda req: {"displayname": "Fred", "avatar_url": 7, "extra": "x"}
                 if dict(req.query).get("user_id") == fred
                 else Reply(404, {"errcode": "M_NOT_FOUND", "error": "no"}))
    assert await hs.api.profile(fred) == {"displayname": "Fred"}     # non-strings dropped
    with pytest.raises(MatrixError) as exc:
        await hs.api.profile(remote.user("ghost"))
    assert (exc.value.status, exc.value.errcode) == (404, "M_NOT_FOUND")
    with pytest.raises(MatrixError) as exc:
        await hs.api.profile(hs.user("nobody"))
    assert (exc.value.status, exc.value.errcode) == (404, "M_NOT_FOUND")


async def test_profile_of_another_server_cannot_be_set(hs):
    with pytest.raises(MatrixError) as exc:
        await hs.api.put_profile("@mallory:remote.test:8448", "Mallory")
    assert exc.value.status == 400


def handler_app(seen: list, delay: float = 0.0):
    async def answer(request):
        seen.append(dict(request.query_params))
        await asyncio.sleep(delay)
        return JSONResponse({"answer": 42, "origin": request.query_params.get("origin")})
    return Starlette(routes=[Route("/q", answer)])


async def test_other_query_types_go_to_the_registered_handler(hs, remote, monkeypatch):
    assert errcode(await ask(remote, hs, "com.example.thing", a="1")) == (404, "M_UNRECOGNIZED")
    seen: list = []
    hs.transport_app.state.svc.query_http = httpx.AsyncClient(
        transport=httpx.ASGITransport(handler_app(seen)))
    await hs.api.put_query_handler("com.example.thing", "http://homeserver.local/q")
    r = await ask(remote, hs, "com.example.thing", a="1", origin="forged.test")
    assert r.status_code == 200, r.text
    assert r.json() == {"answer": 42, "origin": remote.server_name}
    assert seen == [{"a": "1", "origin": remote.server_name}]      # the verified origin, not theirs
    assert errcode(await ask(remote, hs, "com.example.other")) == (404, "M_UNRECOGNIZED")
    with pytest.raises(MatrixError) as exc:
        await hs.api.put_query_handler("profile", "http://homeserver.local/q")
    assert exc.value.status == 400


async def test_a_slow_handler_times_out(hs, remote, monkeypatch):
    monkeypatch.setattr(queries, "QUERY_HANDLER_TIMEOUT_S", 0.2)
    hs.transport_app.state.svc.query_http = httpx.AsyncClient(
        transport=httpx.ASGITransport(handler_app([], delay=2.0)))
    await hs.api.put_query_handler("com.example.slow", "http://homeserver.local/q")
    r = await ask(remote, hs, "com.example.slow")
    assert errcode(r) in ((504, "M_UNKNOWN"),), r.text


async def test_joins_and_invites_carry_our_users_profiles(hs, remote):
    await hs.api.put_profile(hs.user("bob"), "Bob B", "mxc://ours.test/b")
    await hs.api.put_profile(hs.user("carol"), "Carol")
    await hs.api.put_profile(hs.user("alice"), "Alice A")
    room_id = await hs.api.create_room(hs.user("alice"), room_version="12", preset="public_chat")
    creator = next(e for e in await hs.api.state(room_id)
                   if e["type"] == "m.room.member" and e["state_key"] == hs.user("alice"))
    assert creator["content"] == {"membership": "join", "displayname": "Alice A"}
    join_id = await hs.api.join(room_id, hs.user("bob"))
    invite_id = await hs.api.invite(room_id, hs.user("alice"), hs.user("carol"))
    recs = await hs.records(join_id, invite_id)
    assert recs[join_id]["event"]["content"] == {"membership": "join", "displayname": "Bob B",
                                                 "avatar_url": "mxc://ours.test/b"}
    assert recs[invite_id]["event"]["content"] == {"membership": "invite", "displayname": "Carol"}


async def test_our_remote_join_carries_the_profile(hs, remote):
    await hs.api.put_profile(hs.user("alice"), "Alice A")
    room = remote.create_room(version="12")
    remote.serve_joins(room)
    eid = await hs.api.join(room.room_id, hs.user("alice"), servers=[remote.server_name])
    [req] = remote.calls("PUT", FED + "/v2/send_join/{room_id}/{event_id}")
    assert req.json["content"] == {"membership": "join", "displayname": "Alice A"}
    assert (await hs.records(eid))[eid]["event"]["content"]["displayname"] == "Alice A"
