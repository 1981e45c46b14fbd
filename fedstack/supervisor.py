"""`fedstack up` as a supervisor: a service process that exits is started again.

Invariants:
- A process that exits is restarted after a backoff that starts at `min_backoff_s` (0.5 s)
  and doubles on each restart up to `max_backoff_s` (30 s); a process that stays healthy
  for `reset_after_s` (60 s) gets the minimal backoff again. The others keep serving
  meanwhile: every layer survives a restart of any other.
- Each exit is logged with its exit status (a signal as its name) and counted; the counts
  are written to `<data_dir>/supervisor.json` (`{instance: {restarts, last_exit, ...}}`)
  for the metrics and the admin CLI.
- The supervisor gives up only on a process that cannot start at all: one that exits
  `give_up_after` times in a row without ever answering its /health (then it says why and
  stops everything). A process that was healthy once and crashes later is always
  restarted.
"""
from __future__ import annotations

import json
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from shared.settings import SUPERVISOR_STATE_FILE


def describe_exit(returncode: int) -> str:
    """`exit status 3` or `killed by SIGKILL`."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


@dataclass
class _Watch:
    backoff_s: float
    restarts: int = 0
    failed_starts: int = 0          # exits in a row before ever becoming healthy
    healthy_since: float | None = None
    restart_at: float | None = None
    last_exit: str | None = None


@dataclass
class Supervisor:
    """Watches the processes of a `fedstack.cli.Homeserver` (already started)."""
    hs: object
    min_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    reset_after_s: float = 60.0
    give_up_after: int = 5
    log: object = field(default=sys.stderr)
    _watch: dict = field(default_factory=dict)

    def __post_init__(self):
        now = time.monotonic()
        for name in self.hs.instances():
            self._watch[name] = _Watch(self.min_backoff_s, healthy_since=now)

    def step(self, now: float | None = None) -> None:
        """One round: notice exits, restart those whose backoff ended, mark health.
        Raises RuntimeError when a process cannot start at all."""
        now = time.monotonic() if now is None else now
        for name, w in self._watch.items():
            proc = self.hs.procs.get(name)
            if w.restart_at is not None:
                if now >= w.restart_at:
                    w.restart_at = None
                    self.hs.start_service(name)
                continue
            if proc is not None and proc.poll() is None:
                self._check_health(name, w, now)
                continue
            self._exited(name, w, proc.returncode if proc is not None else None, now)

    def _check_health(self, name: str, w: _Watch, now: float) -> None:
        if w.healthy_since is None:
            if self.hs.is_healthy(name):
                w.healthy_since = now
                w.failed_starts = 0
        elif now - w.healthy_since >= self.reset_after_s:
            w.backoff_s = self.min_backoff_s

    def _exited(self, name: str, w: _Watch, returncode, now: float) -> None:
        w.last_exit = describe_exit(returncode) if returncode is not None else "not running"
        if w.healthy_since is None:
            w.failed_starts += 1
            if w.failed_starts >= self.give_up_after:
                raise RuntimeError(f"{name} cannot start: it exited {w.failed_starts} times "
                                   f"without becoming healthy (last: {w.last_exit}); see "
                                   f"{self.hs.log_dir}/{name.replace('#', '-')}.log")
        w.restarts += 1
        w.healthy_since = None
        w.restart_at = now + w.backoff_s
        print(f"{name} exited ({w.last_exit}); restarting in {w.backoff_s:g} s "
              f"(restart {w.restarts})", file=self.log, flush=True)
        w.backoff_s = min(w.backoff_s * 2, self.max_backoff_s)
        self._save()

    def _save(self) -> None:
        state = {name: {"restarts": w.restarts, "last_exit": w.last_exit,
                        "next_backoff_s": w.backoff_s} for name, w in self._watch.items()}
        path = Path(self.hs.settings.data_dir) / SUPERVISOR_STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(path)

    def restarts(self) -> dict[str, int]:
        return {name: w.restarts for name, w in self._watch.items()}
