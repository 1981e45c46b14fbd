"""Per-origin rate limiting of inbound federation requests.

Invariants:
- Applied only after X-Matrix authentication, so the origin is proven: a stranger cannot
  spend (or exhaust) another server's allowance, and unauthenticated requests use none.
- A token bucket per origin: `burst` requests at once, refilled at `rate` per second.
  A request over the allowance is refused with 429 M_LIMIT_EXCEEDED and `retry_after_ms`
  (the error handler adds a Retry-After header); it reaches no other layer, so nothing
  about it is stored (a refused /send can be retried with the same txnId).
- `burst` 0 (or a rate of 0) disables the limit. Defaults are generous (settings).
- State is in memory and per transport process: with several transport replicas each
  enforces the limit on the requests it receives.
- Memory is bounded: when more than MAX_ORIGINS buckets exist, full (idle) ones are dropped.
"""
from __future__ import annotations

import math
import time

from shared.errors import MatrixError

MAX_ORIGINS = 10_000


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: int, clock=time.monotonic):
        self.rate = float(rate_per_s)
        self.burst = int(burst)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}   # origin -> (tokens, at)

    @property
    def enabled(self) -> bool:
        return self.burst > 0 and self.rate > 0

    def check(self, origin: str) -> None:
        """Take one request's token for `origin`, or raise 429 M_LIMIT_EXCEEDED."""
        if not self.enabled:
            return
        now = self.clock()
        tokens, at = self._buckets.get(origin, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self._buckets[origin] = (tokens, now)
            wait_ms = max(1, math.ceil((1.0 - tokens) / self.rate * 1000))
            raise MatrixError(429, "M_LIMIT_EXCEEDED", "Too many requests", retry_after_ms=wait_ms)
        self._buckets[origin] = (tokens - 1.0, now)
        if len(self._buckets) > MAX_ORIGINS:
            self._prune(now)

    def _prune(self, now: float) -> None:
        for origin, (tokens, at) in list(self._buckets.items()):
            if tokens + (now - at) * self.rate >= self.burst:
                del self._buckets[origin]
