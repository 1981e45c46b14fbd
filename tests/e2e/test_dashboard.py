"""The live dashboard in a real headless Chromium (Debian's `chromium`, driven over the
DevTools protocol): two homeservers exchange traffic while one destination is down; the
page, given the API token once, plots and shows numbers that match `/metrics`. Its
screenshot is saved as `.cache/dashboard.png` (a CI artifact)."""
from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import httpx
import pytest
import uvicorn
import websockets
from prometheus_client.parser import text_string_to_metric_families

from fedstack.cli import free_port
from tests.harness import InProcessHomeserver, Receiver

ROOT = Path(__file__).resolve().parents[2]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--remote-debugging-port=0", "--window-size=1400,1100"]
# the series whose values hold still once the traffic stopped: compared exactly
STABLE = ("fedstack_destination_queue_depth", "fedstack_subscription_lag_positions",
          "fedstack_stream_head_position")


def chromium() -> str:
    """Debian's chromium, installed with apt-get when missing."""
    path = shutil.which("chromium")
    if path is None:
        subprocess.run(["apt-get", "update", "-qq"], check=False, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
                       check=True, timeout=900)
        path = shutil.which("chromium")
    assert path, "chromium could not be installed"
    return path


class Page:
    """One Chromium tab over the DevTools protocol (JSON over its websocket)."""

    def __init__(self, ws):
        self.ws = ws
        self.ids = itertools.count(1)

    async def send(self, method: str, **params):
        n = next(self.ids)
        await self.ws.send(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            msg = json.loads(await self.ws.recv())
            if msg.get("id") == n:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return msg["result"]

    async def eval(self, expression: str):
        r = await self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                            awaitPromise=True)
        if "exceptionDetails" in r:
            raise AssertionError(f"{expression[:80]}: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while True:
            value = await self.eval(expression)
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out waiting for {expression}"
            await asyncio.sleep(0.2)


@pytest.fixture
async def browser(tmp_path):
    profile = tmp_path / "chromium-profile"
    proc = subprocess.Popen([chromium(), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            assert proc.poll() is None, "chromium exited"
            assert time.monotonic() < deadline, "chromium did not start"
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split("\n")[0])
        targets = json.loads(await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list").read()))
        url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        async with websockets.connect(url, max_size=64 * 1024 * 1024) as ws:
            yield Page(ws)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
async def served(tmp_path):
    """Two in-process homeservers; A's messaging API also listens on a real port."""
    network: dict = {}
    a = InProcessHomeserver("a.test:8448", tmp_path / "a", network, Receiver())
    a.settings = a.settings.with_(backoff_min_s=30.0, backoff_max_s=60.0)
    b = InProcessHomeserver("b.test:8448", tmp_path / "b", network, Receiver())
    await a.start()
    await b.start()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(a.messaging_app, host="127.0.0.1", port=port,
                                           lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    yield a, b, f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task
    await a.stop()
    await b.stop()


def metrics_values(text: str) -> dict[tuple, float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def page_key(series: str) -> tuple:
    """`name{a="x",b="y"}` as the page shows it -> (name, sorted label items)."""
    name, _, rest = series.partition("{")
    labels = {}
    for part in filter(None, rest.rstrip("}").split('",')):
        k, _, v = part.partition('="')
        labels[k.strip(", ")] = v.rstrip('"')
    return name, tuple(sorted(labels.items()))


async def test_dashboard_shows_what_metrics_say(served, browser):
    a, b, url = served
    alice, bob = a.user("alice"), b.user("bob")
    room = await a.api.create_room(alice, preset="public_chat")
    await b.api.join(room, bob, servers=[a.server_name])
    sa = await a.api.subscribe("http://cb/callback", room_id=room, types=["m.room.message"])
    for i in range(5):      # B -> A: inbound traffic and deliveries on A
        await b.api.send(room, bob, "m.room.message", {"body": f"b{i}", "msgtype": "m.text"})
    await a.receiver.wait_for(lambda e: len(e) >= 5, subscription_id=sa)
    b.link.down = True      # A -> B: queued behind a backoff
    for i in range(7):
        await a.api.send(room, alice, "m.room.message", {"body": f"a{i}", "msgtype": "m.text"})
    await a.receiver.wait_for(lambda e: len(e) >= 12, subscription_id=sa)
    token = a.settings.token()

    page = browser
    await page.send("Emulation.setDeviceMetricsOverride", width=1400, height=1100,
                    deviceScaleFactor=1, mobile=False)
    await page.send("Page.navigate", url=url + "/dashboard")
    await page.wait_for("!!document.getElementById('token') && "
                        "!document.getElementById('login').classList.contains('hidden')")
    await page.eval(f"document.getElementById('token').value = {json.dumps(token)};"
                    "document.getElementById('go').click(); true")
    queue_key = f'fedstack_destination_queue_depth{{destination="{b.server_name}"}}'
    await page.wait_for(f"(document.querySelector('[data-series=\\'{queue_key}\\']') || {{}})"
                        ".textContent === '7'")
    polls = int(await page.eval("document.body.dataset.polls"))
    await page.wait_for(f"parseInt(document.body.dataset.polls) >= {polls + 2}")   # live
    assert await page.eval("document.querySelectorAll('.uplot canvas').length") >= 6
    assert await page.eval("sessionStorage.getItem('fedstack_api_token')") == token

    shown = await page.eval("Object.fromEntries([...document.querySelectorAll('[data-series]')]"
                            ".map(e => [e.dataset.series, e.textContent]))")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(a.messaging_app),
                                 base_url="http://m") as c:
        r = await c.get("/metrics", headers={"authorization": f"Bearer {token}"})
    truth = metrics_values(r.text)
    compared = 0
    for series, text in shown.items():
        key = page_key(series)
        assert key in truth, f"the page shows {series}, which /metrics does not have"
        if key[0] in STABLE:
            assert float(text) == truth[key], (series, text, truth[key])
            compared += 1
    assert compared >= 3
    assert truth[("fedstack_destination_queue_depth", (("destination", b.server_name),))] == 7

    shot = await page.send("Page.captureScreenshot", format="png")
    out = ROOT / ".cache" / "dashboard.png"
    out.parent.mkdir(exist_ok=True)
    out.write_bytes(base64.b64decode(shot["data"]))
    assert out.stat().st_size > 10_000


async def test_dashboard_files_are_served_without_a_token_and_metrics_are_not(served):
    a, _, url = served
    async with httpx.AsyncClient(base_url=url) as c:
        page = await c.get("/dashboard")
        assert page.status_code == 200 and "uPlot.iife.min.js" in page.text
        for name in ("dashboard.js", "uPlot.iife.min.js", "uPlot.min.css"):
            assert (await c.get(f"/dashboard/static/{name}")).status_code == 200
        assert (await c.get("/dashboard/static/..%2Fapp.py")).status_code == 404
        assert (await c.get("/metrics")).status_code == 401
