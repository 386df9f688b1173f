"""A writer for the "newc" cpio format (SVR4 with no CRC), the one Linux initramfs reads.

``cpio`` itself is not installed on a fresh Debian, and the format is a fixed
ASCII header per entry, so a few lines of Python do: entries are added in order
(directories before their contents), all owned by root, then ``TRAILER!!!``.
"""

from __future__ import annotations

import stat
from typing import BinaryIO

MAGIC = b"070701"


class CpioWriter:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.ino = 1
        self.offset = 0

    def _entry(self, name: str, mode: int, data: bytes = b"", *, rdev: tuple[int, int] = (0, 0),
               mtime: int = 0) -> None:
        encoded = name.lstrip("/").encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, mtime, len(data), 0, 0, rdev[0], rdev[1],
                  len(encoded), 0]
        self.ino += 1
        header = MAGIC + b"".join(b"%08X" % f for f in fields)
        self._write(header + encoded)
        self._pad()
        self._write(data)
        self._pad()

    def _write(self, data: bytes) -> None:
        self.out.write(data)
        self.offset += len(data)

    def _pad(self) -> None:
        self._write(b"\0" * (-self.offset % 4))

    def directory(self, name: str, perm: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | perm)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def device(self, name: str, kind: str, major: int, minor: int, perm: int = 0o600) -> None:
        """A device node: ``kind`` is "c" (character) or "b" (block)."""
        mode = (stat.S_IFCHR if kind == "c" else stat.S_IFBLK) | perm
        self._entry(name, mode, rdev=(major, minor))

    def close(self) -> None:
        self._entry("TRAILER!!!", 0)
        self._write(b"\0" * (-self.offset % 512))
