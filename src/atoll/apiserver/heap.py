"""Short garbage-collector pauses on a server that holds every object in memory.

The watch cache keeps each object as a tree of dicts and lists.  CPython's
full collections walk every tracked container, so with tens of thousands of
cached objects a full collection stalls the event loop for 100 ms or more:
every watch stream and request waits.  The cached trees hold no reference
cycles (they are decoded JSON, freed by reference counting), so there is
nothing for the cycle collector to find in them.  We therefore move what is
alive into the permanent generation (``gc.freeze``) after the cache is
loaded, and again whenever it has grown by a step, so later collections only
walk what is new.  Each freeze is preceded by one full collection, so no
collectable garbage is frozen.

Memory freed by Python is not necessarily returned to the OS: glibc keeps freed
chunks in its arenas (each TLS connection alone has a 256 KiB read buffer), so
after 1,000 watchers disconnect the RSS would stay at its peak.  ``Trimmer``
calls ``malloc_trim(0)`` (on a worker thread) once the watcher count has dropped
a step below its peak, or the RSS has grown a step since the last trim (a burst
of large requests), which hands free pages of every arena back to the OS.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import time
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from atoll.storage.cacher import CacheEvent, Cacher

log = logging.getLogger(__name__)

#: young-generation threshold: fewer, slightly larger young collections
GEN0_THRESHOLD = 20_000
#: freeze again once this many objects were added since the last freeze
GROWTH_STEP = 2_000


class HeapKeeper:
    def __init__(self, size: Callable[[], int], step: int = GROWTH_STEP) -> None:
        self.size = size
        self.step = step
        self.frozen_at = 0
        self._pending = False

    def watch(self, cacher: "Cacher") -> None:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
        self.settle()
        cacher.listeners.append(self._on_event)

    def settle(self) -> None:
        """One full collection, then freeze what survived."""
        self._pending = False
        started = time.perf_counter()
        gc.collect()
        gc.freeze()
        self.frozen_at = self.size()
        log.debug("heap settled: %d cached objects, %d frozen containers, %.0f ms",
                  self.frozen_at, gc.get_freeze_count(), (time.perf_counter() - started) * 1000)

    def _on_event(self, ev: "CacheEvent") -> None:
        size = self.size()
        self.frozen_at = min(self.frozen_at, size)  # deletions: count growth from the low point
        if self._pending or size - self.frozen_at < self.step:
            return
        self._pending = True
        asyncio.get_running_loop().call_soon(self.settle)


#: trim once this many watchers have gone since the peak
WATCHER_DROP = 50
#: or once the RSS has grown this much since the last trim
RSS_GROWTH_BYTES = 16 * 1024 * 1024
#: how often the trimmer looks
TRIM_INTERVAL_SECONDS = 5.0


def _libc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only
        return libc
    except (OSError, AttributeError):  # pragma: no cover - musl, macOS
        return None


_LIBC = _libc()


def rss_bytes() -> int:
    """This process's resident set size (VmRSS), 0 where /proc is not there."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover
        pass
    return 0


def trim() -> bool:
    """Return free heap pages to the OS (glibc ``malloc_trim(0)``); False where unsupported."""
    if _LIBC is None:
        return False
    _LIBC.malloc_trim(0)
    return True


class Trimmer:
    """Calls ``trim`` after watchers leave or a transient burst, never more than every interval."""

    def __init__(self, watchers: Callable[[], int], interval: float = TRIM_INTERVAL_SECONDS,
                 watcher_drop: int = WATCHER_DROP, rss_growth: int = RSS_GROWTH_BYTES,
                 departures: Callable[[], int] | None = None) -> None:
        self.watchers = watchers
        #: a running count of watchers that left: catches bursts the 5 s look misses
        self.departures = departures or (lambda: 0)
        self.departures_at_trim = self.departures()
        self.interval = interval
        self.watcher_drop = watcher_drop
        self.rss_growth = rss_growth
        self.peak_watchers = watchers()
        self.rss_after_trim = rss_bytes()
        self.trims = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="heap-trimmer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.interval)
            if self.due():
                # off the event loop: a trim of a few hundred MiB takes 20-30 ms
                gc.collect()  # connections hold reference cycles: free them first
                started = time.perf_counter()
                before = rss_bytes()
                await loop.run_in_executor(None, trim)
                self.trimmed(before, started)

    def due(self) -> bool:
        """Watchers dropped a step below their peak, or the RSS grew a step since the last trim."""
        if _LIBC is None:
            return False
        now = self.watchers()
        self.peak_watchers = max(self.peak_watchers, now)
        rss = rss_bytes()
        if (self.peak_watchers - now >= self.watcher_drop
                or self.departures() - self.departures_at_trim >= self.watcher_drop
                or rss - self.rss_after_trim >= self.rss_growth):
            return True
        self.rss_after_trim = min(self.rss_after_trim, rss)
        return False

    def trimmed(self, before: int, started: float) -> None:
        self.trims += 1
        self.peak_watchers = self.watchers()
        self.departures_at_trim = self.departures()
        self.rss_after_trim = rss_bytes()
        log.debug("heap trimmed: %d watchers, RSS %d -> %d MiB in %.0f ms", self.peak_watchers,
                  before >> 20, self.rss_after_trim >> 20, (time.perf_counter() - started) * 1000)
