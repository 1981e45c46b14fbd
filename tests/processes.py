"""Real processes for end-to-end tests: whole homeservers started the way `fedstack up`
starts them (four uvicorn processes, HTTPS federation on loopback), and a callback
receiver running a real HTTP server in a thread. Every process is stopped by its PID.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from starlette.responses import Response

from fedstack.cli import Homeserver, free_port


def database_for(data_dir: Path) -> str:
    """The database_url of a homeserver in `data_dir` ("": its own sqlite file). The e2e
    tests replace it for each database engine (tests/e2e/conftest.py)."""
    return ""


def start_homeserver(data_dir: Path, **extra) -> Homeserver:
    port, api_port = free_port(), free_port()
    settings = dict(allow_private_destinations=True, verify_tls=False, backoff_min_s=0.2,
                    backoff_max_s=2.0, database_url=database_for(data_dir))
    settings.update(extra)
    hs = Homeserver.configure(f"127.0.0.1:{port}", str(data_dir), port, api_port, **settings)
    hs.start()
    return hs


def api_url(hs: Homeserver) -> str:
    return f"http://127.0.0.1:{hs.ports['messaging']}"


def api_headers(hs: Homeserver) -> dict[str, str]:
    """The domain API's bearer token (the data directory's `api_token`)."""
    return {"authorization": f"Bearer {hs.settings.token()}"}


class CallbackServer:
    """Records callback bodies; thread-safe. `url` is what subscriptions should POST to."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.fail_next = 0
        self._lock = threading.Lock()
        app = FastAPI()

        @app.post("/callback")
        async def callback(request: Request):
            body = await request.json()
            with self._lock:
                if self.fail_next > 0:
                    self.fail_next -= 1
                    return Response(status_code=500)
                self.bodies.append(body)
            return {}

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/callback"
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                     log_level="warning", access_log=False))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> "CallbackServer":
        self._thread.start()
        while not self._server.started:
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)

    def events(self, subscription_id: str) -> list[dict]:
        with self._lock:
            return [e for b in self.bodies if b["subscription_id"] == subscription_id
                    for e in b["events"]]

    def wait_for(self, subscription_id: str, predicate, timeout: float = 60.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            evs = self.events(subscription_id)
            if predicate(evs):
                return evs
            time.sleep(0.05)
        raise AssertionError(f"timed out with {len(self.events(subscription_id))} events delivered")
