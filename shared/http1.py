"""A minimal HTTP/1.1 client for the internal hops between our own services.

Why not aiohttp here: an internal request is small JSON to a uvicorn we run, on loopback,
keep-alive; measured on these machines aiohttp's client spends ~110-160 us of CPU per such
request, this one ~30 us (`bench/hop.py`), and at one event in flight an event makes seven
internal hops. aiohttp stays for what leaves the homeserver (federation over TLS, webhook
callbacks to arbitrary URLs), where its redirects, proxies and TLS handling matter.

Invariants:
- one request at a time per connection; a connection is reused only after its response was
  read whole and the server allowed keep-alive;
- responses are parsed by httptools (llhttp: the parser uvicorn uses), so Content-Length,
  chunked bodies and close-delimited bodies are all handled;
- a request that fails on a reused connection before any byte of the answer arrived is
  retried once on a new connection (the server closed it while idle; every internal route
  is safe to repeat, architecture.md); `ConnectionError` means the server was not reached;
- at most `limit` connections are open at once; waiting for one counts against `timeout`.
"""
from __future__ import annotations

import asyncio

import httptools


class _Connection(asyncio.Protocol):
    """One keep-alive connection; `request` sends and waits for one whole response."""

    def __init__(self):
        self.transport = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future | None = None
        self._body: list[bytes] = []
        self._got_bytes = False
        self.reusable = False

    # -- asyncio.Protocol
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes):
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(OSError(f"bad HTTP response: {exc}"))
            self.transport.close()

    def connection_lost(self, exc):
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            try:            # a close-delimited body ends here
                self._parser.feed_data(b"")
            except httptools.HttpParserError:
                pass
        if self._got_bytes:     # part of an answer came: the request was seen, not retried here
            self._fail(OSError("connection closed before the response ended"))
        else:
            self._fail(_Retryable(ConnectionResetError("connection closed before any answer")))

    # -- httptools callbacks
    def on_body(self, body: bytes):
        self._body.append(body)

    def on_message_complete(self):
        self.reusable = self._parser.should_keep_alive()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result((self._parser.get_status_code(), b"".join(self._body)))

    def _fail(self, exc: BaseException):
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    async def request(self, head: bytes, body: bytes | None) -> tuple[int, bytes]:
        self._waiter = asyncio.get_running_loop().create_future()
        self._body = []
        self._got_bytes = False
        self.reusable = False
        self.transport.write(head + body if body else head)
        try:
            return await self._waiter
        finally:
            self._waiter = None


class _Retryable(Exception):
    """The server closed a reused connection before answering: send again on a new one."""

    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.cause = cause


class Http1Pool:
    """Keep-alive connections to one `http://host:port` origin."""

    def __init__(self, base_url: str, *, timeout: float, limit: int = 64,
                 headers: dict[str, str] | None = None):
        if not base_url.startswith("http://"):
            raise ValueError(f"internal URL must be http://host:port, got {base_url!r}")
        hostport = base_url[len("http://"):].split("/", 1)[0]
        self.host, _, port = hostport.rpartition(":")
        self.host = self.host.strip("[]") or hostport
        self.port = int(port) if port else 80
        self._prefix = base_url[len("http://") + len(hostport):].rstrip("/").encode()
        self._hostline = hostport.encode()
        self._headers = b"".join(b"%s: %s\r\n" % (k.encode("latin-1"), v.encode("latin-1"))
                                 for k, v in (headers or {}).items())
        self._timeout = timeout
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(limit)
        self._open: set[_Connection] = set()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(_Connection, self.host, self.port)
        except OSError as exc:
            raise ConnectionError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        self._open.add(conn)
        return conn

    def _head(self, method: str, target: bytes, body: bytes | None, extra: dict | None) -> bytes:
        head = b"%s %s%s HTTP/1.1\r\nhost: %s\r\n%scontent-length: %d\r\n" % (
            method.encode(), self._prefix, target, self._hostline, self._headers,
            len(body) if body else 0)
        for k, v in (extra or {}).items():
            head += b"%s: %s\r\n" % (k.encode("latin-1"), v.encode("latin-1"))
        return head + b"\r\n"

    async def request(self, method: str, target: str, body: bytes | None = None,
                      headers: dict | None = None) -> tuple[int, bytes]:
        """(status, body) of one request; `target` is the path and query, already encoded."""
        head = self._head(method, target.encode("ascii"), body, headers)
        async with asyncio.timeout(self._timeout):
            async with self._slots:
                for attempt in (0, 1):
                    conn = None
                    while self._idle and conn is None:
                        c = self._idle.pop()
                        conn = None if c.closed else c
                    fresh = conn is None
                    if fresh:
                        conn = await self._connect()
                    try:
                        result = await conn.request(head, body)
                    except _Retryable as exc:
                        self._drop(conn)
                        if fresh or attempt:
                            raise exc.cause
                        continue
                    except BaseException:
                        self._drop(conn)    # a cancelled or failed exchange leaves it unusable
                        raise
                    if conn.reusable and not conn.closed:
                        self._idle.append(conn)
                    else:
                        self._drop(conn)
                    return result
        raise AssertionError("unreachable")

    def _drop(self, conn: _Connection) -> None:
        self._open.discard(conn)
        if conn.transport is not None and not conn.closed:
            conn.transport.close()

    async def aclose(self) -> None:
        for conn in list(self._open):
            self._drop(conn)
        self._idle.clear()
