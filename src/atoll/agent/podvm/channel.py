"""The host end of a pod-VM's agent channel (the framing is in ``guest_agent.c``'s header).

The guest is not trusted: a frame's declared length is checked before anything is read (an
oversized one closes the channel), reads happen in the channel's own task so a guest that
stalls mid-frame blocks nothing else, writes time out (a guest that stops reading closes the
channel), every frame's contents are validated before use (unknown types and ids are counted
and dropped), output kept in memory is capped, and the reader yields to the event loop
regularly so a flood cannot starve the host agent.  Port-forward connections the guest dials
(``tcp``) share the channel; each is bounded by its credit window.

A channel made with ``hello`` is a (re)connection to a running guest agent, which may hold
output kept while no host listened: it says 'Q' with a nonce (again every ``HELLO_EVERY``
seconds until answered) and skips whatever comes before the 'Y' answering that nonce (the
rest of a frame meant for an earlier host), at most ``SYNC_LIMIT`` bytes.  The answer lists
the guest's containers (``guest_procs``) for the runtime to adopt; every exit received is
acknowledged with 'Z', so the guest keeps an exit until a host has it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import re
import secrets
import struct
from dataclasses import dataclass, field
from typing import Callable

from atoll.agent.podvm import tcp

log = logging.getLogger(__name__)

HEADER = struct.Struct(">IcI")
MAX_DATA = 65536
WRITE_TIMEOUT = 10.0
#: frames handled before the reader yields to other tasks even when more are buffered
YIELD_EVERY = 32
_EXIT = re.compile(rb"^(exited|signaled) ([0-9]{1,3})$")
_GUEST_PROC = re.compile(r"^([0-9]{1,10}) ([0-9]{1,10}) (running|exited [0-9]{1,3}|"
                         r"signaled [0-9]{1,3})$")
HELLO_EVERY = 2.0
#: ids a guest may name (ours count up from 1; a u32 on the wire)
MAX_ID = 1 << 31
#: bytes skipped at most while looking for the answer to our hello
SYNC_LIMIT = 4 << 20

OutputSink = Callable[[str, bytes], None]


class ChannelClosed(Exception):
    pass


@dataclass
class Process:
    """One process in the guest as the channel tracks it."""

    id: int
    on_output: OutputSink | None = None
    started: asyncio.Future[int] = field(default_factory=lambda: asyncio.get_running_loop()
                                         .create_future())
    #: (exit code, signal or 0); set once, by the guest's exit frame or the channel's end
    exited: asyncio.Future[tuple[int, int]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())
    failure: str = ""


@dataclass(frozen=True)
class GuestProc:
    """A container the guest agent runs (or ran), from its answer to a hello."""

    id: int
    pid: int
    #: None while it runs, else (exit code, signal or 0) as an exit frame gives them
    exit: tuple[int, int] | None


class Channel:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 *, name: str = "pod-vm", hello: bool = False) -> None:
        self.reader = reader
        self.writer = writer
        self.name = name
        self.ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        #: the guest's containers, as its answer to our hello listed them
        self.guest_procs: list[GuestProc] = []
        self.nonce = secrets.randbelow(0xFFFFFFFF) + 1 if hello else 0
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.dropped = 0
        self._procs: dict[int, Process] = {}
        self._streams: dict[int, tcp.GuestConnection] = {}
        #: streams the host ended lately: the guest's frames already on their way are expected
        self._ended: collections.deque[int] = collections.deque(maxlen=256)
        self._next_id = 1
        self._send_lock = asyncio.Lock()
        #: frames after the hello's answer wait until the owner has adopted what it lists
        self._resumed = asyncio.Event()
        if not hello:
            self._resumed.set()
        self._task = asyncio.create_task(self._read_loop(), name=f"podvm-channel-{name}")
        self._hello = asyncio.create_task(self._say_hello()) if hello else None

    # -- host to guest -------------------------------------------------------------------------
    def process(self, on_output: OutputSink | None = None) -> Process:
        """A new process id and its tracking record (the caller sends the request)."""
        if self.closed.is_set():
            raise ChannelClosed(self.close_reason)
        proc = Process(self._next_id, on_output)
        self._next_id += 1
        self._procs[proc.id] = proc
        return proc

    async def open_tcp(self, port: int) -> tuple[asyncio.StreamReader, tcp.GuestWriter]:
        """A TCP connection the guest agent makes to ``127.0.0.1:port`` inside the guest
        (OSError when it cannot: the guest's reason, or a timeout)."""
        if self.closed.is_set():
            raise ConnectionRefusedError(errno.ECONNREFUSED, self.close_reason)
        conn = tcp.GuestConnection(self, self._next_id)
        self._next_id += 1
        self._streams[conn.id] = conn
        try:
            await self.send(b"T", conn.id, str(int(port)).encode())
            await asyncio.wait_for(asyncio.shield(conn.opened), tcp.OPEN_TIMEOUT)
        except ChannelClosed as e:
            conn.lost(str(e))
            raise ConnectionRefusedError(errno.ECONNREFUSED, str(e)) from None
        except asyncio.TimeoutError:
            conn.close()
            raise TimeoutError(errno.ETIMEDOUT, "the guest agent did not connect in time") \
                from None
        except BaseException:
            conn.close()
            raise
        return conn.reader, conn.writer

    def adopt(self, proc: GuestProc, on_output: OutputSink | None = None) -> Process:
        """Track a container the guest runs since before this channel (see ``guest_procs``);
        one that has exited has its exit set and acknowledged already."""
        if self.closed.is_set():
            raise ChannelClosed(self.close_reason)
        record = Process(proc.id, on_output)
        record.started.set_result(proc.pid)
        if proc.exit is not None:
            record.exited.set_result(proc.exit)
            self._ended.append(proc.id)  # its exit frame may still come: not a stranger
            self.forget(proc.id)
        else:
            self._procs[proc.id] = record
        return record

    def resume(self) -> None:
        """Go on reading after the hello's answer (the processes it lists are adopted)."""
        self._resumed.set()

    def forget(self, pid: int) -> None:
        """Tell the guest it may drop a process's record (its exit is received, or nobody
        wants it: then its exit is never sent); in the background."""
        if not self.nonce or self.closed.is_set():
            return
        task = asyncio.get_running_loop().create_task(self.send(b"Z", pid))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def forget_stream(self, sid: int) -> None:
        if self._streams.pop(sid, None) is not None:
            self._ended.append(sid)

    async def send(self, kind: bytes, pid: int, data: bytes = b"") -> None:
        if self.closed.is_set():
            raise ChannelClosed(self.close_reason)
        if len(data) > MAX_DATA:
            raise ValueError(f"request of {len(data)} bytes is larger than {MAX_DATA}")
        async with self._send_lock:
            try:
                self.writer.write(HEADER.pack(len(data), kind, pid) + data)
                await asyncio.wait_for(self.writer.drain(), WRITE_TIMEOUT)
            except (OSError, asyncio.TimeoutError) as e:
                self.close(f"writing to the guest failed: {e or 'timed out'}")
                raise ChannelClosed(self.close_reason) from None

    def close(self, reason: str) -> None:
        """End the channel: every process still tracked is reported as lost."""
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        self.writer.close()
        if self._hello is not None and self._hello is not asyncio.current_task():
            self._hello.cancel()
        if not self.ready.done():
            self.ready.set_exception(ChannelClosed(reason))
            self.ready.exception()  # retrieved: nobody may be waiting
        for proc in self._procs.values():
            if not proc.started.done():
                proc.failure = reason
                proc.started.set_exception(ChannelClosed(reason))
                proc.started.exception()
            if not proc.exited.done():
                proc.exited.set_exception(ChannelClosed(reason))
                proc.exited.exception()
        self._procs.clear()
        for conn in list(self._streams.values()):
            conn.lost(reason)
        self._streams.clear()
        if self._task is not asyncio.current_task():
            self._task.cancel()

    # -- guest to host ------------------------------------------------------------------------
    async def _say_hello(self) -> None:
        """'Q' until the guest answers: one may be lost while it (re)opens its port."""
        while not self.ready.done():
            try:
                await self.send(b"Q", self.nonce)
            except ChannelClosed:
                return
            with contextlib.suppress(asyncio.TimeoutError, ChannelClosed):
                await asyncio.wait_for(asyncio.shield(self.ready), HELLO_EVERY)

    async def _sync(self) -> None:
        """Skip to the guest's answer to our hello and take it."""
        mark = b"Y" + struct.pack(">I", self.nonce)
        skipped = 0
        while True:
            try:
                got = await self.reader.readuntil(mark)
            except asyncio.LimitOverrunError as e:
                got = await self.reader.readexactly(max(1, e.consumed - len(mark)))
                skipped += len(got)
            else:
                if len(got) >= HEADER.size:
                    size = HEADER.unpack(got[-HEADER.size:])[0]
                    if size <= MAX_DATA:
                        if len(got) > HEADER.size:
                            log.info("%s: skipped %d bytes meant for an earlier host",
                                     self.name, len(got) - HEADER.size)
                        self._dispatch(b"Y", self.nonce, await self.reader.readexactly(size))
                        return
                skipped += len(got)
            if skipped > SYNC_LIMIT:
                raise ConnectionError("no answer to the hello in what the guest sent")

    async def _read_loop(self) -> None:
        handled = 0
        try:
            if self.nonce:
                await self._sync()
                await self._resumed.wait()
            while True:
                size, kind, pid = HEADER.unpack(await self.reader.readexactly(HEADER.size))
                if size > MAX_DATA:
                    self.close(f"the guest sent an oversized frame ({size} bytes)")
                    return
                data = await self.reader.readexactly(size) if size else b""
                try:
                    self._dispatch(kind, pid, data)
                except Exception:  # a bug here must not end the channel silently
                    log.exception("%s: bad frame %r from the guest", self.name, kind)
                    self.dropped += 1
                handled += 1
                if handled % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except (asyncio.IncompleteReadError, OSError) as e:
            self.close(f"the guest closed its agent channel ({type(e).__name__})")
        finally:
            if not self.closed.is_set():
                self.close("the agent channel ended")

    def _dispatch(self, kind: bytes, pid: int, data: bytes) -> None:
        if kind == b"Y":
            if not self.ready.done() and pid == self.nonce:
                self._answered(data.decode(errors="replace"))
            return
        conn = self._streams.get(pid)
        if conn is not None and kind in tcp.STREAM_FRAMES:
            if not conn.on_frame(kind, data):
                self._drop(kind, pid, "bad stream frame")
            return
        if pid in self._ended:
            return
        proc = self._procs.get(pid)
        if proc is None:
            self._drop(kind, pid, "unknown process")
            return
        if kind in (b"O", b"E"):
            if proc.on_output is not None and not proc.exited.done():
                proc.on_output("stdout" if kind == b"O" else "stderr", data)
        elif kind == b"S":
            if proc.started.done() or not data.isdigit() or len(data) > 10:
                self._drop(kind, pid, "bad start")
                return
            proc.started.set_result(int(data))
        elif kind == b"F":
            proc.failure = data[:1024].decode(errors="replace")
            if not proc.started.done():
                proc.started.set_exception(ChannelClosed(proc.failure))
                proc.started.exception()
        elif kind == b"W":
            m = _EXIT.match(data)
            if m is None or proc.exited.done():
                self._drop(kind, pid, "bad exit")
                return
            value = int(m.group(2))
            result = (value, 0) if m.group(1) == b"exited" else (128 + value, value)
            if not proc.started.done():
                proc.started.set_exception(ChannelClosed(proc.failure or "exited at start"))
                proc.started.exception()
            proc.exited.set_result(result)
            del self._procs[pid]
            self.forget(pid)
        else:
            self._drop(kind, pid, "unknown type")

    def _answered(self, text: str) -> None:
        """The guest's answer: its kernel and boot id, then one line per container."""
        first, *lines = text.split("\n")
        for line in lines:
            if line.startswith("next ") and line[5:].isdigit() and len(line) <= 15:
                if int(line[5:]) < MAX_ID:
                    self._next_id = max(self._next_id, int(line[5:]))
                continue
            m = _GUEST_PROC.match(line)
            if m is None or int(m.group(1)) >= MAX_ID:
                self._drop(b"Y", self.nonce, "bad container line")
                continue
            state = m.group(3)
            exit_: tuple[int, int] | None = None
            if state != "running":
                how, value = state.split()
                exit_ = (int(value), 0) if how == "exited" else (128 + int(value), int(value))
            self.guest_procs.append(GuestProc(int(m.group(1)), int(m.group(2)), exit_))
        self._next_id = max([self._next_id, *(p.id + 1 for p in self.guest_procs)])
        self.ready.set_result(first[:256])

    def _drop(self, kind: bytes, pid: int, why: str) -> None:
        self.dropped += 1
        if self.dropped <= 5:
            log.warning("%s: dropped a frame from the guest (%s: type %r, id %d)", self.name,
                        why, kind, pid)
