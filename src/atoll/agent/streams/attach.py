"""``kubectl attach``: a running container's output from now on, and optionally its stdin.

Output comes from the container's log file (the shim writes every line there), so attaching
never touches the running process; input goes into the shim's ``stdin`` FIFO, and a byte on
``stdin.close`` ends the container's stdin (``stdinOnce``).  For a container with a terminal,
resize messages (channel 4) go to the shim's ``resize`` FIFO, which sets the pty's size.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from aiohttp import web

from atoll.agent.pods import logs
from atoll.agent.pods.attempts import Attempt
from atoll.agent.streams.channels import CLOSE, ERROR, RESIZE, STDERR, STDIN, STDOUT, decode, \
    window_size


async def stream(ws: web.WebSocketResponse, attempt: Attempt,
                 fifos: tuple[Path, Path] | None, once: bool,
                 resize: Path | None = None) -> None:
    """Relay until the container exits or the client leaves; ``ws`` is prepared already.
    ``resize``: the container's resize FIFO (it has a terminal), else None."""
    channels = {b"stdout": STDOUT, b"stderr": STDERR}
    path = Path(attempt.meta.log_path)
    # where "from now on" starts: before any input, so its answer is not missed
    start = path.stat().st_size if path.is_file() else None
    reader = asyncio.create_task(_read_client(ws, fifos, once, resize))
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


async def _read_client(ws: web.WebSocketResponse, fifos: tuple[Path, Path] | None,
                       once: bool, resize: Path | None) -> None:
    """Channel 0 into the container's stdin FIFO (when ``fifos``) until the client closes its
    stdin (v5's close message) or goes away, then, for ``stdinOnce``, the container's stdin
    ends; channel 4 into the resize FIFO; anything else is read to notice the client leave."""
    fd = -1
    if fifos is not None:
        try:  # non-blocking open: a FIFO whose shim is gone has no reader (ENXIO), not a hang
            fd = os.open(fifos[0], os.O_WRONLY | os.O_NONBLOCK)
            os.set_blocking(fd, True)
        except OSError:
            fd = -1
    stdin_open = fd >= 0
    try:
        async for msg in ws:
            frame = decode(msg)
            if frame is None:
                continue
            channel, payload = frame
            if channel == STDIN and payload and stdin_open:
                await asyncio.to_thread(_write_all, fd, payload)
            elif channel == RESIZE and resize is not None:
                size = window_size(payload)
                if size is not None:
                    await asyncio.to_thread(_send_size, resize, size)
            elif channel == CLOSE and payload[:1] == bytes([STDIN]) and stdin_open:
                stdin_open = False
                os.close(fd)
                fd = -1
                if once and fifos is not None:
                    await asyncio.to_thread(_close_stdin, fifos[1])
    finally:
        if fd >= 0:
            os.close(fd)
        if once and stdin_open and fifos is not None:
            await asyncio.to_thread(_close_stdin, fifos[1])


def _send_size(fifo: Path, size: tuple[int, int]) -> None:
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return  # the container is gone
    try:
        os.write(fd, f"{size[0]} {size[1]}\n".encode())
    except OSError:
        pass
    finally:
        os.close(fd)


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
