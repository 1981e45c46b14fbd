"""Federation queries at the transport (issue #14, services/transport/routes/queries.py):
`GET /_matrix/federation/v1/query/{queryType}`, after X-Matrix, answered from what the
homeserver told the stack (the transaction service's directory routes, faked here with the
shapes of shared/contracts/directory.py) and the pdu service's room servers, or by the
query handler the homeserver registered.

- profile: `user_id` (required), `field` displayname / avatar_url; 404 M_NOT_FOUND for a
  user of ours with no profile or of another server (the latter asks nobody); 400 for bad
  parameters (asks nobody).
- directory: `room_alias`; `{room_id, servers}` with ours first, then the alias's, then the
  room's joined servers (pdu), each once; 404 / 400 as for profile.
- any other type: the registered handler gets `GET url?<params>&origin=<verified origin>`;
  its JSON object is passed through with its status; none registered 404 M_UNRECOGNIZED;
  a handler that fails 502, that times out 504."""
from __future__ import annotations

import asyncio
from urllib.parse import parse_qsl, quote

import httpx
import orjson
import pytest
from fastapi import Request
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.transport.routes import queries
from shared.contracts import directory as d
from shared.contracts import pdu as pdu_c
from shared.errors import MatrixError
from tests.contract.transport.conftest import REMOTE
from tests.contract.transport.test_inbound_auth import put_signed

Q = "/_matrix/federation/v1/query/"


class Directory:
    """The transaction service's profile, alias and query-handler routes, and the pdu
    service's room servers, as fakes that record what they are asked."""

    def __init__(self, fake_transaction, fake_pdu):
        self.profiles: dict[str, dict] = {}
        self.aliases: dict[str, dict] = {}
        self.handlers: dict[str, str] = {}
        self.room_servers: dict[str, list[str]] = {}
        self.calls: list[tuple[str, str]] = []
        self.raw_paths: list[str] = []          # as sent: the escaping of IDs
        tx, pdu = fake_transaction.app, fake_pdu.app

        def lookup(kind: str, table: dict, param: str):
            async def route(request: Request):
                key = request.path_params[param]
                self.calls.append((kind, key))
                self.raw_paths.append(request.scope["raw_path"].decode())
                if key not in table:
                    raise MatrixError(404, "M_NOT_FOUND", f"no such {kind}")
                body = ({"query_type": key, "url": table[key]} if kind == "handler"
                        else {"servers": table[key]} if kind == "servers" else table[key])
                return Response(orjson.dumps(body), media_type="application/json")
            return route
        tx.add_api_route(d.PROFILE, lookup("profile", self.profiles, "user_id"), methods=["GET"])
        tx.add_api_route(d.ALIAS, lookup("alias", self.aliases, "alias"), methods=["GET"])
        tx.add_api_route(d.QUERY_HANDLER, lookup("handler", self.handlers, "query_type"), methods=["GET"])
        pdu.add_api_route(pdu_c.ROOM_SERVERS, lookup("servers", self.room_servers, "room_id"), methods=["GET"])


@pytest.fixture
def directory(fake_transaction, fake_pdu):
    return Directory(fake_transaction, fake_pdu)


async def ask(client, remote, query_type: str, params: list[tuple[str, str]] | None = None):
    qs = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params or [])
    return await put_signed(client, remote, Q + query_type + ("?" + qs if qs else ""), None, method="GET")


def error(resp) -> tuple[int, str]:
    assert resp.headers["content-type"].startswith("application/json"), resp.text
    return resp.status_code, resp.json().get("errcode")


# ------------------------------------------------------------------ profile

ALICE = "@alice:hs.test"


async def test_profile_answers_what_the_homeserver_told_us(public_client, remote, directory):
    directory.profiles[ALICE] = {"displayname": "Alice A", "avatar_url": "mxc://hs.test/a"}
    resp = await ask(public_client, remote, "profile", [("user_id", ALICE)])
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"displayname": "Alice A", "avatar_url": "mxc://hs.test/a"}
    assert directory.calls == [("profile", ALICE)]
    assert d.PROFILE.format(user_id=quote(ALICE, safe="")) in directory.raw_paths


@pytest.mark.parametrize("stored,field,expected", [
    ({"displayname": "Alice A", "avatar_url": "mxc://hs.test/a"}, "displayname", {"displayname": "Alice A"}),
    ({"displayname": "Alice A", "avatar_url": "mxc://hs.test/a"}, "avatar_url", {"avatar_url": "mxc://hs.test/a"}),
    ({"displayname": "Alice A"}, "avatar_url", {}),
    ({}, "displayname", {})])
async def test_profile_field_is_honoured(public_client, remote, directory, stored, field, expected):
    directory.profiles[ALICE] = stored
    resp = await ask(public_client, remote, "profile", [("user_id", ALICE), ("field", field)])
    assert resp.status_code == 200, resp.text
    assert resp.json() == expected


async def test_profile_of_a_user_we_know_nothing_of_is_404(public_client, remote, directory):
    resp = await ask(public_client, remote, "profile", [("user_id", "@nobody:hs.test")])
    assert error(resp) == (404, "M_NOT_FOUND")
    assert directory.calls == [("profile", "@nobody:hs.test")]


@pytest.mark.parametrize("user", ["@bob:remote.test", "@bob:hs.test.evil", "alice", "#alice:hs.test"])
async def test_profile_of_another_server_is_404_and_asks_nobody(public_client, remote, directory, user):
    directory.profiles[user] = {"displayname": "should not leak"}
    resp = await ask(public_client, remote, "profile", [("user_id", user)])
    assert error(resp) == (404, "M_NOT_FOUND")
    assert directory.calls == []


@pytest.mark.parametrize("params,errcode", [
    ([], "M_MISSING_PARAM"), ([("user_id", "")], "M_MISSING_PARAM"),
    ([("user_id", ALICE), ("field", "bio")], "M_INVALID_PARAM")])
async def test_profile_bad_parameters_are_400_and_ask_nobody(public_client, remote, directory, params, errcode):
    directory.profiles[ALICE] = {"displayname": "Alice A"}
    resp = await ask(public_client, remote, "profile", params)
    assert error(resp) == (400, errcode)
    assert directory.calls == []


# ------------------------------------------------------------------ directory

ALIAS = "#town:hs.test"
ROOM = "!town:hs.test"


async def test_directory_lists_ours_then_the_alias_servers_then_the_room_servers(public_client, remote, directory):
    directory.aliases[ALIAS] = {"room_id": ROOM, "servers": ["a.test", "hs.test"]}
    directory.room_servers[ROOM] = ["hs.test", "c.test", "a.test", "b.test"]
    resp = await ask(public_client, remote, "directory", [("room_alias", ALIAS)])
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"room_id": ROOM, "servers": ["hs.test", "a.test", "b.test", "c.test"]}
    assert directory.calls == [("alias", ALIAS), ("servers", ROOM)]


async def test_directory_of_a_room_the_pdu_service_does_not_hold(public_client, remote, directory):
    directory.aliases[ALIAS] = {"room_id": ROOM, "servers": ["a.test"]}
    resp = await ask(public_client, remote, "directory", [("room_alias", ALIAS)])
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"room_id": ROOM, "servers": ["hs.test", "a.test"]}


async def test_directory_unknown_alias_is_404(public_client, remote, directory):
    resp = await ask(public_client, remote, "directory", [("room_alias", "#ghost:hs.test")])
    assert error(resp) == (404, "M_NOT_FOUND")
    assert directory.calls == [("alias", "#ghost:hs.test")]


@pytest.mark.parametrize("params,status,errcode", [
    ([("room_alias", "#town:remote.test")], 404, "M_NOT_FOUND"),
    ([("room_alias", "@town:hs.test")], 404, "M_NOT_FOUND"),
    ([], 400, "M_MISSING_PARAM")])
async def test_directory_refusals_ask_nobody(public_client, remote, directory, params, status, errcode):
    directory.aliases["#town:remote.test"] = {"room_id": ROOM, "servers": []}
    resp = await ask(public_client, remote, "directory", params)
    assert error(resp) == (status, errcode)
    assert directory.calls == []


# ------------------------------------------------------------------ registered handlers

def handler_app(seen: list, answer=None, delay: float = 0.0):
    async def route(request):
        seen.append(list(request.query_params.multi_items()))
        if delay:
            await asyncio.sleep(delay)
        if answer is not None:
            return answer
        return JSONResponse({"answer": 42})
    return Starlette(routes=[Route("/q", route)])


@pytest.fixture
async def use_handler(service):
    """Point the transport's query-handler client at an in-process app."""
    clients = []

    def use(app):
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
        clients.append(client)
        service.app.state.svc.query_http = client
    yield use
    for client in clients:
        await client.aclose()


async def test_no_handler_registered_is_404_unrecognized(public_client, remote, directory):
    resp = await ask(public_client, remote, "com.example.thing", [("a", "1")])
    assert error(resp) == (404, "M_UNRECOGNIZED")
    assert directory.calls == [("handler", "com.example.thing")]


async def test_the_handler_gets_the_parameters_and_the_verified_origin(public_client, remote, directory,
                                                                      use_handler):
    seen: list = []
    use_handler(handler_app(seen))
    directory.handlers["com.example.thing"] = "http://homeserver.local/q"
    resp = await ask(public_client, remote, "com.example.thing",
                     [("a", "1"), ("a", "2"), ("origin", "forged.test"), ("b", "x y")])
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"answer": 42}
    assert seen == [[("a", "1"), ("a", "2"), ("b", "x y"), ("origin", REMOTE)]]


@pytest.mark.parametrize("status", [200, 400, 404])
async def test_the_handler_answer_passes_through_with_its_status(public_client, remote, directory,
                                                                 use_handler, status):
    body = {"errcode": "M_NOT_FOUND", "error": "theirs"} if status != 200 else {"x": [1, 2]}
    use_handler(handler_app([], JSONResponse(body, status_code=status)))
    directory.handlers["com.example.thing"] = "http://homeserver.local/q"
    resp = await ask(public_client, remote, "com.example.thing")
    assert (resp.status_code, resp.json()) == (status, body)


@pytest.mark.parametrize("answer", [JSONResponse({"errcode": "M_UNKNOWN", "error": "x"}, status_code=500),
                                    Response(b"not json", media_type="text/plain"),
                                    JSONResponse([1, 2, 3]),
                                    Response(b'{"big": "' + b"a" * (queries.MAX_ANSWER_BYTES + 1) + b'"}',
                                             media_type="application/json")])
async def test_a_failing_handler_is_502(public_client, remote, directory, use_handler, answer):
    use_handler(handler_app([], answer))
    directory.handlers["com.example.thing"] = "http://homeserver.local/q"
    resp = await ask(public_client, remote, "com.example.thing")
    assert error(resp) == (502, "M_UNKNOWN")


async def test_a_slow_handler_is_504(public_client, remote, directory, use_handler, monkeypatch):
    monkeypatch.setattr(queries, "QUERY_HANDLER_TIMEOUT_S", 0.2)
    use_handler(handler_app([], delay=3.0))
    directory.handlers["com.example.slow"] = "http://homeserver.local/q"
    resp = await ask(public_client, remote, "com.example.slow")
    assert error(resp) == (504, "M_UNKNOWN")


# the handler over a real socket, as a homeserver serves it (no injected client)

class OneShotServer:
    """A plain HTTP/1.1 server on 127.0.0.1: records request lines, answers `body` (or
    never answers when `hang`)."""

    def __init__(self, body: bytes = b'{"over": "tcp"}', hang: bool = False):
        self.body, self.hang, self.lines = body, hang, []

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        self.lines.append(head.split(b"\r\n", 1)[0].decode())
        if self.hang:
            await asyncio.sleep(10)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                     b"connection: close\r\n\r\n%s" % (len(self.body), self.body))
        await writer.drain()
        writer.close()


async def test_a_handler_over_a_real_socket(public_client, remote, directory):
    async with OneShotServer() as server:
        directory.handlers["com.example.tcp"] = f"http://127.0.0.1:{server.port}/q?fixed=1"
        resp = await ask(public_client, remote, "com.example.tcp", [("a", "1")])
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"over": "tcp"}
    [line] = server.lines
    method, target, _ = line.split(" ")
    assert method == "GET" and target.startswith("/q?")
    assert ("a", "1") in parse_qsl(target[3:]) and ("origin", REMOTE) in parse_qsl(target[3:])


async def test_a_handler_that_refuses_connections_is_502_and_one_that_hangs_504(public_client, remote,
                                                                              directory, monkeypatch):
    async with OneShotServer() as server:
        port = server.port                  # closed again below: nothing listens there
    directory.handlers["com.example.down"] = f"http://127.0.0.1:{port}/q"
    assert error(await ask(public_client, remote, "com.example.down")) == (502, "M_UNKNOWN")
    monkeypatch.setattr(queries, "QUERY_HANDLER_TIMEOUT_S", 0.3)
    async with OneShotServer(hang=True) as server:
        directory.handlers["com.example.hang"] = f"http://127.0.0.1:{server.port}/q"
        assert error(await ask(public_client, remote, "com.example.hang")) == (504, "M_UNKNOWN")


async def test_queries_need_x_matrix(public_client, directory):
    directory.profiles[ALICE] = {"displayname": "Alice A"}
    for path in (Q + "profile?user_id=" + quote(ALICE), Q + "directory?room_alias=%23town%3Ahs.test",
                 Q + "com.example.thing"):
        resp = await public_client.get(path)
        assert error(resp) == (401, "M_UNAUTHORIZED")
    assert directory.calls == []
