"""``kubectl exec``: one ``runc exec`` wired to a websocket with the channel protocol.

With a terminal, ``runc exec -t`` runs in the foreground on a pty of the agent's: runc makes
the container's own pty, relays between the two (in raw mode) and, on SIGWINCH, copies this
pty's size to it, so a resize message is a ``TIOCSWINSZ`` here plus a SIGWINCH to runc.  (A
detached ``runc exec`` with a console socket would hand over the container's master directly,
but then nobody could learn the command's exit code.)  Without a terminal, pipes.  Stdin comes
in BINARY or TEXT frames; v5's close of stdin is the command's end of file.  The last message,
on the error channel, is the exit Status kubectl turns into its exit code.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import struct
import termios
from typing import Any

from aiohttp import web

from atoll.agent.streams.channels import CLOSE, ERROR, RESIZE, STDERR, STDIN, STDOUT, decode, \
    window_size


class ExecSession:
    """One ``runc exec`` wired to a websocket with the channel protocol."""

    def __init__(self, ws: web.WebSocketResponse, argv: list[str], *, tty: bool, stdin: bool,
                 v5: bool) -> None:
        self.ws = ws
        self.argv = argv
        self.tty = tty
        self.want_stdin = stdin
        self.v5 = v5
        self.master = -1

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        if self.tty:
            self.master, slave = os.openpty()
            proc = await asyncio.create_subprocess_exec(*self.argv, stdin=slave, stdout=slave,
                                                        stderr=slave, start_new_session=True)
            os.close(slave)
            os.set_blocking(self.master, False)
            outputs = [self._pump_fd(self.master, STDOUT)]
        else:
            proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.PIPE if self.want_stdin
                else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            outputs = [self._pump_stream(proc.stdout, STDOUT),
                       self._pump_stream(proc.stderr, STDERR)]
        reader = loop.create_task(self._read_client(proc))
        await asyncio.gather(*outputs)
        code = await proc.wait()
        reader.cancel()
        if self.master >= 0:
            os.close(self.master)
        await self._send(ERROR, json.dumps(_exit_status(code, self.argv)).encode())
        await self.ws.close()

    async def _send(self, channel: int, data: bytes) -> None:
        if not self.ws.closed:
            await self.ws.send_bytes(bytes([channel]) + data)

    async def _pump_stream(self, stream: asyncio.StreamReader | None, channel: int) -> None:
        if stream is None:
            return
        while True:
            data = await stream.read(32768)
            if not data:
                return
            await self._send(channel, data)

    async def _pump_fd(self, fd: int, channel: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            ready = loop.create_future()
            loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
            try:
                await ready
            finally:
                loop.remove_reader(fd)
            try:
                data = os.read(fd, 32768)
            except BlockingIOError:
                continue
            except OSError:  # EIO: the terminal's other side closed
                return
            if not data:
                return
            await self._send(channel, data)

    async def _read_client(self, proc: asyncio.subprocess.Process) -> None:
        """The client's stdin (BINARY or TEXT frames), resizes, and v5's close of stdin,
        after which the command reads end of file (a terminal gets its EOF character)."""
        stdin_open = True
        async for msg in self.ws:
            frame = decode(msg)
            if frame is None:
                continue
            channel, payload = frame
            if channel == STDIN and stdin_open:
                try:
                    if self.tty and self.master >= 0:
                        await _write_fd(self.master, payload)
                    elif proc.stdin is not None:
                        proc.stdin.write(payload)
                        await proc.stdin.drain()
                except (OSError, ConnectionError):  # the command is gone or closed its stdin
                    stdin_open = False
            elif channel == RESIZE and self.tty and self.master >= 0:
                size = window_size(payload)
                if size is None:
                    continue
                try:
                    fcntl.ioctl(self.master, termios.TIOCSWINSZ,
                                struct.pack("HHHH", size[0], size[1], 0, 0))
                    os.kill(proc.pid, signal.SIGWINCH)
                except OSError:
                    continue
            elif channel == CLOSE and payload[:1] == bytes([STDIN]) and stdin_open:
                stdin_open = False
                try:
                    if self.tty and self.master >= 0:
                        await _write_fd(self.master, b"\x04")
                    elif proc.stdin is not None:
                        proc.stdin.close()
                except (OSError, ConnectionError):
                    pass


async def _write_fd(fd: int, data: bytes) -> None:
    """All of ``data`` into a non-blocking fd (a pty master), waiting while it is full."""
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            ready = loop.create_future()
            loop.add_writer(fd, lambda: ready.done() or ready.set_result(None))
            try:
                await ready
            finally:
                loop.remove_writer(fd)


def _exit_status(code: int, argv: list[str]) -> dict[str, Any]:
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    command = argv[argv.index("exec") + 1:]
    command = command[1:] if command and command[0] == "-t" else command
    return {"metadata": {}, "status": "Failure",
            "message": f"command terminated with non-zero exit code: error executing command "
                       f"{command[1:]}, exit code {code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}
