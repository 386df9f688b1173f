"""A fair and stingy work queue, as client-go's: a key queued twice runs once, never on two
workers at once; a key re-added while being processed runs again after ``done``.
Failed keys come back after a per-key exponential back-off; ``forget`` resets it."""

from __future__ import annotations

import asyncio
import collections
from typing import Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self, *, base_delay: float = 0.05, max_delay: float = 30.0) -> None:
        self._queue: collections.deque[K] = collections.deque()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._failures: dict[K, int] = {}
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._cond = asyncio.Condition()
        self._shutdown = False
        self.base_delay = base_delay
        self.max_delay = max_delay

    def add(self, key: K) -> None:
        if self._shutdown or key in self._dirty:
            return
        self._dirty.add(key)
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
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        self.add_after(key, min(self.base_delay * (2 ** n), self.max_delay))

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)

    async def get(self) -> K | None:
        async with self._cond:
            while not self._queue and not self._shutdown:
                await self._cond.wait()
            if self._shutdown and not self._queue:
                return None
            key = self._queue.popleft()
            self._dirty.discard(key)
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
