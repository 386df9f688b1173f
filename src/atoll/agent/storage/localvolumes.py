"""The node-local datastore of ``storage.atoll.dev/local``: one directory per volume.

``<agent data>/volumes/<volume handle>/`` holds

- ``meta.json``: what the volume is (PV name, mode, size, reclaim policy);
- Filesystem volumes: ``disk.img``, a sparse file of exactly the PV's capacity formatted
  ext4, loop-mounted at ``mount/`` once per host however many pods use it (so the size is
  enforced: a write past it is ENOSPC); Block volumes: ``disk.raw``, a sparse raw file;
- ``users/``: one file per pod or VM on this host using it, holding the owner's directory.
  The mount goes when the last user does; a user whose directory is gone (a pod cleaned up
  while nobody watched) no longer counts, so a crash never pins a mount for ever.

A volume is made whole under ``.<handle>.tmp`` and renamed into place, and removed by a
rename to ``.<handle>.del`` first: a directory named for a handle is always complete, and a
half-made or half-removed one left by kill -9 is redone or finished on the next attempt.
A mount that exists is adopted (after checking it shows this volume's file), never mounted
twice.  A volume grows (never shrinks) to its PV's capacity: the file is truncated larger,
and an ext4 one is resized at once when it is not mounted (``e2fsck``, ``resize2fs`` on the
image), online when it is (``losetup -c``, ``resize2fs``: the kernel wants CAP_SYS_RESOURCE
for that; a host without it grows the filesystem at its next mount); ``meta.json`` keeps
``size`` (the file's), ``fs_size`` (the filesystem's) and ``reported`` (the size the claim's
status has been told), each written after the step it records, so a step cut short by
kill -9 is redone from the PV's capacity.  One ``LocalVolumes`` per data directory
(``shared``) serialises each volume's operations in the agent's event loop.  A volume whose
PV names a data source (a snapshot to restore, a volume to clone: ``source``) is filled by
the ``populate`` hook (``snapshots.py``) instead of being formatted empty, inside the same
``.tmp`` directory, so a half-filled volume is never taken for a whole one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from atoll.agent.runtime import mounts
from atoll.api import quantity
from atoll.api.snapshots import SOURCE_SNAPSHOT, SOURCE_VOLUME

log = logging.getLogger(__name__)

DRIVER = "storage.atoll.dev/local"
FILESYSTEM, BLOCK = "Filesystem", "Block"
META, FS_DISK, BLOCK_DISK, MOUNT, USERS = "meta.json", "disk.img", "disk.raw", "mount", "users"
#: the disk image a VM gets inside a Filesystem volume (as KubeVirt does)
VM_DISK = "disk.img"
MIB = 1 << 20
CAP_SYS_RESOURCE = 24
_HANDLE = re.compile(r"^[a-z0-9]([-a-z0-9._]{0,251}[a-z0-9])?$")


class LocalVolumeError(Exception):
    """The volume cannot be made or used; the message says why (for an Event or condition)."""


@dataclass(frozen=True)
class VolumeSpec:
    handle: str
    pv: str
    size: int
    mode: str = FILESYSTEM
    fs_type: str = "ext4"
    reclaim: str = "Delete"
    #: ``snapshot:<handle>`` or ``volume:<handle>``: the data a new volume starts with
    source: str = ""


def is_local(pv: dict[str, Any]) -> bool:
    return ((pv.get("spec") or {}).get("csi") or {}).get("driver") == DRIVER


#: the PV informer's index of local volumes by ``spec.csi.volumeHandle``
HANDLE_INDEX = "local-volume-handle"


def by_handle(pv: dict[str, Any]) -> list[str]:
    handle = ((pv.get("spec") or {}).get("csi") or {}).get("volumeHandle")
    return [handle] if is_local(pv) and isinstance(handle, str) else []


def pv_of(pvs: Any, handle: str) -> dict[str, Any] | None:
    """The local PV whose volume is ``handle`` (an informer indexed by ``by_handle``)."""
    return next(iter(pvs.by_index(HANDLE_INDEX, handle)), None)


def spec_from_pv(pv: dict[str, Any]) -> VolumeSpec:
    """The volume a ``storage.atoll.dev/local`` PersistentVolume describes."""
    spec = pv.get("spec") or {}
    csi = spec.get("csi") or {}
    name = str((pv.get("metadata") or {}).get("name") or "")
    handle = csi.get("volumeHandle")
    if not isinstance(handle, str) or not _HANDLE.match(handle):
        raise LocalVolumeError(f"PersistentVolume {name}: spec.csi.volumeHandle {handle!r} is "
                               "not a valid volume name (lowercase letters, digits, '-', '.')")
    try:
        size = quantity.integer((spec.get("capacity") or {}).get("storage"))
    except (TypeError, ValueError):
        size = 0
    if size <= 0:
        raise LocalVolumeError(f"PersistentVolume {name}: spec.capacity.storage must be a "
                               "positive quantity")
    mode = spec.get("volumeMode") or FILESYSTEM
    if mode not in (FILESYSTEM, BLOCK):
        raise LocalVolumeError(f"PersistentVolume {name}: unknown volumeMode {mode!r}")
    fs_type = csi.get("fsType") or "ext4"
    if mode == FILESYSTEM and fs_type != "ext4":
        raise LocalVolumeError(f"PersistentVolume {name}: spec.csi.fsType {fs_type!r} is not "
                               "supported by storage.atoll.dev/local (ext4 only)")
    reclaim = spec.get("persistentVolumeReclaimPolicy") or "Delete"
    attrs = csi.get("volumeAttributes") if isinstance(csi.get("volumeAttributes"), dict) else {}
    source = ""
    for kind, key in (("snapshot", SOURCE_SNAPSHOT), ("volume", SOURCE_VOLUME)):
        value = attrs.get(key)
        if isinstance(value, str) and _HANDLE.match(value):
            source = f"{kind}:{value}"
    return VolumeSpec(handle, name, size, mode, "ext4", str(reclaim), source)


def has_capability(bit: int) -> bool:
    """Whether this process has the capability (its effective set, /proc/self/status)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> bit & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


async def run(*argv: str, ok: tuple[int, ...] = (0,)) -> None:
    """A helper program (mkfs, debugfs, mount); its output is the error if it fails."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
    except OSError as e:
        raise LocalVolumeError(f"{argv[0]}: {e.strerror or e}") from None
    out, _ = await proc.communicate()
    if proc.returncode not in ok:
        text = out.decode(errors="replace").strip()[-400:]
        raise LocalVolumeError(f"{argv[0]} failed (exit {proc.returncode}): {text}")


class LocalVolumes:
    def __init__(self, root: Path, *, mkfs: str = "mkfs.ext4", debugfs: str = "debugfs",
                 mount: str = "mount", losetup: str = "losetup",
                 resize2fs: str = "resize2fs", e2fsck: str = "e2fsck") -> None:
        self.root = root
        self.mkfs, self.debugfs, self.mount_cmd = mkfs, debugfs, mount
        self.losetup, self.resize2fs, self.e2fsck = losetup, resize2fs, e2fsck
        #: the kernel grows a mounted ext4 only for CAP_SYS_RESOURCE; without it (some
        #: containers) a mounted volume's filesystem grows at its next mount
        self.online_resize = has_capability(CAP_SYS_RESOURCE)
        self._locks: dict[str, asyncio.Lock] = {}
        #: called after a volume was created or removed (the capacity report listens)
        self.on_change: list[Callable[[], None]] = []
        #: called with a handle once its last user on this host is gone (the janitor listens)
        self.on_idle: list[Callable[[str], None]] = []
        #: called with a handle when it was acquired or grew (the expansion report listens)
        self.on_used: list[Callable[[str], None]] = []
        #: awaited with (handle, raw file, new size) when a Block volume grew: running VMs
        #: using the file are told (QMP ``block_resize``)
        self.on_grown: list[Callable[[str, Path, int], Awaitable[None]]] = []
        #: awaited with (spec, disk file to write) for a new volume with a ``source``: fills
        #: the file (of the spec's size, its filesystem grown to it)
        self.populate: Callable[[VolumeSpec, Path], Awaitable[None]] | None = None

    # -- reading ---------------------------------------------------------------------------------
    def dir(self, handle: str) -> Path:
        if not _HANDLE.match(handle):
            raise LocalVolumeError(f"invalid volume name {handle!r}")
        return self.root / handle

    def handles(self) -> list[str]:
        """The complete volumes on this host."""
        try:
            return sorted(d.name for d in self.root.iterdir()
                          if not d.name.startswith(".") and (d / META).is_file())
        except OSError:
            return []

    def meta(self, handle: str) -> dict[str, Any] | None:
        try:
            data = json.loads((self.dir(handle) / META).read_text())
        except (OSError, ValueError, LocalVolumeError):
            return None
        return data if isinstance(data, dict) else None

    def disk(self, handle: str) -> Path:
        meta = self.meta(handle) or {}
        return self.dir(handle) / (BLOCK_DISK if meta.get("mode") == BLOCK else FS_DISK)

    def mount_dir(self, handle: str) -> Path:
        return self.dir(handle) / MOUNT

    def users(self, handle: str) -> list[str]:
        """Who uses the volume on this host; users whose owner directory is gone are dropped."""
        live = []
        users = self.dir(handle) / USERS
        try:
            entries = list(users.iterdir())
        except OSError:
            return []
        for entry in entries:
            try:
                owner = entry.read_text().strip()
            except OSError:
                continue
            if owner and os.path.exists(owner):
                live.append(entry.name)
            else:
                entry.unlink(missing_ok=True)
        return sorted(live)

    def mounted(self, handle: str) -> bool:
        return _mount_device(str(self.mount_dir(handle))) is not None

    def allocation(self, handle: str) -> tuple[int, int]:
        """(size, bytes allocated on the host) of the volume's backing file."""
        meta = self.meta(handle) or {}
        try:
            st = self.disk(handle).stat()
        except OSError:
            return int(meta.get("size") or 0), 0
        return int(meta.get("size") or st.st_size), st.st_blocks * 512

    def unallocated(self) -> int:
        """What the sparse volumes may still take from the host's disk."""
        total = 0
        for handle in self.handles():
            size, used = self.allocation(handle)
            total += max(0, size - used)
        return total

    def free_bytes(self) -> int:
        path = self.root if self.root.exists() else self.root.parent
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize

    def _lock(self, handle: str) -> asyncio.Lock:
        return self._locks.setdefault(handle, asyncio.Lock())

    def lock(self, handle: str) -> asyncio.Lock:
        """The volume's operation lock (a snapshot is cut holding it: no mount, growth or
        removal in between)."""
        return self._lock(handle)

    # -- creating --------------------------------------------------------------------------------
    async def ensure(self, spec: VolumeSpec) -> Path:
        """The volume's directory, made (formatted, for Filesystem) if it is not there yet."""
        async with self._lock(spec.handle):
            return await self._ensure(spec)

    async def _ensure(self, spec: VolumeSpec) -> Path:
        final = self.dir(spec.handle)
        meta = self.meta(spec.handle)
        if meta is not None:
            if meta.get("mode") != spec.mode:
                raise LocalVolumeError(f"volume {spec.handle} on this host is {meta.get('mode')}"
                                       f", the PersistentVolume asks {spec.mode}")
            if meta.get("reclaim") != spec.reclaim:
                self._write_meta(final, {**meta, "reclaim": spec.reclaim})
            return final
        if final.exists():  # not ours, or a leftover without its record: never used half-made
            raise LocalVolumeError(f"{final} exists but is not a complete volume")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{spec.handle}.tmp"
        if not _remove_tree(tmp):
            raise LocalVolumeError(f"{tmp} is still mounted")
        (tmp / USERS).mkdir(parents=True)
        disk = tmp / (BLOCK_DISK if spec.mode == BLOCK else FS_DISK)
        if spec.mode == FILESYSTEM:
            (tmp / MOUNT).mkdir()
        if spec.source:
            if self.populate is None:
                raise LocalVolumeError(f"volume {spec.handle}: nothing here fills a volume from "
                                       f"{spec.source}")
            await self.populate(spec, disk)
        elif spec.mode == FILESYSTEM:
            await asyncio.to_thread(_sparse_file, disk, spec.size)
            # -m 0: the claim's whole size is the user's; the root directory open to any uid
            await run(self.mkfs, "-q", "-F", "-m", "0", "-E", "root_owner=0:0", str(disk))
            await run(self.debugfs, "-w", "-R", "set_inode_field / mode 040777", str(disk))
        else:
            await asyncio.to_thread(_sparse_file, disk, spec.size)
        self._write_meta(tmp, dict(asdict(spec), fs_size=spec.size, reported=0))
        await asyncio.to_thread(_fsync_dir, tmp)
        os.rename(tmp, final)
        await asyncio.to_thread(_fsync_dir, self.root)
        log.info("volume %s: created (%s, %d bytes)", spec.handle, spec.mode, spec.size)
        self._changed()
        return final

    @staticmethod
    def _write_meta(directory: Path, meta: dict[str, Any]) -> None:
        staged = directory / (META + ".tmp")
        with open(staged, "w") as f:
            json.dump(meta, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(staged, directory / META)

    # -- using -----------------------------------------------------------------------------------
    async def acquire(self, spec: VolumeSpec, user: str, owner: Path) -> Path:
        """Record ``user`` (whose life is ``owner``'s directory) and make the volume usable:
        the mounted directory (Filesystem) or the raw file (Block)."""
        if "/" in user or user.startswith("."):
            raise LocalVolumeError(f"invalid volume user {user!r}")
        async with self._lock(spec.handle):
            final = await self._ensure(spec)
            marker = final / USERS / user
            if not marker.exists() or marker.read_text().strip() != str(owner):
                staged = final / USERS / f".{user}.tmp"
                staged.write_text(str(owner))
                os.replace(staged, marker)
            await self._grow(spec.handle, spec.size)
            if spec.mode == BLOCK:
                path = final / BLOCK_DISK
            else:
                await self._mount(spec.handle)
                path = final / MOUNT
        self._used(spec.handle)
        return path

    # -- growing ---------------------------------------------------------------------------------
    async def grow(self, handle: str, size: int) -> bool:
        """Grow the volume to ``size`` bytes (its PV's capacity); True once the data and, for
        Filesystem, the filesystem have that size (a filesystem not mounted here waits for
        its next mount: False)."""
        async with self._lock(handle):
            done = await self._grow(handle, size)
        self._used(handle)
        return done

    def grown(self, handle: str) -> bool:
        """Whether the filesystem (Filesystem) or the file (Block) has the recorded size."""
        meta = self.meta(handle) or {}
        size = int(meta.get("size") or 0)
        return meta.get("mode") == BLOCK or int(meta.get("fs_size") or size) >= size

    async def _grow(self, handle: str, size: int) -> bool:
        meta = self.meta(handle)
        if meta is None:
            raise LocalVolumeError(f"volume {handle} is not on this host")
        disk = self.disk(handle)
        if size > int(meta.get("size") or 0):
            have = disk.stat().st_size
            if size > have:
                await asyncio.to_thread(_grow_file, disk, size)
            if meta.get("mode") == BLOCK:
                for hook in list(self.on_grown):
                    await hook(handle, disk, size)
            meta = {**meta, "size": size, "fs_size": int(meta.get("fs_size") or
                                                         meta.get("size") or 0)}
            self._write_meta(self.dir(handle), meta)
            log.info("volume %s: grown to %d bytes", handle, size)
            self._changed()
        if self.grown(handle):
            return True
        if not self.mounted(handle):
            await self._resize_offline(handle)
            return True
        if not self.online_resize:
            return False  # mounted, and this host may not grow a mounted ext4: next mount
        await self._resize_online(handle)
        return True

    async def _resize_online(self, handle: str) -> None:
        """Growth of the mounted filesystem to its file's size (the kernel's online resize)."""
        device = _mount_device(str(self.mount_dir(handle)))
        name = _block_name(device) if device else None
        if name is None:
            raise LocalVolumeError(f"volume {handle}: its loop device is not found")
        await run(self.losetup, "-c", f"/dev/{name}")
        await run(self.resize2fs, f"/dev/{name}")
        self._resized(handle)

    async def _resize_offline(self, handle: str) -> None:
        """Growth of the unmounted image: resize2fs wants a freshly checked filesystem."""
        disk = str(self.dir(handle) / FS_DISK)
        await run(self.e2fsck, "-f", "-p", disk, ok=(0, 1))  # 1: something was fixed
        await run(self.resize2fs, disk)
        self._resized(handle)

    def _resized(self, handle: str) -> None:
        meta = self.meta(handle) or {}
        self._write_meta(self.dir(handle), {**meta, "fs_size": int(meta.get("size") or 0)})
        log.info("volume %s: filesystem grown to %s bytes", handle, meta.get("size"))

    def mark_reported(self, handle: str, size: int) -> None:
        """The claim's status says ``size``: nothing more to tell."""
        meta = self.meta(handle)
        if meta is not None and int(meta.get("reported") or 0) < size:
            self._write_meta(self.dir(handle), {**meta, "reported": size})

    def reported(self, handle: str) -> int:
        meta = self.meta(handle) or {}
        return int(meta.get("reported", meta.get("size")) or 0)

    def _used(self, handle: str) -> None:
        for hook in list(self.on_used):
            hook(handle)

    async def _mount(self, handle: str) -> None:
        point = str(self.mount_dir(handle))
        disk = self.dir(handle) / FS_DISK
        device = _mount_device(point)
        if device is None and not self.grown(handle):
            await self._resize_offline(handle)  # grown while it was not mounted
        if device is None:
            # util-linux reuses a loop device already backing this file (one superblock)
            await run(self.mount_cmd, "-t", "ext4", "-o", "loop,discard", str(disk), point)
            device = _mount_device(point)
            if device is None:
                raise LocalVolumeError(f"mount of {disk} on {point} did not show up")
        backing = _loop_backing(device)
        if backing is None or os.path.realpath(backing) != os.path.realpath(disk):
            raise LocalVolumeError(f"{point} shows {backing or device}, not {disk}")
        if not self.grown(handle) and self.online_resize:
            await self._resize_online(handle)  # grown while mounted by a killed agent

    async def release(self, user: str) -> None:
        """``user`` is gone: drop it from every volume; unmount those nobody uses any more."""
        for handle in self.handles():
            if not (self.dir(handle) / USERS / user).exists():
                continue
            async with self._lock(handle):
                (self.dir(handle) / USERS / user).unlink(missing_ok=True)
                if self.users(handle):
                    continue
                try:
                    self._unmount(handle)
                except LocalVolumeError as e:  # adopted again next time; never mounted twice
                    log.warning("volume %s: %s", handle, e)
                    continue
            for hook in list(self.on_idle):
                hook(handle)

    def _unmount(self, handle: str) -> None:
        point = str(self.mount_dir(handle))
        while _mount_device(point) is not None:
            try:
                mounts.unmount(point, lazy=False)  # never lazy: a hidden mount could be doubled
            except mounts.MountError as e:
                raise LocalVolumeError(f"cannot unmount {point}: {e.strerror}") from None

    # -- removing --------------------------------------------------------------------------------
    async def remove(self, handle: str) -> bool:
        """Delete the volume's data unless someone on this host uses it (False then)."""
        async with self._lock(handle):
            final = self.dir(handle)
            if not final.exists():
                return True
            if self.users(handle):
                return False
            self._unmount(handle)
            doomed = self.root / f".{handle}.del"
            if not _remove_tree(doomed):
                raise LocalVolumeError(f"{doomed} is still mounted")
            os.rename(final, doomed)
            await asyncio.to_thread(_fsync_dir, self.root)
            if not await asyncio.to_thread(_remove_tree, doomed):
                raise LocalVolumeError(f"{doomed} is still mounted")
            log.info("volume %s: removed", handle)
        self._changed()
        return True

    async def clean_leftovers(self) -> None:
        """Finish what a killed agent left: half-made (``.tmp``) and half-removed volumes."""
        try:
            names = [d.name for d in self.root.iterdir() if d.name.startswith(".")]
        except OSError:
            return
        for name in names:
            m = re.match(r"^\.(.+)\.(tmp|del)$", name)
            if not m:
                continue
            async with self._lock(m.group(1)):
                if not await asyncio.to_thread(_remove_tree, self.root / name):
                    log.warning("not removing %s: still mounted", self.root / name)

    def _changed(self) -> None:
        for hook in list(self.on_change):
            hook()


# -- VM disks inside Filesystem volumes --------------------------------------------------------
async def filesystem_disk(directory: Path, limit: int) -> Path:
    """``<directory>/disk.img``: a sparse raw disk filling the filesystem (at most ``limit``
    bytes), made once and kept, so a later VM on the same claim sees the same disk."""
    disk = directory / VM_DISK
    if disk.exists():
        return disk
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    size = min(limit, free - max(free // 100, MIB)) // MIB * MIB  # room for the file's extents
    if size <= 0:
        raise LocalVolumeError(f"no room for a disk image in {directory}")
    staged = directory / f".{VM_DISK}.tmp"
    staged.unlink(missing_ok=True)
    await asyncio.to_thread(_sparse_file, staged, size)
    os.rename(staged, disk)
    await asyncio.to_thread(_fsync_dir, directory)
    return disk


# -- helpers -----------------------------------------------------------------------------------
def _sparse_file(path: Path, size: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def _grow_file(path: Path, size: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        if os.fstat(fd).st_size < size:  # never shrinks
            os.ftruncate(fd, size)
            os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_tree(path: Path) -> bool:
    """Delete ``path`` unless something is mounted in it (its files would go with it)."""
    if not os.path.lexists(path):
        return True
    if mounts.unmount_all_under(str(path)):
        return False
    shutil.rmtree(path, ignore_errors=True)
    return not os.path.lexists(path)


def _mount_device(point: str) -> str | None:
    """``major:minor`` of what is mounted exactly at ``point`` (the top mount), or None."""
    point = os.path.normpath(point)
    found = None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                fields = line.split(" ")
                if len(fields) > 4 and _unescape(fields[4]) == point:
                    found = fields[2]
    except OSError:
        return None
    return found


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (``\\040``)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _block_name(device: str) -> str | None:
    """``loop3`` for ``7:3``, from sysfs."""
    try:
        return os.path.basename(os.readlink(f"/sys/dev/block/{device}"))
    except OSError:
        return None


def _loop_backing(device: str) -> str | None:
    try:
        return Path(f"/sys/dev/block/{device}/loop/backing_file").read_text().strip()
    except OSError:
        return None


_shared: dict[Path, LocalVolumes] = {}


def shared(root: Path) -> LocalVolumes:
    """The one datastore of ``root`` in this process (pods, VMs and the janitor share it)."""
    key = Path(os.path.abspath(root))
    if key not in _shared:
        _shared[key] = LocalVolumes(key)
    return _shared[key]
