"""One internal hop, measured: CPU per request of the client and of the server.

    python -m bench.hop [--requests 4000]

Clients: aiohttp and `shared.http1` (what internal hops use). Servers: a uvicorn process
running an app made like ours (`shared.routing.new_app`, the internal-secret and body-limit
middleware, 16 other routes) whose POST route is declared with FastAPI, once as declared
and once served lean (`shared.routing.serve_lean`). Each row: wall time per request one
at a time, the server process's CPU per request, and this (client) process's CPU per
request. These figures are why the internal hops use http1 and the per-event routes are
served lean.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import time

from bench.common import cpu_seconds

_SERVER = r'''
import sys, uvicorn
from fastapi import Request
from pydantic import BaseModel
from shared.routing import BodyLimitMiddleware, new_app, serve_lean

class Body(BaseModel):
    sender: str
    content: dict

app = new_app("hop", "s3cret")
app.add_middleware(BodyLimitMiddleware, max_bytes=1 << 20)
for i in range(16):
    app.add_api_route(f"/_internal/hop/v1/other{i}/{{x}}", lambda x: {}, methods=["POST"])

@app.post("/_internal/hop/v1/rooms/{room_id}/send")
async def send(room_id: str, body: Body, request: Request):
    return {"event_id": "$" + str(len(body.content["body"]))}

if sys.argv[2] == "lean":
    serve_lean(app, send)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            access_log=False, loop="uvloop", http="httptools", ws="none", lifespan="off")
'''

BODY = b'{"sender": "@a:hs", "content": {"msgtype": "m.text", "body": "' + b"x" * 300 + b'"}}'
PATH = "/_internal/hop/v1/rooms/%21room%3Ahs/send"
HEADERS = {"x-fedstack-secret": "s3cret", "content-type": "application/json"}


async def _client(kind: str, url: str):
    """(request coroutine factory, close)."""
    if kind == "aiohttp":
        import aiohttp
        session = aiohttp.ClientSession(headers=HEADERS)

        async def one():
            async with session.post(url + PATH, data=BODY) as r:
                assert r.status == 200, await r.read()
                await r.read()
        return one, session.close
    from shared.http1 import Http1Pool
    pool = Http1Pool(url, timeout=10, headers=HEADERS)

    async def one():
        status, body = await pool.request("POST", PATH, BODY)
        assert status == 200, body
    return one, pool.aclose


async def _measure(server: str, client: str, n: int) -> dict:
    from fedstack.cli import free_port
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", _SERVER, str(port), server], env=env)
    try:
        one, close = await _client(client, f"http://127.0.0.1:{port}")
        for _ in range(100):        # until the server is up
            try:
                await one()
                break
            except Exception:  # noqa: BLE001 - not listening yet
                await asyncio.sleep(0.1)
        for _ in range(300):
            await one()
        c0, s0 = cpu_seconds(proc.pid), resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        for _ in range(n):
            await one()
        wall = time.perf_counter() - t0
        c1, s1 = cpu_seconds(proc.pid), resource.getrusage(resource.RUSAGE_SELF)
        await close()
    finally:
        proc.terminate()
        proc.wait()
    own = s1.ru_utime + s1.ru_stime - s0.ru_utime - s0.ru_stime
    return {"server": server, "client": client, "wall_us": wall / n * 1e6,
            "server_cpu_us": (c1 - c0) / n * 1e6, "client_cpu_us": own / n * 1e6}


async def main(n: int) -> None:
    print("| server route | client | wall µs/request | server CPU µs | client CPU µs |")
    print("|---|---|---|---|---|")
    for server in ("fastapi", "lean"):
        for client in ("aiohttp", "http1"):
            r = await _measure(server, client, n)
            print(f"| {server} | {client} | {r['wall_us']:.0f} | {r['server_cpu_us']:.0f} "
                  f"| {r['client_cpu_us']:.0f} |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=4000)
    import uvloop
    uvloop.install()
    asyncio.run(main(ap.parse_args().requests))
