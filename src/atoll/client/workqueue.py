"""A fair and stingy work queue, as client-go's: a key queued twice runs once, never on two
workers at once; a key re-added while being processed runs again after ``done``.
Failed keys come back after the rate limiter's delay (per-key back-off and a global bucket);
``forget`` resets a key's back-off.  ``stats`` counts what the controller metrics report."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from atoll.client.metrics import Histogram
from atoll.client.ratelimit import RateLimiter

K = TypeVar("K", bound=Hashable)
log = logging.getLogger(__name__)


@dataclass
class QueueStats:
    """Running totals for the metrics endpoint (client-go's workqueue metric names)."""

    adds: int = 0
    retries: int = 0
    #: seconds keys waited in the queue before a worker took them
    queue_seconds: Histogram = field(default_factory=Histogram)


class WorkQueue(Generic[K]):
    def __init__(self, *, base_delay: float = 0.05, max_delay: float = 30.0,
                 limiter: RateLimiter | None = None) -> None:
        self._queue: collections.deque[K] = collections.deque()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._added_at: dict[K, float] = {}
        self._cond = asyncio.Condition()
        self._shutdown = False
        self.limiter = limiter or RateLimiter(base_delay=base_delay, max_delay=max_delay)
        self.stats = QueueStats()

    def add(self, key: K) -> None:
        if self._shutdown or key in self._dirty:
            return
        self._dirty.add(key)
        self.stats.adds += 1
        self._added_at.setdefault(key, time.monotonic())
        if key not in self._processing:
            self._queue.append(key)
            self._notify()

    def _notify(self) -> None:
        async def wake() -> None:
            async with self._cond:
                self._cond.notify()
        asyncio.get_running_loop().create_task(wake())

    def add_after(self, key: K, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        old = self._timers.pop(key, None)
        loop = asyncio.get_running_loop()
        if old is not None:
            remaining = old.when() - loop.time()
            if remaining <= delay:
                self._timers[key] = old
                return
            old.cancel()
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def add_rate_limited(self, key: K) -> None:
        self.stats.retries += 1
        self.add_after(key, self.limiter.when(key))

    def forget(self, key: K) -> None:
        self.limiter.forget(key)

    def retries(self, key: K) -> int:
        return self.limiter.retries(key)

    @property
    def processing(self) -> int:
        return len(self._processing)

    async def get(self) -> K | None:
        async with self._cond:
            while not self._queue and not self._shutdown:
                await self._cond.wait()
            if self._shutdown and not self._queue:
                return None
            key = self._queue.popleft()
            self._dirty.discard(key)
            added = self._added_at.pop(key, None)
            if added is not None:
                self.stats.queue_seconds.observe(time.monotonic() - added)
            self._processing.add(key)
            return key

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            self._notify()

    async def shutdown(self) -> None:
        self._shutdown = True
        for t in self._timers.values():
            t.cancel()
        async with self._cond:
            self._cond.notify_all()

    def __len__(self) -> int:
        return len(self._queue)


async def serve(queue: WorkQueue[K], handle: Callable[[K], Awaitable[None]], what: str,
                retry_on: tuple[type[BaseException], ...] = (Exception,)) -> None:
    """One worker over ``queue`` for the agent's small reconcilers (a volume janitor, ...):
    each key handled once at a time; a failure in ``retry_on`` is logged and the key comes
    back after its back-off, a success forgets it.  Returns when the queue shuts down."""
    while (key := await queue.get()) is not None:
        try:
            await handle(key)
        except retry_on as e:
            log.warning("%s %s: %s (retrying)", what, key, e)
            queue.add_rate_limited(key)
        else:
            queue.forget(key)
        finally:
            queue.done(key)
