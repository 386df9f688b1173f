"""Watching a guest boot through its serial console log.

The agent cannot look inside a guest, but every Atoll image writes to the serial
port, and cloud-init says when it is done.  So the console log (written by QEMU)
is followed with inotify: cloud-init's end marks ``GuestBootstrap`` True; the
firmware's or kernel's own words for a failed boot ("Boot failed: not a bootable
disk", a kernel panic), or no output at all for a while, make it False with that
reason, instead of a VM that looks fine.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from inotify_simple import INotify, flags

#: what cloud-init (or the tiny image's) prints once the guest's bootstrap has run
DONE_MARKERS = (b"atoll-tiny: cloud-init done", b"Cloud-init v.")
FINISHED = b" finished at "
#: what firmware and kernels print when a boot goes wrong
FAILURE_MARKERS = (b"Boot failed: ", b"No bootable device", b"Kernel panic - not syncing")


class BootWatch:
    """``result`` is None while booting, then "done", "failed" (``detail`` says how) or
    "silent"."""

    def __init__(self, console_log: Path, silence_timeout: float = 120.0) -> None:
        self.path = console_log
        self.silence_timeout = silence_timeout
        self.result: str | None = None
        self.detail = ""
        self.changed = asyncio.Event()
        self._offset = 0
        self._tail = b""
        self._task: asyncio.Task[None] | None = None

    def start(self, start_offset: int, known: str = "") -> None:
        """Follow what the guest writes after ``start_offset`` (this boot's part of the log).
        ``known``: the result seen elsewhere (a guest that arrived by live migration, whose
        boot is in the source host's log)."""
        self._offset = start_offset
        if known in ("done", "failed"):
            self._finish(known)
            return
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        inotify = INotify()
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()
        try:
            inotify.add_watch(str(self.path.parent), flags.MODIFY | flags.CREATE)
            loop.add_reader(inotify.fileno(), woken.set)
            seen_any = False
            deadline = loop.time() + self.silence_timeout
            while self.result is None:
                if self._read():
                    seen_any = True
                if self.result is not None:
                    break
                left = deadline - loop.time()
                if not seen_any and left <= 0:
                    self._finish("silent")
                    break
                woken.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(woken.wait(), left if not seen_any else None)
                inotify.read(timeout=0)
        finally:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(inotify.fileno())
            inotify.close()

    def _read(self) -> bool:
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read(1 << 20)
        except FileNotFoundError:
            return False
        if not data:
            return False
        self._offset += len(data)
        text = self._tail + data
        self._tail = text[-256:]
        if DONE_MARKERS[0] in text or (DONE_MARKERS[1] in text and FINISHED in text):
            self._finish("done")
            return True
        for marker in FAILURE_MARKERS:
            at = text.find(marker)
            if at >= 0 and b"\n" in text[at:]:  # the whole line: it says why
                self.detail = text[at:].split(b"\n", 1)[0].decode(errors="replace").strip()
                self._finish("failed")
        return True

    def _finish(self, result: str) -> None:
        self.result = result
        self.changed.set()
