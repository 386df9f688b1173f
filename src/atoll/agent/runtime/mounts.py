"""mount(2) and umount2(2) through libc: no process per mount on the pod start path."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

MNT_DETACH = 2
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


class MountError(OSError):
    pass


def mount(source: str, target: str, fstype: str, options: str = "", flags: int = 0) -> None:
    if _libc.mount(source.encode(), target.encode(), fstype.encode(), flags,
                   options.encode() if options else None) != 0:
        err = ctypes.get_errno()
        raise MountError(err, f"mount {fstype} on {target}: {os.strerror(err)}")


def unmount(target: str, *, lazy: bool = True) -> None:
    """Detach a mount; a path that is not mounted is fine."""
    if _libc.umount2(target.encode(), MNT_DETACH if lazy else 0) != 0:
        err = ctypes.get_errno()
        if err not in (22, 2):  # EINVAL: not a mount point; ENOENT: gone
            raise MountError(err, f"umount {target}: {os.strerror(err)}")


MS_BIND = 4096


def bind(source: str, target: str) -> None:
    """A (non-recursive) bind mount; ``source`` may be ``/proc/self/fd/N`` of an O_PATH fd,
    which binds exactly the object that descriptor holds, whatever its path is now."""
    mount(source, target, "", flags=MS_BIND)


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (``\\040``)."""
    out, i = [], 0
    while i < len(field):
        digits = field[i + 1:i + 4]
        if field[i] == "\\" and len(digits) == 3 and digits.isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_points_under(prefix: str) -> list[str]:
    """Mount points at or below ``prefix`` (as this process sees them), deepest first.

    ``os.path.ismount`` cannot tell a bind mount from the same filesystem (same device):
    the kernel's own table can."""
    prefix = os.path.normpath(prefix)
    found = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                fields = line.split(" ")
                if len(fields) < 5:
                    continue
                point = _unescape(fields[4])
                if point == prefix or point.startswith(prefix + "/"):
                    found.append(point)
    except OSError:
        return []
    return sorted(set(found), key=lambda p: (-p.count("/"), p))


def unmount_all_under(prefix: str, *, rounds: int = 8) -> list[str]:
    """Detach every mount at or below ``prefix`` (stacked ones too); what is left is returned."""
    for _ in range(rounds):
        points = mount_points_under(prefix)
        if not points:
            return []
        for point in points:
            try:
                unmount(point)
            except MountError:
                pass
    return mount_points_under(prefix)
