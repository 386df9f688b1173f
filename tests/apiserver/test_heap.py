"""The heap keeper freezes what the watch cache holds, after a full collection."""

from __future__ import annotations

import asyncio
import gc

from atoll.apiserver import heap
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


def test_trim_is_due_after_a_burst_of_watchers_between_two_looks() -> None:
    """1,000 watches that open and close within one interval are never seen in the count;
    the running count of departures still makes the trim due."""
    count, departed = [0], [0]
    trimmer = heap.Trimmer(lambda: count[0], departures=lambda: departed[0],
                           rss_growth=1 << 60)
    assert not trimmer.due()
    departed[0] += 1000  # opened and closed between two looks: the count is 0 again
    if heap._LIBC is None:
        return  # no glibc: trimming is off and never due
    assert trimmer.due()
    trimmer.trimmed(heap.rss_bytes(), 0.0)
    assert not trimmer.due()
