"""The supervisor's rules on a simulated clock and fake processes (the real thing runs
under `fedstack up` in tests/crash/test_supervised.py)."""
from __future__ import annotations

import io
import json
import signal

import pytest

from fedstack.supervisor import Supervisor, describe_exit


class FakeProc:
    def __init__(self):
        self.returncode = None

    def poll(self):
        return self.returncode


class FakeHomeserver:
    def __init__(self, tmp_path, names=("transaction", "pdu")):
        self.names = list(names)
        self.procs = {n: FakeProc() for n in names}
        self.healthy = {n: True for n in names}
        self.started: list[str] = []
        self.log_dir = tmp_path / "logs"

        class S:
            data_dir = str(tmp_path)
        self.settings = S()

    def instances(self):
        return list(self.names)

    def start_service(self, name):
        self.started.append(name)
        self.procs[name] = FakeProc()

    def is_healthy(self, name):
        return self.healthy[name]

    def kill(self, name, code=-signal.SIGKILL):
        self.procs[name].returncode = code


def test_exit_status_is_described():
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(3) == "exit status 3"


def test_a_crashed_process_is_restarted_with_doubling_backoff(tmp_path):
    hs = FakeHomeserver(tmp_path)
    log = io.StringIO()
    sup = Supervisor(hs, log=log)
    t = 1000.0
    sup.step(t)
    assert hs.started == []
    delays = []
    for _ in range(8):
        hs.kill("pdu")
        sup.step(t)                      # exit noticed, restart scheduled
        start = t
        while "pdu" not in hs.started[-1:] or len(hs.started) <= len(delays):
            t += 0.25
            sup.step(t)
        delays.append(t - start)
        sup.step(t)                      # healthy again (but for less than a minute)
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert sup.restarts() == {"transaction": 0, "pdu": 8}
    assert "pdu exited (killed by SIGKILL); restarting in 0.5 s" in log.getvalue()
    state = json.loads((tmp_path / "supervisor.json").read_text())
    assert state["pdu"]["restarts"] == 8 and state["pdu"]["last_exit"] == "killed by SIGKILL"
    assert hs.procs["transaction"].poll() is None   # the others were left alone


def test_backoff_resets_after_a_minute_of_health(tmp_path):
    hs = FakeHomeserver(tmp_path)
    sup = Supervisor(hs, log=io.StringIO())
    t = 0.0
    for _ in range(3):                   # 0.5, 1, 2: next would be 4
        hs.kill("pdu")
        sup.step(t)
        t += 30
        sup.step(t)                      # restarted
        sup.step(t)                      # healthy
    t += 61
    sup.step(t)                          # a minute of health
    hs.kill("pdu")
    sup.step(t)
    sup.step(t + 0.49)
    assert hs.started.count("pdu") == 3
    sup.step(t + 0.5)
    assert hs.started.count("pdu") == 4


def test_gives_up_on_a_process_that_cannot_start(tmp_path):
    hs = FakeHomeserver(tmp_path)
    sup = Supervisor(hs, log=io.StringIO())
    hs.healthy["transaction"] = False
    t = 0.0
    hs.kill("transaction", code=1)
    with pytest.raises(RuntimeError, match="transaction cannot start.*exit status 1"):
        for _ in range(10_000):
            sup.step(t)
            if hs.procs["transaction"].poll() is None and hs.started:
                hs.kill("transaction", code=1)     # dies at once, never healthy
            t += 0.5
    assert 4 <= len(hs.started) <= 5


def test_a_process_healthy_once_is_always_restarted(tmp_path):
    hs = FakeHomeserver(tmp_path)
    sup = Supervisor(hs, log=io.StringIO(), max_backoff_s=1.0)
    t = 0.0
    for _ in range(20):                  # far more than give_up_after
        hs.kill("pdu")
        sup.step(t)
        t += 2
        sup.step(t)
        sup.step(t)                      # it answers /health each time
    assert sup.restarts()["pdu"] == 20
