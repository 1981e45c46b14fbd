"""Small helpers shared by the benchmarks: dependencies, process CPU/RSS, statistics, timing.

Nothing here talks to a homeserver.
"""
from __future__ import annotations

import asyncio
import importlib
import os
import statistics
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")

#: What the benchmarks need beyond fedstack's own dependencies (pip name -> import name).
BENCH_REQUIREMENTS = {"aiohttp": "aiohttp", "matplotlib": "matplotlib", "pyyaml": "yaml"}


def ensure_requirements() -> None:
    """Install (with this interpreter's pip) whatever of BENCH_REQUIREMENTS is missing."""
    missing = []
    for pip_name, module in BENCH_REQUIREMENTS.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(pip_name)
    if missing:
        print(f"[bench] installing {', '.join(missing)} ...", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q",
                        *missing], check=True)
        importlib.invalidate_caches()


# --------------------------------------------------------------------------- /proc

def cpu_seconds(pid: int) -> float:
    """utime + stime of a process in seconds (0.0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return 0.0
    # The command name may hold spaces: fields are counted after the last ')'.
    fields = data[data.rindex(b")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])   # fields 14 and 15 of stat(5)
    return (utime + stime) / CLK_TCK


def rss_mb(pid: int) -> float:
    """Resident set size in MiB (0.0 if the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class CpuMeter:
    """CPU seconds used by a set of processes between `start()` and `stop()`."""

    def __init__(self, pids):
        """`pids`: a list of PIDs, or {label: pid} to get `per_label` after `stop()`."""
        self.labels = dict(pids) if isinstance(pids, dict) else {str(p): p for p in pids}
        self._t0: dict[str, float] = {}
        self.used = 0.0
        self.per_label: dict[str, float] = {}

    def start(self) -> "CpuMeter":
        self._t0 = {k: cpu_seconds(p) for k, p in self.labels.items()}
        return self

    def stop(self) -> float:
        self.per_label = {k: cpu_seconds(p) - self._t0[k] for k, p in self.labels.items()}
        self.used = sum(self.per_label.values())
        return self.used


# --------------------------------------------------------------------------- stats

def median(values):
    return statistics.median(values) if values else None


def percentile(values, q: float):
    """Nearest-rank percentile (q in 0..100) of a list of numbers."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(q / 100 * len(s) + 0.5)) - 1))
    return s[k]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


async def wait_until(predicate, timeout: float, what: str, interval: float = 0.02):
    """Poll an (a)sync predicate until it is truthy; TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)
