"""shared.http1: the internal hops' HTTP/1.1 client, against real sockets on loopback.

The servers here are raw asyncio servers so each test can misbehave exactly as it needs
(close an idle connection, cut a response, answer chunked, never answer)."""
from __future__ import annotations

import asyncio

import pytest

from shared.http1 import Http1Pool


class _Server:
    """A loopback HTTP server whose answer to each request is `respond(request_bytes)`:
    bytes to write, None to close the connection without answering, or ("close", bytes)
    to write those bytes and then close."""

    def __init__(self, respond):
        self.respond = respond
        self.connections = 0
        self.requests: list[bytes] = []
        self._writers = []

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc):
        for w in self._writers:
            w.close()
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader, writer):
        self.connections += 1
        self._writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                out = self.respond(head + body)
                if asyncio.iscoroutine(out):
                    out = await out
                if out is None:
                    break
                if isinstance(out, tuple):
                    writer.write(out[1])
                    await writer.drain()
                    break
                writer.write(out)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def test_keep_alive_reuses_one_connection_and_sends_headers_and_body():
    async with _Server(lambda req: _ok(req.split(b"\r\n\r\n", 1)[1] or b"{}")) as srv:
        pool = Http1Pool(srv.url, timeout=5, headers={"x-fedstack-secret": "s3"})
        for i in range(5):
            status, body = await pool.request("POST", f"/echo?i={i}", b'{"n": %d}' % i)
            assert (status, body) == (200, b'{"n": %d}' % i)
        assert srv.connections == 1
        first = srv.requests[0]
        assert first.startswith(b"POST /echo?i=0 HTTP/1.1\r\n")
        assert b"x-fedstack-secret: s3\r\n" in first and b"content-length: 8\r\n" in first
        await pool.aclose()


async def test_chunked_and_error_statuses_are_returned_whole():
    chunked = (b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n"
               b"5\r\n{\"a\":\r\n3\r\n 1}\r\n0\r\n\r\n")
    async with _Server(lambda req: chunked) as srv:
        pool = Http1Pool(srv.url, timeout=5)
        assert await pool.request("GET", "/x") == (404, b'{"a": 1}')
        assert await pool.request("GET", "/x") == (404, b'{"a": 1}')
        assert srv.connections == 1
        await pool.aclose()


async def test_connection_close_answer_is_not_reused():
    async with _Server(lambda req: _ok(b"{}", b"connection: close\r\n")) as srv:
        pool = Http1Pool(srv.url, timeout=5)
        for _ in range(3):
            assert await pool.request("GET", "/x") == (200, b"{}")
        assert srv.connections == 3
        await pool.aclose()


async def test_idle_connection_closed_by_server_is_retried_on_a_new_one():
    """The server answers once per connection, then closes it (as uvicorn does after its
    keep-alive timeout): the next request finds the closed connection and is sent again."""
    async with _Server(lambda req: _ok(b"{}")) as srv:
        pool = Http1Pool(srv.url, timeout=5)
        assert await pool.request("GET", "/1") == (200, b"{}")
        for w in srv._writers:     # server side closes the idle connection
            w.close()
        await asyncio.sleep(0.05)
        assert await pool.request("GET", "/2") == (200, b"{}")
        assert srv.connections == 2
        await pool.aclose()


async def test_reused_connection_that_dies_unanswered_is_retried_once():
    """Close-without-answer on a reused connection: retried on a fresh one, not lost."""
    calls = []

    def respond(req):
        calls.append(req)
        return None if len(calls) == 2 else _ok(b"{}")

    async with _Server(respond) as srv:
        pool = Http1Pool(srv.url, timeout=5)
        assert await pool.request("GET", "/a") == (200, b"{}")
        assert await pool.request("GET", "/b") == (200, b"{}")
        assert len(calls) == 3 and srv.connections == 2
        await pool.aclose()


async def test_fresh_connection_dying_unanswered_is_a_connection_error():
    async with _Server(lambda req: None) as srv:
        pool = Http1Pool(srv.url, timeout=5)
        with pytest.raises(ConnectionError):
            await pool.request("GET", "/x")
        await pool.aclose()


async def test_response_cut_midway_is_an_error_but_not_a_connection_error():
    partial = ("close", b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"a\"")
    async with _Server(lambda req: partial) as srv:
        pool = Http1Pool(srv.url, timeout=5)
        with pytest.raises(OSError) as info:
            await pool.request("GET", "/x")
        assert not isinstance(info.value, (ConnectionError, TimeoutError))
        assert srv.connections == 1
        await pool.aclose()


async def test_refused_is_connection_error_and_silence_is_timeout():
    async with _Server(lambda req: _ok(b"{}")) as srv:
        url = srv.url
    with pytest.raises(ConnectionError):            # nobody listens there any more
        await Http1Pool(url, timeout=5).request("GET", "/x")

    async def never(req):
        await asyncio.sleep(30)
    async with _Server(never) as srv:
        pool = Http1Pool(srv.url, timeout=0.3)
        with pytest.raises(TimeoutError):
            await pool.request("GET", "/x")
        await pool.aclose()


async def test_garbage_answer_is_an_error():
    async with _Server(lambda req: b"SPDY/9 nonsense\r\n\r\n") as srv:
        pool = Http1Pool(srv.url, timeout=5)
        with pytest.raises(OSError):
            await pool.request("GET", "/x")
        await pool.aclose()


async def test_concurrent_requests_use_separate_connections_within_the_limit():
    gate = asyncio.Event()

    async def slow(req):
        await gate.wait()
        return _ok(b"{}")

    async with _Server(slow) as srv:
        pool = Http1Pool(srv.url, timeout=5, limit=3)
        tasks = [asyncio.create_task(pool.request("GET", f"/{i}")) for i in range(6)]
        await asyncio.sleep(0.2)
        assert srv.connections == 3          # the other three wait for a free slot
        gate.set()
        assert [await t for t in tasks] == [(200, b"{}")] * 6
        assert srv.connections == 3
        await pool.aclose()
