"""A terminal's output in the CRI log: an unfinished line (a prompt) is written at once as a
partial record, so attach shows it; pipes keep whole lines."""

from __future__ import annotations

import asyncio
import runpy
from collections.abc import AsyncIterator
from pathlib import Path

from atoll.agent.pods import logs
from atoll.agent.pods.logs import LogOptions, parse_line
from atoll.agent.runtime.containers import SHIM


def await_all(chunks: AsyncIterator[bytes]) -> list[bytes]:
    async def collect() -> list[bytes]:
        return [c async for c in chunks]
    return asyncio.run(collect())


def records(path: Path) -> list[tuple[bytes, bool, bytes]]:
    out = []
    for line in path.read_bytes().split(b"\n")[:-1]:
        parsed = parse_line(line)
        assert parsed is not None
        out.append((parsed[1], parsed[2], parsed[3]))
    return out


def test_a_terminal_logs_a_prompt_at_once(tmp_path: Path) -> None:
    shim = runpy.run_path(str(SHIM))
    eager = shim["LogWriter"](str(tmp_path / "tty.log"), eager=True)
    eager.feed("stdout", b"hello\r\n/ # ")
    assert records(tmp_path / "tty.log") == [(b"stdout", True, b"hello\r"),
                                             (b"stdout", False, b"/ # ")]
    eager.feed("stdout", b"ls\r\n10%\r50%\r\n")
    eager.close()
    lines = await_all(logs.stream(tmp_path / "tty.log", LogOptions(), lambda: True))
    # kubectl logs joins the partial records, and a lone carriage return cuts nothing
    assert lines == [b"hello\r\n", b"/ # ls\r\n", b"10%\r50%\r\n"]
    piped = shim["LogWriter"](str(tmp_path / "pipe.log"))
    piped.feed("stdout", b"half")
    assert (tmp_path / "pipe.log").read_bytes() == b""
    piped.close()
