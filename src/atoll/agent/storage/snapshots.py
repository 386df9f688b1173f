"""Volume snapshots, host side: the csi-snapshotter sidecar's half of
``snapshot.storage.k8s.io`` for ``storage.atoll.dev/local``, and restores and clones.

The common controller (``controllers/volume/snapshotcontroller.py``) makes a
VolumeSnapshotContent naming a volume handle; the host holding that volume (its PV's node
affinity names this host) cuts the snapshot and writes the content's status
(``snapshotHandle`` = the content's name, ``creationTime`` in nanoseconds, ``restoreSize``
in bytes, ``readyToUse``), recording itself in the annotation ``storage.atoll.dev/
snapshot-node`` first (a restore is provisioned there).  A content being deleted with
``volumesnapshot-being-deleted`` loses its data when its policy is Delete (not while a volume
here still waits to be filled from it), then its finalizer; Retain keeps the data.

``<agent data>/snapshots/<handle>/`` holds ``meta.json`` and the copy of the volume's file
(``disk.img``: the ext4 image, ``disk.raw``: a Block volume).  The copy is
``cp --reflink=auto`` (holes found by SEEK_DATA/SEEK_HOLE kept): on a filesystem with
reflinks (XFS, btrfs) it shares the extents and takes the same time for any size; elsewhere
(ext4 here) it copies only the allocated extents, so an empty 1 GiB volume costs what its
data costs.  ``--sparse=always`` would also punch holes where written blocks are zero, but
it reads every byte through user space: 1.5 to 4 times slower here for the same allocation
(``bench/storage.py``).  The copy is fsynced before the snapshot is recorded: "ready" means
on disk.  qcow2 overlays would be O(1) everywhere, but a loop-mounted ext4 image must stay a
raw file, and a raw file is what a restore needs anyway.  A mounted volume is frozen (``fsfreeze``)
for the copy, so the copy is a consistent filesystem; a marker file names a frozen volume so
that an agent killed mid-copy thaws it at its next start.  A Block volume in use by a pod or
VM is not copied (no way to quiesce its writer from here): the content says so in
``status.error`` and the snapshot is cut once the volume is released.  As everywhere in
the datastore, a snapshot is made whole under ``.<handle>.tmp`` and renamed into place, so a
kill -9 at any point leaves either nothing or the whole snapshot, and the retry finds it.

Restore and clone: a new local volume whose PV carries ``storage.atoll.dev/source-snapshot``
or ``-source-volume`` in ``spec.csi.volumeAttributes`` is filled from that file (the source
volume frozen if mounted) by the datastore's ``populate`` hook, on first use or at once when
its PV appears here, and grown to its own size (the file, then ``resize2fs``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from atoll.agent.storage import claims
from atoll.agent.storage import localvolumes as lv
from atoll.api import errors
from atoll.api import snapshots as snap
from atoll.api.timestamps import rfc3339
from atoll.client.events import WARNING, EventRecorder
from atoll.client.informer import Informer
from atoll.client.rest import ApiClient
from atoll.client.status import patch_with_retry, without_finalizer
from atoll.client.workqueue import WorkQueue, serve

log = logging.getLogger(__name__)
BASE = f"/apis/{snap.GROUP}/{snap.VERSION}/volumesnapshotcontents"
FILL = "fill:"
BY_VOLUME = "snapshot-source-volume"


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def by_volume(content: dict[str, Any]) -> list[str]:
    handle = _d(_d(content.get("spec")).get("source")).get("volumeHandle")
    return [handle] if isinstance(handle, str) else []


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SnapshotStore:
    """This host's snapshots: one directory per snapshot handle."""

    def __init__(self, root: Path, volumes: lv.LocalVolumes, *, fsfreeze: str = "fsfreeze",
                 cp: str = "cp") -> None:
        self.root = root
        self.volumes = volumes
        self.fsfreeze, self.cp = fsfreeze, cp

    def dir(self, handle: str) -> Path:
        if not lv._HANDLE.match(handle):
            raise lv.LocalVolumeError(f"invalid snapshot name {handle!r}")
        return self.root / handle

    def meta(self, handle: str) -> dict[str, Any] | None:
        try:
            data = json.loads((self.dir(handle) / lv.META).read_text())
        except (OSError, ValueError, lv.LocalVolumeError):
            return None
        return data if isinstance(data, dict) else None

    def disk(self, handle: str) -> Path:
        meta = self.meta(handle) or {}
        return self.dir(handle) / (lv.BLOCK_DISK if meta.get("mode") == lv.BLOCK else lv.FS_DISK)

    async def copy(self, source: str, target: Path) -> None:
        """Copy one volume's file: reflinked where the filesystem can, holes kept; on disk
        before anything records it as complete."""
        await lv.run(self.cp, "--reflink=auto", source, str(target))
        await asyncio.to_thread(_fsync_file, target)

    async def _frozen_copy(self, volume: str, target: Path) -> dict[str, Any]:
        """A consistent copy of ``volume``'s file (the caller holds the volume's lock);
        its meta.json as it was."""
        meta = self.volumes.meta(volume)
        if meta is None:
            raise lv.LocalVolumeError(f"volume {volume} is not on this host")
        users = self.volumes.users(volume)
        if meta.get("mode") == lv.BLOCK and users:
            raise lv.LocalVolumeError(f"volume {volume} is in use as a raw block device (by "
                                      f"{', '.join(users)}): a consistent snapshot is cut once "
                                      "it is released")
        point = str(self.volumes.mount_dir(volume))
        frozen = meta.get("mode") == lv.FILESYSTEM and self.volumes.mounted(volume)
        marker = self.root / f".frozen-{volume}"
        if frozen:
            self.root.mkdir(parents=True, exist_ok=True)
            marker.write_text(point)
            await lv.run(self.fsfreeze, "-f", point)
        try:
            await self.copy(str(self.volumes.disk(volume)), target)
        finally:
            if frozen:
                await lv.run(self.fsfreeze, "-u", point)
                marker.unlink(missing_ok=True)
        return meta

    async def cut(self, handle: str, volume: str) -> dict[str, Any]:
        """The snapshot ``handle`` of ``volume``, cut now unless it exists."""
        existing = self.meta(handle)
        if existing is not None:
            return existing
        final = self.dir(handle)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{handle}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        async with self.volumes.lock(volume):
            meta = self.volumes.meta(volume) or {}
            name = lv.BLOCK_DISK if meta.get("mode") == lv.BLOCK else lv.FS_DISK
            taken = time.time_ns()
            meta = await self._frozen_copy(volume, tmp / name)
        record = {"handle": handle, "volume": volume, "mode": meta.get("mode"),
                  "size": int(meta.get("size") or 0),
                  "fs_size": int(meta.get("fs_size") or meta.get("size") or 0),
                  "created": taken}
        lv.LocalVolumes._write_meta(tmp, record)
        await asyncio.to_thread(lv._fsync_dir, tmp)
        os.rename(tmp, final)
        await asyncio.to_thread(lv._fsync_dir, self.root)
        log.info("snapshot %s of volume %s: cut (%d bytes)", handle, volume, record["size"])
        return record

    async def remove(self, handle: str) -> None:
        final = self.dir(handle)
        if not final.exists():
            return
        doomed = self.root / f".{handle}.del"
        shutil.rmtree(doomed, ignore_errors=True)
        os.rename(final, doomed)
        await asyncio.to_thread(lv._fsync_dir, self.root)
        await asyncio.to_thread(shutil.rmtree, doomed, True)
        log.info("snapshot %s: data removed", handle)

    async def recover(self) -> None:
        """After a kill -9: thaw what a copy left frozen, drop half-made and half-removed
        snapshots."""
        try:
            names = [p.name for p in self.root.iterdir() if p.name.startswith(".")]
        except OSError:
            return
        for name in names:
            path = self.root / name
            if name.startswith(".frozen-"):
                point = path.read_text().strip()
                await lv.run(self.fsfreeze, "-u", point, ok=(0, 1, 32, 64))
                path.unlink(missing_ok=True)
                log.info("thawed %s, left frozen by a killed agent", point)
            elif name.endswith((".tmp", ".del")):
                await asyncio.to_thread(shutil.rmtree, path, True)

    async def populate(self, spec: lv.VolumeSpec, disk: Path) -> None:
        """Fill the new volume ``spec`` (its file ``disk``) from its source, grown to its size."""
        kind, _, handle = spec.source.partition(":")
        if kind == "snapshot":
            meta = self.meta(handle)
            if meta is None:
                raise lv.LocalVolumeError(f"volume {spec.handle}: its source snapshot {handle} "
                                          "is not on this host")
            await self.copy(str(self.disk(handle)), disk)
        elif kind == "volume":
            async with self.volumes.lock(handle):
                meta = await self._frozen_copy(handle, disk)
        else:
            raise lv.LocalVolumeError(f"volume {spec.handle}: unknown source {spec.source!r}")
        if meta.get("mode") != spec.mode:
            disk.unlink(missing_ok=True)
            raise lv.LocalVolumeError(f"volume {spec.handle} is {spec.mode}, its source "
                                      f"{handle} is {meta.get('mode')}")
        fs_size = int(meta.get("fs_size") or meta.get("size") or 0)
        if disk.stat().st_size < spec.size:
            await asyncio.to_thread(lv._grow_file, disk, spec.size)
        if spec.mode == lv.FILESYSTEM and fs_size < spec.size:
            await lv.run(self.volumes.e2fsck, "-f", "-p", str(disk), ok=(0, 1))
            await lv.run(self.volumes.resize2fs, str(disk))
        log.info("volume %s: filled from %s", spec.handle, spec.source)


class Snapshotter:
    """The worker: contents (cut, report, delete) and volumes waiting to be filled."""

    def __init__(self, client: ApiClient, contents: Informer, pvs: Informer,
                 store: SnapshotStore, node: str, events: EventRecorder) -> None:
        self.client = client
        self.contents = contents
        self.pvs = pvs
        self.store = store
        self.node = node
        self.events = events
        self.queue: WorkQueue[str] = WorkQueue(base_delay=0.5, max_delay=30.0)
        contents.add_handler(lambda kind, obj, old: self.queue.add(obj["metadata"]["name"]))
        pvs.add_handler(self._on_pv)
        store.volumes.on_idle.append(self._released)
        store.volumes.populate = store.populate

    def _on_pv(self, kind: str, pv: dict[str, Any], old: dict[str, Any] | None) -> None:
        if kind == "DELETED" or not lv.is_local(pv) or not claims.on_node(pv, self.node):
            return
        try:
            spec = lv.spec_from_pv(pv)
        except lv.LocalVolumeError:
            return
        if spec.source and self.store.volumes.meta(spec.handle) is None:
            self.queue.add(FILL + spec.handle)
        if spec.source.startswith("snapshot:"):
            for content in self.contents.list():  # a deletion may wait for this fill
                if _d(content.get("status")).get("snapshotHandle") == spec.source[9:]:
                    self.queue.add(content["metadata"]["name"])

    def _released(self, handle: str) -> None:
        for content in self.contents.by_index(BY_VOLUME, handle):
            self.queue.add(content["metadata"]["name"])

    async def run(self) -> None:
        await asyncio.gather(self.contents.wait_for_sync(), self.pvs.wait_for_sync())
        await self.store.recover()
        for content in self.contents.list():
            self.queue.add(content["metadata"]["name"])
        for pv in self.pvs.list():
            self._on_pv("ADDED", pv, None)
        await serve(self.queue, self.reconcile, "snapshotter",
                    (lv.LocalVolumeError, OSError, errors.ApiError))

    async def reconcile(self, key: str) -> None:
        if key.startswith(FILL):
            await self._fill(key[len(FILL):])
            return
        content = self.contents.get(key)
        if content is None or _d(content.get("spec")).get("driver") != lv.DRIVER:
            return
        if content["metadata"].get("deletionTimestamp"):
            await self._deleting(content)
        elif self._mine(content):
            await self._cut(content)

    async def _fill(self, handle: str) -> None:
        pv = lv.pv_of(self.pvs, handle)
        if pv is None or not claims.on_node(pv, self.node) or \
                self.store.volumes.meta(handle) is not None:
            return
        try:
            await self.store.volumes.ensure(lv.spec_from_pv(pv))
        except lv.LocalVolumeError as e:
            self.events.record(pv, WARNING, "VolumeFillFailed", str(e))
            raise

    def _source_pv(self, content: dict[str, Any]) -> dict[str, Any] | None:
        handle = by_volume(content)
        return lv.pv_of(self.pvs, handle[0]) if handle else None

    def _mine(self, content: dict[str, Any]) -> bool:
        """Whether this host holds (or is to cut) the content's snapshot."""
        node = (content["metadata"].get("annotations") or {}).get(snap.NODE_ANNOTATION)
        if node:
            return node == self.node
        static = _d(_d(content.get("spec")).get("source")).get("snapshotHandle")
        if static:
            return self.store.meta(str(static)) is not None
        pv = self._source_pv(content)
        return pv is not None and claims.on_node(pv, self.node)

    def _handle(self, content: dict[str, Any]) -> str:
        static = _d(_d(content.get("spec")).get("source")).get("snapshotHandle")
        return str(static or _d(content.get("status")).get("snapshotHandle") or
                   content["metadata"]["name"])

    async def _cut(self, content: dict[str, Any]) -> None:
        name = content["metadata"]["name"]
        status = _d(content.get("status"))
        annotations = content["metadata"].get("annotations") or {}
        if status.get("readyToUse") is True:
            if snap.BEING_CREATED in annotations:
                await self.client.patch(f"{BASE}/{name}", {"metadata": {"annotations": {
                    snap.BEING_CREATED: None}}})
            return
        handle = self._handle(content)
        if annotations.get(snap.NODE_ANNOTATION) != self.node or \
                (by_volume(content) and snap.BEING_CREATED not in annotations):
            marks = {snap.NODE_ANNOTATION: self.node}
            if by_volume(content):
                marks[snap.BEING_CREATED] = "yes"
            await self.client.patch(f"{BASE}/{name}", {"metadata": {"annotations": marks}})
        if by_volume(content):
            pv = self._source_pv(content)
            if pv is None:
                raise lv.LocalVolumeError(f"content {name}: its volume's PV is not known yet")
            volume = lv.spec_from_pv(pv)
            if self.store.volumes.meta(volume.handle) is None:
                await self.store.volumes.ensure(volume)  # never used yet: snapshot it empty
            try:
                record = await self.store.cut(handle, volume.handle)
            except lv.LocalVolumeError as e:
                await self._report(name, {"readyToUse": False, "error": {
                    "message": str(e), "time": rfc3339()}})
                return  # looked at again once the volume is released (on_idle)
        else:
            record = self.store.meta(handle) or {}
        await self._report(name, {"snapshotHandle": handle,
                                  "creationTime": int(record.get("created") or time.time_ns()),
                                  "restoreSize": int(record.get("size") or 0),
                                  "readyToUse": True, "error": None})
        if snap.BEING_CREATED in annotations or by_volume(content):
            await self.client.patch(f"{BASE}/{name}", {"metadata": {"annotations": {
                snap.BEING_CREATED: None}}})

    async def _report(self, name: str, status: dict[str, Any]) -> None:
        await self.client.patch(f"{BASE}/{name}/status", {"status": status})

    async def _deleting(self, content: dict[str, Any]) -> None:
        meta = content["metadata"]
        if snap.CONTENT_FINALIZER not in (meta.get("finalizers") or []):
            return
        spec = _d(content.get("spec"))
        static = _d(spec.get("source")).get("snapshotHandle")
        unbound = static and not _d(spec.get("volumeSnapshotRef")).get("uid")
        if snap.BEING_DELETED not in (meta.get("annotations") or {}) and not unbound:
            return  # not the common controller's to delete yet
        mine = self._mine(content)
        if not mine:
            node = (meta.get("annotations") or {}).get(snap.NODE_ANNOTATION)
            pv = self._source_pv(content)
            if node or static or pv is not None:
                return  # another host holds (or would hold) the data
        handle = self._handle(content)
        if mine and spec.get("deletionPolicy") == "Delete":
            if self._awaited(handle):
                self.queue.add_after(meta["name"], 1.0)
                return
            await self.store.remove(handle)
        await patch_with_retry(self.client, f"{BASE}/{meta['name']}", content,
                               without_finalizer(snap.CONTENT_FINALIZER))

    def _awaited(self, handle: str) -> bool:
        """A volume of this host is still to be filled from snapshot ``handle``."""
        for pv in self.pvs.list():
            try:
                spec = lv.spec_from_pv(pv) if lv.is_local(pv) else None
            except lv.LocalVolumeError:
                continue
            if spec is not None and spec.source == f"snapshot:{handle}" and \
                    claims.on_node(pv, self.node) and self.store.volumes.meta(spec.handle) is None:
                return True
        return False
