"""Servers the discovery tests point names at: HTTPS sites with certificates of the test CA,
and plain listeners that only count connections. All on loopback addresses of one /16
chosen at random per session (`LoopbackNet`), so well-known ports (443, 8448) can be bound
(tests run as root) without meeting anything else on 127.0.0.1.
"""
from __future__ import annotations

import asyncio
import itertools
import random
import secrets
import ssl

import orjson
from aiohttp import web

from tests.fakes.ca import TestCA


class LoopbackNet:
    def __init__(self):
        self.prefix = f"127.{random.SystemRandom().randint(100, 250)}"
        self._n = itertools.count(1)
        self.allowlist = f"{self.prefix}.0.0/16,::1/128"   # ip_range_allowlist of the tests

    def ip(self) -> str:
        n = next(self._n)
        return f"{self.prefix}.{n // 250}.{n % 250 + 1}"

    @staticmethod
    def name(label: str) -> str:
        """A fresh DNS name under the test domain."""
        return f"{label}-{secrets.token_hex(3)}.fedstack.test"


class Site:
    """An HTTPS server at ip:port presenting a certificate for `cert_names`. Records each
    request (sni, host, method, path) and each TLS handshake's SNI. Answers
    `routes[path]` = (status, headers, body: bytes or JSON-able), else 200 {"site": label}."""

    def __init__(self, ca: TestCA, ip: str, port: int, *cert_names: str, label: str = ""):
        self.ca, self.ip, self.port, self.cert_names = ca, ip, port, cert_names
        self.label = label or f"{ip}:{port}"
        self.routes: dict[str, tuple] = {}
        self.requests: list[dict] = []
        self.handshakes: list[str | None] = []
        self._sni: dict[int, str | None] = {}
        self._runner = None

    def _context(self) -> ssl.SSLContext:
        cert, key = self.ca.issue(*self.cert_names)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)

        def on_sni(sslobj, server_name, _ctx):
            self.handshakes.append(server_name)
            self._sni[id(sslobj)] = server_name
        ctx.sni_callback = on_sni
        return ctx

    async def start(self) -> "Site":
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.ip, self.port, ssl_context=self._context(),
                          reuse_address=True).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        sslobj = request.transport.get_extra_info("ssl_object") if request.transport else None
        self.requests.append({"sni": self._sni.get(id(sslobj), "?"), "host": request.host,
                              "method": request.method, "path": request.path_qs,
                              "authorization": request.headers.get("Authorization")})
        status, headers, body = self.routes.get(request.path, (200, {}, {"site": self.label}))
        if callable(body):
            return await body(request)
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        return web.Response(status=status, body=data, headers=headers,
                            content_type=None if "Content-Type" in headers else "application/json")


class Listener:
    """A plain TCP listener that counts connections and closes them."""

    def __init__(self, ip: str, port: int = 0):
        self.ip, self.port = ip, port
        self.connections = 0
        self._server = None

    async def start(self) -> "Listener":
        async def on_conn(_r, w):
            self.connections += 1
            w.close()
        self._server = await asyncio.start_server(on_conn, self.ip, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self._server.close()
        await self._server.wait_closed()
