"""Coalesced syncs for dataplanes driven by informers (kube-proxy's BoundedFrequencyRunner).

Informer events only ``trigger()``; one task runs ``sync`` at most every ``min_interval``
seconds, once for any number of triggers in between, never two at a time.  A failing sync
is retried after a doubling delay (0.5 s up to ``max_backoff``) until one succeeds; events
in between do not bring the retry forward, so a sync that keeps failing costs at most one
attempt per delay however busy the informers are.  ``retry_after`` asks for a later
re-sync without an event (e.g. an expiring timer).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

log = logging.getLogger(__name__)


class SyncRunner:
    def __init__(self, name: str, sync: Callable[[], Awaitable[None]], *,
                 min_interval: float = 0.0, max_backoff: float = 30.0) -> None:
        self.name = name
        self._sync = sync
        self.min_interval = min_interval
        self.max_backoff = max_backoff
        self._wanted = asyncio.Event()
        self._last = 0.0
        self.syncs = 0
        self.failures = 0
        #: set after the first successful sync
        self.synced = asyncio.Event()

    def trigger(self) -> None:
        self._wanted.set()

    def retry_after(self, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self._wanted.set)

    async def run(self) -> None:
        backoff = 0.0
        while True:
            if backoff:
                await asyncio.sleep(backoff)
            else:
                await self._wanted.wait()
            wait = self._last + self.min_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._wanted.clear()
            self._last = time.monotonic()
            try:
                await self._sync()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - a dataplane error must not kill the agent
                self.failures += 1
                backoff = min(self.max_backoff, max(0.5, backoff * 2))
                log.warning("%s sync failed (retry in %.1fs): %s", self.name, backoff, e)
                continue
            self.syncs += 1
            backoff = 0.0
            self.synced.set()
