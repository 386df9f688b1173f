"""``kubectl exec`` into a pod-VM container (no terminal, no stdin yet), over the guest agent.

The command's output arrives as the channel's frames; it is queued for the websocket with a
byte cap (a guest that floods faster than the client reads loses output, never host memory),
and the exit status ends the session as it does for runc (``exec_session``'s Status).
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from atoll.agent.podvm.runtime import PodVMRuntime
from atoll.agent.streams.channels import ERROR, STDERR, STDOUT
from atoll.agent.streams.exec_session import _exit_status

QUEUE_LIMIT = 4 << 20


async def serve(ws: web.WebSocketResponse, runtime: PodVMRuntime, cid: str,
                command: list[str]) -> None:
    queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()
    queued = 0

    def sink(stream: str, data: bytes) -> None:
        nonlocal queued
        if queued + len(data) > QUEUE_LIMIT:
            return
        queued += len(data)
        queue.put_nowait((STDOUT if stream == "stdout" else STDERR, data))

    async def pump() -> None:
        nonlocal queued
        while (item := await queue.get()) is not None:
            queued -= len(item[1])
            if not ws.closed:
                await ws.send_bytes(bytes([item[0]]) + item[1])

    sender = asyncio.create_task(pump())
    try:
        code, failure = await runtime.exec_stream(cid, command, sink)
    finally:
        queue.put_nowait(None)
        await sender
    if failure:
        await ws.send_bytes(bytes([STDERR]) + failure.encode() + b"\n")
        code = code if code > 0 else 126
    if not ws.closed:
        await ws.send_bytes(bytes([ERROR]) + json.dumps(
            _exit_status(code, ["exec", cid, *command])).encode())
    await ws.close()
