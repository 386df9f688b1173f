"""Child processes of `atoll up` and `atoll dev cluster`: started in order, restarted with
back-off when one dies, stopped in reverse order."""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
import time
from pathlib import Path

import aiohttp

log = logging.getLogger("atoll.supervisor")
#: a child that ran this long before exiting was not crash-looping: its back-off starts over
STABLE_SECONDS = 10.0


class Role:
    """One supervised child process."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.argv = argv
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.started_at = 0.0

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(*self.argv)
        self.started_at = time.monotonic()
        log.info("started %s (pid %d)", self.name, self.proc.pid)

    async def stop(self, grace: float = 10.0) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), grace)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()


def python_argv(*args: str) -> list[str]:
    """This very Atoll, as a child process."""
    return [sys.executable, "-m", "atoll.cli.main", *args]


async def supervise(roles: list[Role], stop: asyncio.Event) -> None:
    """Restart whichever role exits until ``stop``; then stop all, last started first."""
    try:
        while not stop.is_set():
            waits = {asyncio.create_task(r.proc.wait()): r for r in roles if r.proc}
            stopper = asyncio.create_task(stop.wait())
            done, pending = await asyncio.wait([*waits, stopper],
                                               return_when=asyncio.FIRST_COMPLETED)
            for t in pending:
                t.cancel()
            if stop.is_set():
                break
            for t in done:
                role = waits.get(t)
                if role is None:
                    continue
                if time.monotonic() - role.started_at >= STABLE_SECONDS:
                    role.restarts = 0  # one crash after a long run is not a loop
                role.restarts += 1
                delay = min(0.5 * 2 ** min(role.restarts, 6), 30.0)
                log.warning("%s exited with code %s; restarting in %.1fs", role.name,
                            role.proc.returncode if role.proc else "?", delay)
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except asyncio.TimeoutError:
                    await role.start()
    finally:
        for role in reversed(roles):
            await role.stop()


async def wait_ready(url: str, ca: Path, server: Role, timeout: float,
                     also: Path | None = None) -> None:
    """Wait until an API server answers ``url``/readyz (and ``also`` exists), or fail."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if server.proc is not None and server.proc.returncode is not None:
                raise RuntimeError(f"{server.name} exited with code {server.proc.returncode}")
            if ca.exists() and (also is None or also.exists()):
                ctx = ssl.create_default_context(cafile=str(ca))
                try:
                    async with session.get(f"{url}/readyz", ssl=ctx,
                                           timeout=aiohttp.ClientTimeout(total=2)) as r:
                        if r.status == 200:
                            return
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
    raise RuntimeError(f"{server.name} did not become ready within {timeout:.0f}s")
