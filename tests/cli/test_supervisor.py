"""`atoll up`'s supervisor: a crash loop backs off, a crash after a long run restarts at once.

A back-off that never forgot would, after a handful of agent restarts over a day, wait 30 s
before the next one: long enough for the node lifecycle controller to evict every pod.
"""

from __future__ import annotations

import asyncio

import pytest

from atoll.cli import supervisor
from atoll.cli.supervisor import Role, supervise


async def _supervise_until(roles: list[Role], done) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(supervise(roles, stop))
    try:
        async with asyncio.timeout(60):
            while not done():
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task


async def test_a_child_that_ran_long_enough_restarts_after_the_first_delay_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "STABLE_SECONDS", 0.3)
    lived = Role("lived", ["sleep", "0.5"])
    await lived.start()
    starts = []
    original = lived.start

    async def counted() -> None:
        starts.append(lived.restarts)
        await original()
    lived.start = counted  # type: ignore[method-assign]
    await _supervise_until([lived], lambda: len(starts) >= 3)
    assert starts == [1, 1, 1]  # each exit came after a stable run: the count started over


async def test_a_crash_loop_backs_off_more_each_time() -> None:
    looping = Role("looping", ["true"])
    await looping.start()
    await _supervise_until([looping], lambda: looping.restarts >= 3)
    assert looping.restarts >= 3  # 1 s, 2 s, 4 s: a child that dies at once is not hammered
