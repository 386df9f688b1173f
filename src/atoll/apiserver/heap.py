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
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import TYPE_CHECKING, Callable

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
