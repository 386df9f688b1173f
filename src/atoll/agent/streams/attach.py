"""``kubectl attach``: a running container's output from now on, and optionally its stdin.

Output comes from the container's log file (the shim writes every line there), so attaching
never touches the running process; input goes into the shim's ``stdin`` FIFO, and a byte on
``stdin.close`` ends the container's stdin (``stdinOnce``).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from aiohttp import WSMsgType, web

from atoll.agent.pods import logs
from atoll.agent.pods.attempts import Attempt
from atoll.agent.streams.channels import CLOSE, ERROR, STDERR, STDIN, STDOUT


async def stream(ws: web.WebSocketResponse, attempt: Attempt,
                 fifos: tuple[Path, Path] | None, once: bool) -> None:
    """Relay until the container exits or the client leaves; ``ws`` is prepared already."""
    channels = {b"stdout": STDOUT, b"stderr": STDERR}
    path = Path(attempt.meta.log_path)
    # where "from now on" starts: before any input, so its answer is not missed
    start = path.stat().st_size if path.is_file() else None
    reader = asyncio.create_task(_drain_client(ws) if fifos is None else
                                 _feed_stdin(ws, fifos, once))
    try:
        if path.is_file():
            async for stream_name, text in logs.follow_records(
                    path, lambda: attempt.exit is not None or reader.done(), start):
                if ws.closed:
                    break
                await ws.send_bytes(bytes([channels.get(stream_name, STDOUT)]) + text)
        if not ws.closed:
            await ws.send_bytes(bytes([ERROR]) + json.dumps(
                {"metadata": {}, "status": "Success"}).encode())
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await ws.close()


async def _drain_client(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) what an attach client sends, to notice when it goes away."""
    async for _ in ws:
        pass


async def _feed_stdin(ws: web.WebSocketResponse, fifos: tuple[Path, Path], once: bool) -> None:
    """Channel 0 into the container's stdin FIFO until the client closes its stdin (v5's
    close message) or goes away; then, for ``stdinOnce``, the container's stdin ends."""
    data_fifo, close_fifo = fifos
    try:  # non-blocking open: a FIFO whose shim is gone has no reader (ENXIO), not a hang
        fd = os.open(data_fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        async for _ in ws:
            pass
        return
    os.set_blocking(fd, True)
    try:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY or not msg.data:
                continue
            channel, payload = msg.data[0], msg.data[1:]
            if channel == STDIN and payload:
                await asyncio.to_thread(_write_all, fd, payload)
            elif channel == CLOSE and payload[:1] == bytes([STDIN]):
                break
    finally:
        os.close(fd)
        if once:
            await asyncio.to_thread(_close_stdin, close_fifo)
    async for _ in ws:  # keep noticing the client until it leaves
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _close_stdin(close_fifo: Path) -> None:
    try:
        fd = os.open(close_fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return  # the container is gone already
    try:
        os.write(fd, b"x")
    finally:
        os.close(fd)
