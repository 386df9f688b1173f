"""Memory comes back after watchers leave and after a burst of large requests (issue 18).

Each open watch costs the API server ~300 KiB (most of it the TLS read buffer); glibc kept
those pages after the watchers disconnected, so the RSS stayed at its peak.  On an API
server of its own (no agent), 1,000 watches are opened and closed, then 40 large bodies
are sent, and each time the RSS must come back within ``MARGIN`` of its idle figure and
no watcher may stay registered.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from typing import Iterator

import aiohttp
import pytest

from tests.conftest import Platform, pids_of, start_platform, stop_platform, wait_until

WATCHES = 1000
#: measured: 1,000 watches add ~300 MB; after they close the RSS is back within 10-20 MB
MARGIN = 40 * 1024 * 1024


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, int]]:
    """A platform without an agent, and the pid of its API server process."""
    data = tmp_path_factory.mktemp("watchmem") / "data"
    p = start_platform(data, None, "--no-agent")
    try:
        pids = wait_until("the API server process", lambda: pids_of(f"server --data-dir {data} "))
        yield p, pids[0]
    finally:
        stop_platform(p)


def _ctx(p: Platform) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(p.data_dir / "pki" / "ca.crt"))
    ctx.load_cert_chain(p.data_dir / "pki" / "admin.crt", p.data_dir / "pki" / "admin.key")
    return ctx


async def _watchers(session: aiohttp.ClientSession, p: Platform) -> int:
    async with session.get(p.url + "/metrics") as resp:
        text = await resp.text()
    line = next(l for l in text.splitlines() if l.startswith("apiserver_registered_watchers "))
    return int(line.split()[1])


async def _steady_watchers(session: aiohttp.ClientSession, p: Platform,
                           timeout: float = 60) -> int:
    """The watcher count once the controllers have opened theirs (unchanged for 3 s)."""
    deadline = time.monotonic() + timeout
    last, since = await _watchers(session, p), time.monotonic()
    while time.monotonic() - since < 3:
        assert time.monotonic() < deadline, "the watcher count never settled"
        await asyncio.sleep(0.5)
        now = await _watchers(session, p)
        if now != last:
            last, since = now, time.monotonic()
    return last


async def _settle(pid: int, seconds: float = 3.0) -> int:
    """The lowest RSS over a few seconds of quiet."""
    low = rss(pid)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        low = min(low, rss(pid))
    return low


async def _back_to(pid: int, limit: int, what: str, timeout: float = 90) -> int:
    deadline = time.monotonic() + timeout
    while (now := rss(pid)) > limit:
        assert time.monotonic() < deadline, (f"RSS still {now >> 20} MiB {what} "
                                             f"(limit {limit >> 20} MiB)")
        await asyncio.sleep(0.5)
    return now


async def _scenario(p: Platform, pid: int) -> dict[str, int]:
    ctx = _ctx(p)
    url = p.url + "/api/v1/namespaces/default/configmaps?watch=1"
    figures: dict[str, int] = {}
    connector = aiohttp.TCPConnector(ssl=ctx, limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=None)) as s:
        base_watchers = await _steady_watchers(s, p)
        # warm up every code path once, so the idle figure includes what stays loaded
        warm = [await s.get(url) for _ in range(20)]
        for r in warm:
            r.close()
        await asyncio_wait_until(lambda: _watchers(s, p), lambda n: n <= base_watchers,
                                 "the warm-up watchers unregistered")
        figures["idle"] = idle = await _settle(pid)

        gate = asyncio.Semaphore(50)

        async def open_one() -> aiohttp.ClientResponse:
            async with gate:
                resp = await s.get(url)
                assert resp.status == 200
                return resp

        streams = await asyncio.gather(*(open_one() for _ in range(WATCHES)))
        await asyncio_wait_until(lambda: _watchers(s, p), lambda n: n >= base_watchers + WATCHES,
                                 "every watch registered")
        figures["open"] = rss(pid)
        assert figures["open"] > idle + 50 * 1024 * 1024, figures  # the watches did cost memory
        for r in streams:
            r.close()
        await asyncio_wait_until(lambda: _watchers(s, p), lambda n: n <= base_watchers,
                                 "every watcher unregistered")
        figures["after_watches"] = await _back_to(pid, idle + MARGIN, "after 1,000 watches")

        # hostile input: large bodies, valid and not, a few at a time
        body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "big"}, "data": {"x": "a" * 2_500_000}})
        for i in range(40):
            data = body if i % 2 else body[:-3]  # half of them cut short: 400
            async with s.post(p.url + "/api/v1/namespaces/default/configmaps?dryRun=All",
                              data=data, headers={"Content-Type": "application/json"}) as resp:
                await resp.read()
                assert resp.status < 500
        figures["after_bodies"] = await _back_to(pid, idle + MARGIN, "after 40 large bodies")
    return figures


async def asyncio_wait_until(probe, ok, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ok(value := await probe()):
        assert time.monotonic() < deadline, f"timed out waiting for {what} (last: {value})"
        await asyncio.sleep(0.2)


def test_rss_returns_after_watchers_disconnect(server: tuple[Platform, int]) -> None:
    p, pid = server
    figures = asyncio.run(_scenario(p, pid))
    print({k: v >> 20 for k, v in figures.items()}, "MiB")
