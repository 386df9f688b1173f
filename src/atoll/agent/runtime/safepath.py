"""Paths inside a root (a volume, an image layer) resolved without leaving it.

A container can put symlinks in any volume it may write, and a layer tar can
hold any symlink; the agent runs as root on the host, so following one of
those there reaches the host's files.  Everything here works on file
descriptors, one component at a time (``openat`` with ``O_NOFOLLOW``, as
kubelet's subpath code does), or with ``openat2`` where the kernel has it,
so a path is checked and used as the same object: nothing can be swapped in
between.

Two ways to resolve:

* ``open_beneath``: no symlink at all, no ``..`` (subPath: a symlink in
  the path is refused, not followed);
* ``open_dir_in_root``: symlinks are followed as if the root were ``/``
  (image layers: ``lib -> /usr/lib`` means the layer's own ``usr/lib``).
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import stat

O_PATH = getattr(os, "O_PATH", 0o10000000)
_NOFOLLOW = O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_SYS_OPENAT2 = 437
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
MAX_SYMLINKS = 40

#: tests set this to False to exercise the component walk
use_openat2 = True


class PathEscape(OSError):
    """The path leaves its root (absolute, ``..``, a symlink) or is not what it must be."""


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def components(rel: str) -> list[str]:
    """The components of a path that must stay inside its root; absolute and ``..`` refused."""
    if "\x00" in rel:
        raise PathEscape(errno.EINVAL, f"{rel!r} contains a NUL byte")
    if rel.startswith("/"):
        raise PathEscape(errno.EXDEV, f"{rel!r} is an absolute path")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PathEscape(errno.EXDEV, f"{rel!r} contains '..'")
    return parts


def open_root(path: str | os.PathLike[str]) -> int:
    """An ``O_PATH`` descriptor of a root directory (its own path is trusted: the agent's)."""
    return os.open(path, O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def _openat2(dir_fd: int, rel: str, flags: int, resolve: int) -> int | None:
    """``openat2``; None where the kernel (or a seccomp filter) does not offer it."""
    how = _OpenHow(flags, 0, resolve)
    fd = _libc.syscall(_SYS_OPENAT2, ctypes.c_int(dir_fd), rel.encode(), ctypes.byref(how),
                       ctypes.c_size_t(ctypes.sizeof(how)))
    if fd >= 0:
        return int(fd)
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EPERM, errno.E2BIG, errno.EINVAL, errno.ENOTDIR):
        return None  # not offered; or ENOTDIR: the walk says which component
    if err in (errno.ELOOP, errno.EXDEV):
        raise PathEscape(err, f"{rel!r} goes through a symlink or out of its root")
    raise OSError(err, os.strerror(err), rel)


def open_beneath(root_fd: int, rel: str, *, create_dirs: bool = False,
                 dir_mode: int = 0o755) -> int:
    """An ``O_PATH`` descriptor of ``rel`` inside ``root_fd``, no symlink anywhere on the way.

    The last component may be a file or a directory; a missing component is made a
    directory (``mkdirat`` in the checked parent, with ``dir_mode``) when ``create_dirs``,
    else ``FileNotFoundError``.  A symlink component, absolute path or ``..``:
    ``PathEscape``.  The caller closes the descriptor.
    """
    parts = components(rel)
    if not parts:
        return os.dup(root_fd)
    if use_openat2:
        try:
            fd = _openat2(root_fd, "/".join(parts), _NOFOLLOW, _RESOLVE_NO_SYMLINKS
                          | _RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS)
        except FileNotFoundError:
            if not create_dirs:
                raise
            fd = None
        if fd is not None:
            return _checked_last(fd, rel)
    return _walk_beneath(root_fd, parts, rel, create_dirs, dir_mode)


def _walk_beneath(root_fd: int, parts: list[str], rel: str, create: bool, mode: int) -> int:
    fd = os.dup(root_fd)
    try:
        for i, name in enumerate(parts):
            last = i == len(parts) - 1
            flags = _NOFOLLOW | (0 if last else os.O_DIRECTORY)
            try:
                child = os.open(name, flags, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(name, mode, dir_fd=fd)
                except FileExistsError:
                    pass  # made meanwhile: opened (and checked) below like any other
                else:
                    _chmod_created(fd, name, mode)
                child = _open_dir_component(fd, name, rel)
            except OSError as e:  # ENOTDIR, ELOOP: a symlink or a file on the way
                raise _why_not(fd, name, rel, e) from None
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return _checked_last(fd, rel)


def _open_dir_component(dir_fd: int, name: str, rel: str) -> int:
    try:
        return os.open(name, _NOFOLLOW | os.O_DIRECTORY, dir_fd=dir_fd)
    except OSError as e:
        raise _why_not(dir_fd, name, rel, e) from None


def _why_not(dir_fd: int, name: str, rel: str, e: OSError) -> OSError:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return e
    if stat.S_ISLNK(st.st_mode):
        return PathEscape(errno.ELOOP, f"{rel!r}: {name!r} is a symlink")
    if not stat.S_ISDIR(st.st_mode):
        return PathEscape(errno.ENOTDIR, f"{rel!r}: {name!r} is not a directory")
    return e


def _chmod_created(dir_fd: int, name: str, mode: int) -> None:
    """Give a directory we just made its mode despite the umask (through a checked fd)."""
    fd = os.open(name, _NOFOLLOW | os.O_DIRECTORY, dir_fd=dir_fd)
    try:
        chmod_fd(fd, mode)
    finally:
        os.close(fd)


def _checked_last(fd: int, rel: str) -> int:
    """The final object may be a directory, a regular file, a socket or a FIFO; a symlink or
    a device node is refused."""
    try:
        mode = os.fstat(fd).st_mode
    except BaseException:
        os.close(fd)
        raise
    if stat.S_ISDIR(mode) or stat.S_ISREG(mode) or stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode):
        return fd
    os.close(fd)
    if stat.S_ISLNK(mode):
        raise PathEscape(errno.ELOOP, f"{rel!r} is a symlink")
    raise PathEscape(errno.EPERM, f"{rel!r} is a device node")


def fd_path(fd: int) -> str:
    """A path naming exactly the object behind ``fd`` (for mount, chmod of an O_PATH fd)."""
    return f"/proc/self/fd/{fd}"


def chmod_fd(fd: int, mode: int) -> None:
    os.chmod(fd_path(fd), mode)


def open_dir_in_root(root_fd: int, rel: str, *, create_mode: int | None = 0o755,
                     refuse_escaping: bool = False) -> int:
    """An ``O_PATH`` descriptor of directory ``rel`` with symlinks resolved inside the root.

    As ``openat2(RESOLVE_IN_ROOT)``: an absolute symlink restarts at the root, ``..`` at
    the root stays there, so nothing outside is ever reached.  With ``refuse_escaping``
    a symlink that would leave the root if followed on the host (absolute, or ``..``
    above the root) is a ``PathEscape`` instead.  Missing directories are made with
    ``create_mode`` (None: ``FileNotFoundError``).
    """
    pending = list(reversed(components(rel)))
    stack = [os.dup(root_fd)]
    links = 0
    try:
        while pending:
            name = pending.pop()
            if name in ("", "."):
                continue
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                elif refuse_escaping:  # only a symlink's target can hold '..'
                    raise PathEscape(errno.EXDEV, f"{rel!r} goes through a symlink out of "
                                                  "its root")
                continue
            cur = stack[-1]
            try:
                st = os.stat(name, dir_fd=cur, follow_symlinks=False)
            except FileNotFoundError:
                if create_mode is None:
                    raise
                os.mkdir(name, create_mode, dir_fd=cur)
                st = os.stat(name, dir_fd=cur, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > MAX_SYMLINKS:
                    raise PathEscape(errno.ELOOP, f"{rel!r}: too many levels of symlinks")
                target = os.readlink(name, dir_fd=cur)
                if target.startswith("/"):
                    if refuse_escaping:
                        raise PathEscape(errno.EXDEV, f"{rel!r}: {name!r} is a symlink to an "
                                                      "absolute path")
                    while len(stack) > 1:
                        os.close(stack.pop())
                pending.extend(reversed([p for p in target.split("/") if p]))
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise PathEscape(errno.ENOTDIR, f"{rel!r}: {name!r} is not a directory")
            stack.append(_open_dir_component(cur, name, rel))
        return stack.pop()
    finally:
        for fd in stack:
            os.close(fd)


def split_parent(rel: str) -> tuple[str, str]:
    """(parent, last component) of a relative path; the last is never empty, ``.``, ``..``."""
    parts = components(rel)
    if not parts:
        raise PathEscape(errno.EINVAL, f"{rel!r} names no file")
    return "/".join(parts[:-1]), parts[-1]


def remove_at(dir_fd: int, name: str) -> None:
    """Remove ``name`` in ``dir_fd`` (a tree too) without following a symlink; absent is fine."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)  # fd-based on Linux: symlinks are not followed
    else:
        os.unlink(name, dir_fd=dir_fd)

