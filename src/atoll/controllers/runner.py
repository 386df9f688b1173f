"""Running a controller: N guarded workers pulling keys from a work queue into reconcile().

``reconcile(key)`` returns None when done or a delay in seconds to look again;
a ``Conflict`` requeues at once with back-off, other errors are logged and
backed off.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Hashable

from atoll.api import errors
from atoll.client.workqueue import WorkQueue

log = logging.getLogger(__name__)

Reconcile = Callable[[Hashable], Awaitable[float | None]]


async def run_workers(name: str, queue: WorkQueue, reconcile: Reconcile, workers: int) -> None:
    async def worker(i: int) -> None:
        while True:
            key = await queue.get()
            if key is None:
                return
            try:
                again = await reconcile(key)
            except asyncio.CancelledError:
                queue.done(key)
                raise
            except errors.Conflict:
                queue.done(key)
                queue.add_rate_limited(key)
                continue
            except errors.NotFound:
                queue.done(key)
                queue.forget(key)
                continue
            except Exception as exc:
                log.warning("%s: reconciling %s failed: %s", name, key, exc,
                            exc_info=log.isEnabledFor(logging.DEBUG))
                queue.done(key)
                queue.add_rate_limited(key)
                continue
            queue.done(key)
            queue.forget(key)
            if again is not None:
                queue.add_after(key, again)

    await asyncio.gather(*(asyncio.create_task(worker(i), name=f"{name}-worker-{i}")
                           for i in range(workers)))
