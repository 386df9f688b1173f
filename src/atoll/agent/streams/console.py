"""A VM's serial console over the agent's HTTPS API (for the API server's
``virtualmachines/console`` subresource).

The websocket carries raw terminal bytes both ways between the client and
QEMU's serial port (a unix socket chardev in the VM's run directory); QEMU
logs everything the guest prints to ``console.log``, which a plain GET returns
without attaching (``tailLines`` keeps the last lines only).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from aiohttp import WSMsgType, web

MAX_LOG = 8 * 1024 * 1024  # what a plain GET returns at most: the newest bytes


def read_log(path: Path, tail_lines: int | None) -> bytes:
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            f.seek(max(0, size - MAX_LOG))
            data = f.read()
    except FileNotFoundError:
        return b""
    if tail_lines is not None:
        lines = data.splitlines(keepends=True)
        data = b"".join(lines[-tail_lines:]) if tail_lines > 0 else b""
    return data


async def attach(request: web.Request, socket_path: Path) -> web.StreamResponse:
    """Relay a websocket to the serial port until either side closes."""
    try:
        reader, writer = await asyncio.open_unix_connection(str(socket_path))
    except OSError as e:
        raise web.HTTPConflict(text=f"the VM's console is not available: {e}") from None
    ws = web.WebSocketResponse(max_msg_size=0, heartbeat=30)
    await ws.prepare(request)

    async def guest_to_client() -> None:
        while data := await reader.read(65536):
            await ws.send_bytes(data)

    async def client_to_guest() -> None:
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                writer.write(msg.data)
            elif msg.type == WSMsgType.TEXT:
                writer.write(msg.data.encode())
            else:
                continue
            await writer.drain()

    tasks = [asyncio.create_task(guest_to_client()), asyncio.create_task(client_to_guest())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        await ws.close()
    return ws
