"""TCP connections dialled by the guest agent, inside the guest, as asyncio streams on the host.

``kubectl port-forward`` to a pod-VM must reach what listens in the guest, loopback included;
dialling the pod IP from the host (Kata's long-standing bug) misses ``127.0.0.1`` listeners.
So the host asks the guest agent to connect to ``127.0.0.1:<port>`` (frame 'T') and the bytes
then travel as 'D' frames both ways, with half-close ('H') and close ('C') frames.

Buffers are bounded by credit: each side sends at most ``WINDOW`` bytes the other has not
acknowledged ('A').  A guest that sends beyond its window has its stream reset; the host
never buffers more than a window per stream from the guest, nor more than ``HIGH_WATER``
unsent bytes of its own (``drain`` waits for the guest's credit, in the caller's task).
"""

from __future__ import annotations

import asyncio
import errno
from typing import Protocol


class Channel(Protocol):
    """What a connection needs of the agent channel that carries it (``channel.Channel``)."""

    closed: asyncio.Event

    async def send(self, kind: bytes, pid: int, data: bytes = b"") -> None: ...

    def forget_stream(self, sid: int) -> None: ...

WINDOW = 262144  # the guest agent's WINDOW
CHUNK = 32768
HIGH_WATER = 65536
OPEN_TIMEOUT = 10.0
STREAM_FRAMES = frozenset(b"NUDHCA"[i:i + 1] for i in range(6))
_background: set[asyncio.Task[None]] = set()


class GuestReader(asyncio.StreamReader):
    """What the guest's connection said; each read acknowledges its bytes to the guest."""

    def __init__(self, conn: GuestConnection) -> None:
        super().__init__(limit=WINDOW)
        self._conn = conn

    async def read(self, n: int = -1) -> bytes:
        data = await super().read(n if n > 0 else WINDOW)
        if data:
            await self._conn.consumed(len(data))
        return data


class GuestWriter:
    """The host's side of ``asyncio.StreamWriter`` that port-forwarding uses."""

    def __init__(self, conn: GuestConnection) -> None:
        self._conn = conn

    def write(self, data: bytes) -> None:
        self._conn.queue(data)

    async def drain(self) -> None:
        await self._conn.drained()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self._conn.half_close()

    def close(self) -> None:
        self._conn.close()

    def is_closing(self) -> bool:
        return self._conn.done

    async def wait_closed(self) -> None:
        await self._conn.sender


class GuestConnection:
    def __init__(self, channel: Channel, sid: int) -> None:
        self.channel = channel
        self.id = sid
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.reader = GuestReader(self)
        self.writer = GuestWriter(self)
        self.done = False
        self._unacked = 0  # bytes from the guest not yet read and acknowledged
        self._credit = WINDOW  # bytes the guest will still take from us
        self._pending = bytearray()
        self._eof = False
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self.sender = asyncio.create_task(self._send_loop(), name=f"podvm-tcp-{sid}")

    # -- the caller's side ----------------------------------------------------------------------
    def queue(self, data: bytes) -> None:
        if self.done or self._eof:
            raise ConnectionResetError(errno.ECONNRESET, "the guest connection is closed")
        self._pending += data
        self._wake.set()

    async def drained(self) -> None:
        while len(self._pending) > HIGH_WATER and not self.done:
            self._room.clear()
            await self._room.wait()
        if self.done and self._pending:
            raise ConnectionResetError(errno.ECONNRESET, "the guest connection is closed")

    def half_close(self) -> None:
        self._eof = True
        self._wake.set()

    async def consumed(self, n: int) -> None:
        self._unacked -= n
        if not self.done:
            try:
                await self.channel.send(b"A", self.id, str(n).encode())
            except Exception:  # the channel went: the reader learns it from lost()
                pass

    def close(self) -> None:
        """End the stream now (unsent bytes are dropped), telling the guest in the background."""
        if self.done:
            return
        self._finish()
        self.channel.forget_stream(self.id)
        if not self.channel.closed.is_set():
            task = asyncio.get_running_loop().create_task(self.channel.send(b"C", self.id))
            _background.add(task)
            task.add_done_callback(_background.discard)
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    # -- the guest's side -----------------------------------------------------------------------
    def on_frame(self, kind: bytes, data: bytes) -> bool:
        """One frame from the guest; False when it breaks the protocol (counted, dropped)."""
        if kind == b"N" and not self.opened.done():
            self.opened.set_result(None)
        elif kind == b"U" and not self.opened.done():
            code, _, text = data[:512].decode(errors="replace").partition(" ")
            self.opened.set_exception(OSError(int(code) if code.isdigit() and len(code) < 5
                                              else errno.EIO, text or "cannot connect"))
            self.channel.forget_stream(self.id)
            self._finish()
        elif kind == b"D" and self.opened.done() and not self.reader.at_eof():
            if self._unacked + len(data) > WINDOW:
                self.close()
                self.reader.set_exception(ConnectionResetError(
                    errno.ECONNRESET, "the guest sent beyond its window"))
                return False
            self._unacked += len(data)
            self.reader.feed_data(data)
        elif kind == b"H":
            if not self.reader.at_eof():
                self.reader.feed_eof()
        elif kind == b"C":
            self.channel.forget_stream(self.id)
            self._finish()
        elif kind == b"A" and data.isdigit() and len(data) <= 10:
            self._credit = min(WINDOW, self._credit + int(data))
            self._wake.set()
        else:
            return False
        return True

    def lost(self, reason: str) -> None:
        """The channel (or the stream) broke: readers and writers fail instead of waiting."""
        err = ConnectionResetError(errno.ECONNRESET, reason)
        if not self.opened.done():
            self.opened.set_exception(OSError(errno.EHOSTUNREACH, reason))
            self.opened.exception()
        self.reader.set_exception(err)
        self._finish()

    def _finish(self) -> None:
        self.done = True
        if self.reader.exception() is None:
            self.reader.feed_eof()
        self._wake.set()
        self._room.set()

    async def _send_loop(self) -> None:
        try:
            while not self.done:
                await self._wake.wait()
                self._wake.clear()
                while self._pending and self._credit > 0 and not self.done:
                    n = min(len(self._pending), self._credit, CHUNK)
                    chunk = bytes(self._pending[:n])
                    del self._pending[:n]
                    self._credit -= n
                    if len(self._pending) <= HIGH_WATER:
                        self._room.set()
                    await self.channel.send(b"D", self.id, chunk)
                if self._eof and not self._pending and not self.done:
                    await self.channel.send(b"H", self.id)
                    return
        except Exception as e:  # the channel closed under us
            self.lost(str(e) or "the guest agent channel closed")
