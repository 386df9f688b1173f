"""The heap keeper freezes what the watch cache holds, after a full collection."""

from __future__ import annotations

import asyncio
import gc

from atoll.apiserver.heap import HeapKeeper


class FakeCacher:
    """Only the listener list the keeper hooks into."""

    def __init__(self) -> None:
        self.listeners: list = []


async def test_freezes_on_start_and_after_growth() -> None:
    cache: list[dict] = []
    keeper = HeapKeeper(lambda: len(cache), step=10)
    cacher = FakeCacher()
    try:
        keeper.watch(cacher)
        assert gc.get_freeze_count() > 0 and keeper.frozen_at == 0
        for i in range(25):
            cache.append({"metadata": {"name": f"o{i}"}, "data": [i]})
            cacher.listeners[0](None)
        await asyncio.sleep(0)  # the settle runs on the loop, not inside the listener
        assert keeper.frozen_at >= 10
        cache.clear()
        cacher.listeners[0](None)
        assert keeper.frozen_at == 0
    finally:
        gc.unfreeze()
