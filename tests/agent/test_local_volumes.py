"""The local datastore against the real kernel: sparse files, ext4, loop mounts (needs root)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest

from atoll.agent.runtime import mounts
from atoll.agent.storage import localvolumes as lv
from atoll.agent.storage.claims import on_node

MIB = 1 << 20
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop mounts need root")


def spec(handle: str = "pvc-1", size: int = 16 * MIB, mode: str = lv.FILESYSTEM,
         reclaim: str = "Delete") -> lv.VolumeSpec:
    return lv.VolumeSpec(handle, handle, size, mode, "ext4", reclaim)


def mounts_of(path: Path) -> list[str]:
    return [line for line in Path("/proc/mounts").read_text().splitlines()
            if line.split()[1] == str(path)]


def loops_of(path: Path) -> list[str]:
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if f"({path})" in line]


@pytest.fixture
def root(tmp_path: Path):
    yield tmp_path / "volumes"
    mounts.unmount_all_under(str(tmp_path))  # what a test left mounted (their loops go too)


def owner(tmp_path: Path, name: str) -> Path:
    d = tmp_path / "owners" / name
    d.mkdir(parents=True, exist_ok=True)
    return d


async def test_a_filesystem_volume_is_an_ext4_file_of_its_size_and_full_at_it(
        root: Path, tmp_path: Path) -> None:
    store = lv.LocalVolumes(root)
    mount = await store.acquire(spec(), "pod-a", owner(tmp_path, "a"))
    assert mount == root / "pvc-1" / "mount"
    disk = root / "pvc-1" / "disk.img"
    assert disk.stat().st_size == 16 * MIB
    assert disk.stat().st_blocks * 512 < 8 * MIB  # sparse: only ext4's metadata is written
    assert len(mounts_of(mount)) == 1 and mounts_of(mount)[0].split()[2] == "ext4"
    assert mount.stat().st_mode & 0o777 == 0o777  # any container user may write
    assert json.loads((root / "pvc-1" / "meta.json").read_text())["size"] == 16 * MIB
    fd = os.open(mount / "fill", os.O_WRONLY | os.O_CREAT, 0o644)
    written = 0
    with pytest.raises(OSError) as e:
        while written < 32 * MIB:
            written += os.write(fd, b"x" * MIB)
            os.fsync(fd)
    os.close(fd)
    assert e.value.errno == errno.ENOSPC
    assert 12 * MIB <= written < 16 * MIB
    assert store.unallocated() < 4 * MIB  # the file took its blocks from the host


async def test_a_mount_is_adopted_after_a_restart_and_shared_by_users(
        root: Path, tmp_path: Path) -> None:
    first = lv.LocalVolumes(root)
    mount = await first.acquire(spec(), "pod-a", owner(tmp_path, "a"))
    (mount / "data").write_text("kept")
    again = lv.LocalVolumes(root)  # a new agent: nothing in memory
    assert await again.acquire(spec(), "pod-b", owner(tmp_path, "b")) == mount
    assert len(mounts_of(mount)) == 1
    assert len(loops_of(root / "pvc-1" / "disk.img")) == 1
    assert (mount / "data").read_text() == "kept"
    assert again.users("pvc-1") == ["pod-a", "pod-b"]
    await again.release("pod-a")
    assert again.mounted("pvc-1")  # pod-b still uses it
    await again.release("pod-b")
    assert not mounts_of(mount) and not loops_of(root / "pvc-1" / "disk.img")
    assert await again.acquire(spec(), "pod-c", owner(tmp_path, "c")) == mount
    assert (mount / "data").read_text() == "kept"  # the same filesystem, mounted again


async def test_a_user_whose_owner_is_gone_does_not_pin_the_mount(
        root: Path, tmp_path: Path) -> None:
    store = lv.LocalVolumes(root)
    gone = owner(tmp_path, "gone")
    await store.acquire(spec(), "pod-gone", gone)
    await store.acquire(spec(), "pod-live", owner(tmp_path, "live"))
    gone.rmdir()  # the pod's directory was cleaned up while nobody released it
    idle: list[str] = []
    store.on_idle.append(idle.append)
    await store.release("pod-live")
    assert not store.mounted("pvc-1") and idle == ["pvc-1"]


async def test_a_block_volume_is_a_sparse_raw_file(root: Path, tmp_path: Path) -> None:
    store = lv.LocalVolumes(root)
    changes: list[int] = []
    store.on_change.append(lambda: changes.append(1))
    path = await store.acquire(spec("pvc-b", 1 << 30, lv.BLOCK), "vm-x", owner(tmp_path, "x"))
    assert path == root / "pvc-b" / "disk.raw"
    assert path.stat().st_size == 1 << 30 and path.stat().st_blocks == 0
    assert not (root / "pvc-b" / "mount").exists() and changes == [1]
    assert store.unallocated() == 1 << 30
    with pytest.raises(lv.LocalVolumeError, match="is Block"):
        await store.ensure(spec("pvc-b", 1 << 30, lv.FILESYSTEM))


async def test_an_interrupted_create_is_redone_and_a_half_made_volume_never_used(
        root: Path, tmp_path: Path) -> None:
    root.mkdir(parents=True)
    # what kill -9 in the middle of mkfs leaves: a staging directory with a partial image
    tmp = root / ".pvc-1.tmp"
    (tmp / "users").mkdir(parents=True)
    (tmp / "disk.img").write_bytes(b"\xff" * 4096)
    store = lv.LocalVolumes(root)
    mount = await store.acquire(spec(), "pod-a", owner(tmp_path, "a"))
    assert not tmp.exists() and (root / "pvc-1" / "disk.img").stat().st_size == 16 * MIB
    assert mounts_of(mount)
    # a directory named for a volume but without its record is not taken for one
    (root / "pvc-2").mkdir()
    with pytest.raises(lv.LocalVolumeError, match="not a complete volume"):
        await store.acquire(spec("pvc-2"), "pod-a", owner(tmp_path, "a"))
    # leftovers of creates and removals are finished by the janitor's first pass
    (root / ".pvc-3.tmp").mkdir()
    (root / ".pvc-4.del" / "mount").mkdir(parents=True)
    await store.clean_leftovers()
    assert sorted(p.name for p in root.iterdir()) == ["pvc-1", "pvc-2"]
    assert store.handles() == ["pvc-1"]


async def test_remove_waits_for_the_last_user_and_leaves_nothing_behind(
        root: Path, tmp_path: Path) -> None:
    store = lv.LocalVolumes(root)
    mount = await store.acquire(spec(), "pod-a", owner(tmp_path, "a"))
    disk = root / "pvc-1" / "disk.img"
    assert not await store.remove("pvc-1")  # in use
    assert mounts_of(mount)
    await store.release("pod-a")
    assert await store.remove("pvc-1")
    assert not root.joinpath("pvc-1").exists() and not list(root.iterdir())
    assert not mounts_of(mount) and not loops_of(disk)
    assert await store.remove("pvc-1")  # idempotent


async def test_a_vm_disk_inside_a_filesystem_volume_is_made_once(
        root: Path, tmp_path: Path) -> None:
    store = lv.LocalVolumes(root)
    mount = await store.acquire(spec(size=32 * MIB), "vm-a", owner(tmp_path, "a"))
    disk = await lv.filesystem_disk(mount, 32 * MIB)
    size = disk.stat().st_size
    st = os.statvfs(mount)
    assert 20 * MIB <= size <= 32 * MIB and size <= st.f_bavail * st.f_frsize
    with open(disk, "r+b") as f:
        f.write(b"guest data")
    assert await lv.filesystem_disk(mount, 32 * MIB) == disk and disk.stat().st_size == size
    assert disk.read_bytes()[:10] == b"guest data"
    await store.release("vm-a")


def test_volume_names_and_pvs_are_checked() -> None:
    pv = {"metadata": {"name": "pvc-9"},
          "spec": {"capacity": {"storage": "1Gi"}, "volumeMode": "Block",
                   "persistentVolumeReclaimPolicy": "Retain",
                   "csi": {"driver": lv.DRIVER, "volumeHandle": "pvc-9"}}}
    assert lv.spec_from_pv(pv) == lv.VolumeSpec("pvc-9", "pvc-9", 1 << 30, lv.BLOCK, "ext4",
                                                "Retain")
    for bad in ("../etc", "a/b", ".hidden", "", "UPPER"):
        with pytest.raises(lv.LocalVolumeError):
            lv.spec_from_pv({**pv, "spec": {**pv["spec"], "csi": {"driver": lv.DRIVER,
                                                                   "volumeHandle": bad}}})
    with pytest.raises(lv.LocalVolumeError, match="capacity"):
        lv.spec_from_pv({**pv, "spec": {**pv["spec"], "capacity": {}}})
    with pytest.raises(lv.LocalVolumeError, match="xfs"):
        lv.spec_from_pv({**pv, "spec": {**pv["spec"], "volumeMode": "Filesystem",
                                        "csi": {"driver": lv.DRIVER, "volumeHandle": "h",
                                                "fsType": "xfs"}}})
    affinity = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": ["h1"]}]}]}}
    assert on_node({"spec": {"nodeAffinity": affinity}}, "h1")
    assert not on_node({"spec": {"nodeAffinity": affinity}}, "h2")
    assert not on_node({"spec": {}}, "h1")  # a local volume names its host
