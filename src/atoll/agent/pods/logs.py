"""Reading container logs back from the CRI-format files the shims write.

Each line is ``<RFC3339Nano> <stream> <F|P> <text>``; partial (``P``)
records are joined with the following ones.  Options follow ``kubectl logs``:
``tailLines``, ``sinceSeconds``/``sinceTime``, ``timestamps``,
``limitBytes``, and ``follow``, which waits on inotify for new lines until
the container has exited.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Callable

from inotify_simple import INotify, flags


@dataclass(frozen=True)
class LogOptions:
    follow: bool = False
    tail_lines: int | None = None
    since: dt.datetime | None = None
    timestamps: bool = False
    limit_bytes: int | None = None


def parse_line(line: bytes) -> tuple[bytes, bytes, bool, bytes] | None:
    """(timestamp, stream, complete, text) of one record."""
    parts = line.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3:
        return None
    text = parts[3] if len(parts) == 4 else b""
    return parts[0], parts[1], parts[2] == b"F", text


def _time(stamp: bytes) -> dt.datetime | None:
    text = stamp.decode(errors="replace").rstrip("Z")
    if "." in text:
        head, frac = text.split(".", 1)
        text = f"{head}.{frac[:6]}"
    try:
        return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None


def render(records: list[tuple[bytes, bytes, bool, bytes]], opts: LogOptions) -> list[bytes]:
    """Whole log lines (partials joined), filtered by time, as kubectl shows them."""
    out = []
    pending: dict[bytes, tuple[bytes, bytes]] = {}
    for stamp, stream, complete, text in records:
        first_stamp, so_far = pending.pop(stream, (stamp, b""))
        if not complete:
            pending[stream] = (first_stamp, so_far + text)
            continue
        if opts.since is not None:
            when = _time(first_stamp)
            if when is not None and when < opts.since:
                continue
        line = so_far + text + b"\n"
        out.append(first_stamp + b" " + line if opts.timestamps else line)
    return out


async def stream(path: Path, opts: LogOptions,
                 finished: Callable[[], bool]) -> AsyncIterator[bytes]:
    """The log's lines, then (with ``follow``) new ones until ``finished()`` and end of file."""
    sent = 0
    limit = opts.limit_bytes
    inotify = INotify() if opts.follow else None
    try:
        if inotify is not None:
            inotify.add_watch(str(path.parent), flags.MODIFY | flags.CREATE | flags.CLOSE_WRITE)
        with open(path, "rb") as f:
            data = f.read()
            # records end at "\n" only: a terminal's text holds lone "\r"s (splitlines would cut)
            consumed = data.rfind(b"\n") + 1
            records = [r for r in (parse_line(x) for x in data[:consumed].split(b"\n")[:-1]) if r]
            f.seek(consumed)
            lines = render(records, opts)
            if opts.tail_lines is not None:
                lines = lines[-opts.tail_lines:] if opts.tail_lines > 0 else []
            for line in lines:
                if limit is not None and sent + len(line) > limit:
                    yield line[:max(0, limit - sent)]
                    return
                sent += len(line)
                yield line
            if inotify is None:
                return
            loop = asyncio.get_running_loop()
            buffered = b""
            while True:
                chunk = f.read()
                if chunk:
                    buffered += chunk
                    *complete, buffered = buffered.split(b"\n")
                    records = [r for r in (parse_line(x) for x in complete) if r]
                    for line in render(records, LogOptions(timestamps=opts.timestamps)):
                        if limit is not None and sent + len(line) > limit:
                            yield line[:max(0, limit - sent)]
                            return
                        sent += len(line)
                        yield line
                    continue
                if finished():
                    return
                ready = loop.create_future()
                fd = inotify.fileno()
                loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
                try:
                    await asyncio.wait_for(ready, 1.0)  # also re-checks ``finished`` each second
                except asyncio.TimeoutError:
                    pass
                finally:
                    loop.remove_reader(fd)
                inotify.read(timeout=0)
    finally:
        if inotify is not None:
            inotify.close()


async def follow_records(path: Path, finished: Callable[[], bool], start: int | None = None
                         ) -> AsyncIterator[tuple[bytes, bytes]]:
    """``(stream, text)`` of output written from now on (or from byte ``start``), until
    ``finished()``: for attach."""
    inotify = INotify()
    try:
        inotify.add_watch(str(path.parent), flags.MODIFY | flags.CREATE | flags.CLOSE_WRITE)
        loop = asyncio.get_running_loop()
        with open(path, "rb") as f:
            if start is None:
                f.seek(0, os.SEEK_END)
            else:
                f.seek(start)
            buffered = b""
            while True:
                chunk = f.read()
                if chunk:
                    buffered += chunk
                    *complete, buffered = buffered.split(b"\n")
                    for line in complete:
                        record = parse_line(line)
                        if record:
                            _, stream_name, full, text = record
                            yield stream_name, text + (b"\n" if full else b"")
                    continue
                if finished():
                    return
                ready = loop.create_future()
                fd = inotify.fileno()
                loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
                try:
                    await asyncio.wait_for(ready, 1.0)
                except asyncio.TimeoutError:
                    pass
                finally:
                    loop.remove_reader(fd)
                inotify.read(timeout=0)
    finally:
        inotify.close()
