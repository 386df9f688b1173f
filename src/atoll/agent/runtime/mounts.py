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
