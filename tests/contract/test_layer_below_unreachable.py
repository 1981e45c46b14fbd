"""Each service with the layer it calls gone: every request that needs that layer is
answered 503 M_UNKNOWN (shared.errors.LayerUnavailable, raised by shared.internal's
client), never 500 and never a traceback or an internal address in the body.

Each app runs in this process, but its internal clients are the real ones (shared.http1
over real sockets) pointed at a port that refuses connections (bound, never listening,
so nobody else takes it), or at a server that accepts the request and hangs up halfway
through its answer. Only the transport's remote peer is a fake (it signs the requests)."""
from __future__ import annotations

import asyncio
import socket

import httpx
import orjson
import pytest

from services.messaging.app import create_app as messaging_app
from services.pdu.app import create_app as pdu_app
from services.transaction.app import create_app as transaction_app
from services.transport.app import create_app as transport_app
from shared.contracts import pdu as pdu_c
from shared.contracts import transaction as tx_c
from shared.internal import SECRET_HEADER, InternalClient
from tests.contract.helpers import SECRET, FakeRemote, make_settings

FED = "/_matrix/federation"
UNAVAILABLE = {"errcode": "M_UNKNOWN",
               "error": "a service of this homeserver is unavailable; try again later"}


@pytest.fixture
def refusing_url():
    """http://127.0.0.1:<port> where a connection is refused: bound but not listening."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


@pytest.fixture
async def cut_off_url():
    """http://127.0.0.1:<port> of a server that reads a request, sends the start of an
    answer (status line, headers, part of the body) and closes the connection."""
    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                     b"content-length: 100\r\n\r\n{\"half\":")
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()
    await server.wait_closed()


@pytest.fixture(params=["refused", "cut_off"])
def dead_url(request):
    return request.getfixturevalue("refusing_url" if request.param == "refused"
                                   else "cut_off_url")


def settings_below(tmp_path, url):
    return make_settings(tmp_path, transaction_url=url, pdu_url=url, transport_url=url,
                         messaging_url=url)


async def answers(app, method, path, *, headers=None, body=None):
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://service.test", timeout=30) as client:
            return await client.request(method, path, headers=headers,
                                        content=orjson.dumps(body) if body is not None else None)


def assert_unavailable(resp, url):
    assert resp.status_code == 503, resp.text
    assert resp.json() == UNAVAILABLE
    assert url.split("//")[1] not in resp.text      # no internal address handed out


@pytest.mark.parametrize("method,path,body,below", [
    ("GET", FED + "/v1/event/$x", None, "pdu"),
    ("PUT", FED + "/v1/send/t1", {"origin": "remote.test", "origin_server_ts": 1, "pdus": []},
     "transaction"),
    ("GET", FED + "/v1/user/devices/@u:hs.test", None, "transaction"),
])
async def test_transport_with_the_layer_behind_it_gone(tmp_path, dead_url, method, path, body,
                                                       below):
    remote = FakeRemote("remote.test")
    app = transport_app(settings_below(tmp_path, dead_url),
                        federation_transports={"remote.test": httpx.ASGITransport(app=remote.app)})
    auth = remote.sign(method, path, "hs.test", body)
    resp = await answers(app, method, path, headers={"Authorization": auth}, body=body)
    assert_unavailable(resp, dead_url)
    assert not remote.unexpected


async def test_messaging_with_pdu_and_transaction_gone(tmp_path, dead_url):
    settings = settings_below(tmp_path, dead_url)
    bearer = {"authorization": f"Bearer {settings.token()}"}
    resp = await answers(messaging_app(settings), "GET", "/v1/rooms/!r:hs.test/state",
                         headers=bearer)                                       # -> pdu
    assert_unavailable(resp, dead_url)
    resp = await answers(messaging_app(settings), "GET", "/v1/rooms/!r:hs.test/events",
                         headers=bearer)                                       # -> transaction
    assert_unavailable(resp, dead_url)


async def test_pdu_with_transaction_gone(tmp_path, dead_url):
    resp = await answers(pdu_app(settings_below(tmp_path, dead_url)), "GET",
                         pdu_c.STATE.format(room_id="!r:hs.test"),
                         headers={SECRET_HEADER: SECRET})
    assert_unavailable(resp, dead_url)


async def test_transaction_with_transport_gone(tmp_path, dead_url):
    resp = await answers(transaction_app(settings_below(tmp_path, dead_url)), "GET",
                         tx_c.SERVER_KEYS.format(server_name="remote.test"),
                         headers={SECRET_HEADER: SECRET})
    assert_unavailable(resp, dead_url)


async def test_a_layer_that_never_answers_is_503_after_the_timeout_and_not_asked_twice(
        tmp_path, refusing_url):
    """A replica that took the request but says nothing: 503 once the client's timeout
    ends; the request is not sent again to the next replica (it may have been done)."""
    seen = []

    async def hang(reader, writer):
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        await asyncio.sleep(30)
    servers = [await asyncio.start_server(hang, "127.0.0.1", 0) for _ in range(2)]
    urls = ",".join(f"http://127.0.0.1:{s.sockets[0].getsockname()[1]}" for s in servers)
    remote = FakeRemote("remote.test")
    app = transport_app(settings_below(tmp_path, refusing_url),
                        pdu_client=InternalClient(urls, SECRET, timeout=0.5),
                        federation_transports={"remote.test": httpx.ASGITransport(app=remote.app)})
    path = FED + "/v1/event/$x"
    try:
        resp = await answers(app, "GET", path,
                             headers={"Authorization": remote.sign("GET", path, "hs.test")})
    finally:
        for s in servers:
            s.close()
    assert_unavailable(resp, urls)
    assert [h.split(b" HTTP/")[0] for h in seen] == [b"GET /_internal/pdu/v1/federation/v1/event/$x"]
