"""The service under test, in-process or at `--base-url`.

Every service directory (`tests/contract/<service>/conftest.py`) defines one sync fixture,
`service_app`, returning `(app, settings)`: its app built by `create_app(settings, **fakes)`.
Tests then talk to the service only through these fixtures:

- `service`: a `ServiceUnderTest` (its URL, settings, and in-process the app itself);
- `service_client`: an httpx client that sends the internal secret, as the layers' typed
  clients do;
- `public_client`: the same without the secret (what a stranger sends).

Without --base-url the app runs in this process (its lifespan entered) behind an httpx
ASGITransport. With --base-url, `service_app` (and so every fake) is never built: the
clients point at the URL, and the settings come from FEDSTACK_* variables.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from shared.internal import SECRET_HEADER
from shared.settings import Settings


@dataclass
class ServiceUnderTest:
    base_url: str
    settings: Settings
    transport: httpx.AsyncBaseTransport | None = None   # in-process: the app's ASGI transport
    app: object | None = None                            # in-process: the FastAPI app

    @property
    def secret(self) -> str:
        return self.settings.secret()

    def client(self, *, secret: bool = True, token: bool = True) -> httpx.AsyncClient:
        """`secret`: the internal secret header; `token`: the domain API token (the
        messaging API refuses requests without it)."""
        headers = {SECRET_HEADER: self.secret} if secret else {}
        if token and self.settings.token():
            headers["authorization"] = f"Bearer {self.settings.token()}"
        return httpx.AsyncClient(base_url=self.base_url, transport=self.transport,
                                 headers=headers, verify=self.settings.verify_tls, timeout=30.0)


@pytest.fixture
def data_dir(tmp_path):
    """A fresh data directory, on tmpfs when there is one: sqlite's fsyncs on a real disk
    cost about 0.1 s per fresh database, and durability is the crash tests' subject."""
    if not os.path.isdir("/dev/shm") or not os.access("/dev/shm", os.W_OK):
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="fedstack-contract-", dir="/dev/shm"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def _service_app(request: pytest.FixtureRequest, base_url):
    """The in-process (app, settings), built only when no --base-url is given."""
    return None if base_url else request.getfixturevalue("service_app")


@pytest.fixture
async def service(_service_app, base_url, remote_settings):
    if base_url:
        yield ServiceUnderTest(base_url, remote_settings)
        return
    app, settings = _service_app
    async with app.router.lifespan_context(app):
        yield ServiceUnderTest("http://service.test", settings, httpx.ASGITransport(app=app), app)


@pytest.fixture
async def service_client(service):
    async with service.client() as client:
        yield client


@pytest.fixture
async def public_client(service):
    async with service.client(secret=False) as client:
        yield client
