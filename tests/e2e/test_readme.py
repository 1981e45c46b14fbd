"""The README's examples, as written: its start command (`fedstack up` on ports 8448 and
8008, data in ./data), then every command of "Using it" in one bash, with a receiver on the
webhook URL the example subscribes (127.0.0.1:9000/hook). The message and the batch reach
the receiver, with a callback signature that the README's own verification code accepts."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import orjson
import uvicorn
from fastapi import FastAPI, Request

README = Path(__file__).resolve().parents[2] / "README.md"


def section(text: str, heading: str) -> str:
    start = text.index(heading)
    nxt = text.find("\n## ", start + len(heading))
    return text[start:nxt if nxt != -1 else len(text)]


def indented_commands(block: str) -> list[str]:
    """The indented (shell) lines, outside fenced code blocks."""
    block = re.sub(r"```.*?```", "", block, flags=re.S)
    return [line[4:] for line in block.splitlines() if line.startswith("    ") and line.strip()]


def python_block(block: str) -> str:
    return re.search(r"```python\n(.*?)```", block, re.S).group(1)


def start_command(text: str) -> str:
    [cmd] = [c for c in indented_commands(section(text, "## Set up on a fresh machine"))
             if "fedstack up" in c]
    return cmd.split("&&", 1)[1].strip()    # the install step has been done by the test run


class Hook:
    """The example's webhook receiver on 127.0.0.1:9000, in a thread."""

    def __init__(self):
        import threading
        self.calls: list[tuple[bytes, dict]] = []
        app = FastAPI()

        @app.post("/hook")
        async def hook(request: Request):
            self.calls.append((await request.body(), dict(request.headers)))
            return {}
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=9000,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)

    def bodies(self) -> list[str]:
        return [e["content"]["body"] for raw, _ in self.calls
                for e in orjson.loads(raw)["events"] if e.get("type") == "m.room.message"]


def assert_free(port: int) -> None:
    import socket
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise AssertionError(f"port {port}, which the README's example uses, is taken: {exc}")


def test_readme_examples_work_as_written(tmp_path):
    text = README.read_text()
    for port in (8448, 8008, 9000):
        assert_free(port)
    up = subprocess.Popen(["bash", "-c", "exec " + start_command(text)], cwd=tmp_path,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True)
    try:
        printed = []
        while not any("messaging" in line for line in printed):   # all four are up
            line = up.stdout.readline()
            if not line:
                raise AssertionError("the README's fedstack up did not come up:\n" + "".join(printed))
            printed.append(line)
        using = section(text, "## Using it")
        script = "set -euo pipefail\n" + "\n".join(indented_commands(using)) + "\n"
        with Hook() as hook:
            run = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True,
                                 text=True, timeout=120, env={**os.environ})
            assert run.returncode == 0, (run.stdout + run.stderr, up.poll())
            assert '"event_id"' in run.stdout and "errcode" not in run.stdout, run.stdout
            deadline = time.monotonic() + 30
            while sorted(hook.bodies()) != ["1", "2", "hi"] and time.monotonic() < deadline:
                time.sleep(0.1)
            assert sorted(hook.bodies()) == ["1", "2", "hi"], hook.calls
            anon = httpx.post("http://localhost:8008/v1/rooms", json={"creator": "@a:127.0.0.1:8448"})
            assert (anon.status_code, anon.json()["errcode"]) == (401, "M_MISSING_TOKEN")
            # the README's receiver check accepts our callbacks
            scope: dict = {}
            exec(python_block(using), scope)   # noqa: S102 - the README's own code
            sub_token = re.search(r'"hs_token":"([^"]+)"', run.stdout).group(1)
            raw, headers = hook.calls[-1]
            assert scope["from_fedstack"](sub_token, raw, headers["x-fedstack-signature"])
            assert not scope["from_fedstack"](sub_token, raw + b" ", headers["x-fedstack-signature"])
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        try:
            up.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
