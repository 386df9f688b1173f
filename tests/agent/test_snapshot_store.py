"""The host's snapshot store against the real kernel (needs root): a snapshot of a mounted
volume is a consistent copy, a restore is filled from it and grown, a Block volume in use is
not copied, and a volume left frozen by a killed agent is thawed at the next start."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from atoll.agent.runtime import mounts
from atoll.agent.storage import localvolumes as lv
from atoll.agent.storage.snapshots import SnapshotStore

MIB = 1 << 20
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop mounts need root")


@pytest.fixture
def stores(tmp_path: Path):
    volumes = lv.LocalVolumes(tmp_path / "volumes")
    snaps = SnapshotStore(tmp_path / "snapshots", volumes)
    volumes.populate = snaps.populate
    yield volumes, snaps
    subprocess.run(["fsfreeze", "-u", str(tmp_path / "volumes" / "pvc-1" / "mount")],
                   capture_output=True)
    mounts.unmount_all_under(str(tmp_path))


def owner(tmp_path: Path, name: str) -> Path:
    d = tmp_path / "owners" / name
    d.mkdir(parents=True, exist_ok=True)
    return d


async def test_a_snapshot_of_a_mounted_volume_restores_into_a_larger_one(
        stores, tmp_path: Path) -> None:
    volumes, snaps = stores
    spec = lv.VolumeSpec("pvc-1", "pvc-1", 16 * MIB)
    mount = await volumes.acquire(spec, "pod-a", owner(tmp_path, "a"))
    (mount / "file").write_text("before")
    record = await snaps.cut("snap-1", "pvc-1")
    assert record["size"] == 16 * MIB and record["mode"] == lv.FILESYSTEM
    assert not (tmp_path / "snapshots" / ".frozen-pvc-1").exists()
    (mount / "file").write_text("after")  # thawed: the volume is writable again
    assert await snaps.cut("snap-1", "pvc-1") == record  # cut once
    restored = lv.VolumeSpec("pvc-2", "pvc-2", 48 * MIB, source="snapshot:snap-1")
    mount2 = await volumes.acquire(restored, "pod-b", owner(tmp_path, "b"))
    assert (mount2 / "file").read_text() == "before"
    st = os.statvfs(mount2)
    assert st.f_blocks * st.f_frsize > 40 * MIB
    clone = lv.VolumeSpec("pvc-3", "pvc-3", 16 * MIB, source="volume:pvc-1")
    mount3 = await volumes.acquire(clone, "pod-c", owner(tmp_path, "c"))
    assert (mount3 / "file").read_text() == "after"
    await snaps.remove("snap-1")
    assert not (tmp_path / "snapshots" / "snap-1").exists()
    with pytest.raises(lv.LocalVolumeError, match="not on this host"):
        await volumes.ensure(lv.VolumeSpec("pvc-4", "pvc-4", 16 * MIB,
                                           source="snapshot:snap-1"))
    assert not (tmp_path / "volumes" / "pvc-4").exists()


async def test_a_block_volume_in_use_is_not_copied(stores, tmp_path: Path) -> None:
    volumes, snaps = stores
    spec = lv.VolumeSpec("pvc-b", "pvc-b", 8 * MIB, lv.BLOCK)
    await volumes.acquire(spec, "vm-a", owner(tmp_path, "a"))
    with pytest.raises(lv.LocalVolumeError, match="in use as a raw block device"):
        await snaps.cut("snap-b", "pvc-b")
    assert not (tmp_path / "snapshots" / "snap-b").exists()
    await volumes.release("vm-a")
    assert (await snaps.cut("snap-b", "pvc-b"))["mode"] == lv.BLOCK


async def test_a_volume_left_frozen_is_thawed_at_start(stores, tmp_path: Path) -> None:
    volumes, snaps = stores
    mount = await volumes.acquire(lv.VolumeSpec("pvc-1", "pvc-1", 16 * MIB), "pod-a",
                                  owner(tmp_path, "a"))
    (tmp_path / "snapshots").mkdir()
    (tmp_path / "snapshots" / ".frozen-pvc-1").write_text(str(mount))
    (tmp_path / "snapshots" / ".snap-x.tmp").mkdir()
    subprocess.run(["fsfreeze", "-f", str(mount)], check=True)  # as a killed copy leaves it
    await snaps.recover()
    await asyncio.wait_for(asyncio.to_thread((mount / "file").write_text, "thawed"), 10)
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == []
