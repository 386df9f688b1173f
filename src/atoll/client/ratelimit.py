"""How long a failed key waits before its next try, as client-go's default controller limiter.

Two limits, the larger wins: a per-key exponential back-off (one bad object backs off alone,
without slowing its neighbours) and a global token bucket (a storm of failures across many keys
cannot hammer the API server).  ``forget`` resets a key once it reconciles cleanly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable


class TokenBucket:
    """``qps`` tokens a second, at most ``burst`` saved; a reservation may run into debt."""

    def __init__(self, qps: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.qps = qps
        self.burst = burst
        self.clock = clock
        self.tokens = float(burst)
        self.stamp = clock()

    def reserve(self) -> float:
        """Take one token; the seconds until it is really ours (0 when one was saved)."""
        now = self.clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.qps)
        self.stamp = now
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.qps


class RateLimiter:
    def __init__(self, *, base_delay: float, max_delay: float, qps: float = 10.0,
                 burst: int = 100, clock: Callable[[], float] = time.monotonic) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.bucket = TokenBucket(qps, burst, clock)
        self._failures: dict[Hashable, int] = {}

    def when(self, key: Hashable) -> float:
        """Record one more failure of ``key``; the delay before it runs again."""
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        per_key = min(self.base_delay * (2 ** min(n, 62)), self.max_delay)
        return max(per_key, self.bucket.reserve())

    def retries(self, key: Hashable) -> int:
        return self._failures.get(key, 0)

    def forget(self, key: Hashable) -> None:
        self._failures.pop(key, None)
