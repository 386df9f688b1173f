"""Local volumes grow to their PV's capacity against the real kernel: a mounted ext4 image
online, an unmounted one at its next mount, a raw file (and whoever is told), idempotently."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from atoll.agent.runtime import mounts
from atoll.agent.storage import localvolumes as lv

MIB = 1 << 20
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop mounts need root")


def spec(size: int, handle: str = "pvc-1", mode: str = lv.FILESYSTEM) -> lv.VolumeSpec:
    return lv.VolumeSpec(handle, handle, size, mode, "ext4", "Delete")


@pytest.fixture
def root(tmp_path: Path):
    yield tmp_path / "volumes"
    mounts.unmount_all_under(str(tmp_path))


def owner(tmp_path: Path, name: str) -> Path:
    d = tmp_path / "owners" / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def fs_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize


def meta(root: Path, handle: str = "pvc-1") -> dict:
    return json.loads((root / handle / "meta.json").read_text())


ONLINE = lv.has_capability(lv.CAP_SYS_RESOURCE)


@pytest.mark.skipif(not ONLINE, reason="growing a mounted ext4 needs CAP_SYS_RESOURCE")
async def test_a_mounted_filesystem_grows_online(root: Path, tmp_path: Path) -> None:
    store = lv.LocalVolumes(root)
    used: list[str] = []
    store.on_used.append(used.append)
    mount = await store.acquire(spec(16 * MIB), "pod-a", owner(tmp_path, "a"))
    (mount / "keep").write_text("data")
    before = fs_bytes(mount)
    assert await store.grow("pvc-1", 48 * MIB)
    assert fs_bytes(mount) > before + 28 * MIB  # ext4 keeps its metadata out of f_blocks
    assert (root / "pvc-1" / "disk.img").stat().st_size == 48 * MIB
    assert (mount / "keep").read_text() == "data"
    assert meta(root)["size"] == meta(root)["fs_size"] == 48 * MIB
    assert store.grown("pvc-1") and "pvc-1" in used
    # the same target again (a restarted agent) changes nothing; a smaller one never shrinks
    assert await store.grow("pvc-1", 48 * MIB) and await store.grow("pvc-1", 16 * MIB)
    assert (root / "pvc-1" / "disk.img").stat().st_size == 48 * MIB


async def test_an_unmounted_filesystem_grows_at_once(root: Path, tmp_path: Path) -> None:
    store = lv.LocalVolumes(root)
    mount = await store.acquire(spec(16 * MIB), "pod-a", owner(tmp_path, "a"))
    (mount / "keep").write_text("data")
    await store.release("pod-a")
    assert not store.mounted("pvc-1")
    assert await store.grow("pvc-1", 40 * MIB)
    assert meta(root)["size"] == meta(root)["fs_size"] == 40 * MIB
    mount = await store.acquire(spec(40 * MIB), "pod-b", owner(tmp_path, "b"))
    assert fs_bytes(mount) > 30 * MIB and (mount / "keep").read_text() == "data"


async def test_a_mounted_filesystem_without_online_resize_grows_at_its_next_mount(
        root: Path, tmp_path: Path) -> None:
    store = lv.LocalVolumes(root)
    store.online_resize = False  # as on a host without CAP_SYS_RESOURCE
    mount = await store.acquire(spec(16 * MIB), "pod-a", owner(tmp_path, "a"))
    assert not await store.grow("pvc-1", 40 * MIB)  # the file has grown, the filesystem waits
    assert meta(root)["size"] == 40 * MIB and meta(root)["fs_size"] == 16 * MIB
    assert fs_bytes(mount) < 16 * MIB and not store.grown("pvc-1")
    await store.release("pod-a")
    mount = await store.acquire(spec(40 * MIB), "pod-b", owner(tmp_path, "b"))
    assert fs_bytes(mount) > 30 * MIB and store.grown("pvc-1")


async def test_a_pv_grown_before_the_volume_is_used_again_grows_it_on_acquire(
        root: Path, tmp_path: Path) -> None:
    store = lv.LocalVolumes(root)
    await store.acquire(spec(16 * MIB), "pod-a", owner(tmp_path, "a"))
    await store.release("pod-a")
    mount = await store.acquire(spec(32 * MIB), "pod-b", owner(tmp_path, "b"))
    assert fs_bytes(mount) > 24 * MIB and meta(root)["fs_size"] == 32 * MIB


async def test_a_block_volume_grows_and_its_users_are_told(root: Path, tmp_path: Path) -> None:
    store = lv.LocalVolumes(root)
    told: list[tuple[str, Path, int]] = []

    async def hook(handle: str, disk: Path, size: int) -> None:
        told.append((handle, disk, size))
    store.on_grown.append(hook)
    disk = await store.acquire(spec(8 * MIB, mode=lv.BLOCK), "vm-a", owner(tmp_path, "a"))
    assert await store.grow("pvc-1", 24 * MIB)
    assert disk.stat().st_size == 24 * MIB and disk.stat().st_blocks * 512 < MIB
    assert told == [("pvc-1", disk, 24 * MIB)]
    assert await store.grow("pvc-1", 24 * MIB) and len(told) == 1


async def test_a_fresh_volume_is_reported_once_and_old_ones_need_nothing(
        root: Path, tmp_path: Path) -> None:
    store = lv.LocalVolumes(root)
    await store.acquire(spec(8 * MIB, mode=lv.BLOCK), "vm-a", owner(tmp_path, "a"))
    assert store.reported("pvc-1") == 0
    store.mark_reported("pvc-1", 8 * MIB)
    assert store.reported("pvc-1") == 8 * MIB
    m = meta(root)
    for key in ("reported", "fs_size"):
        m.pop(key)
    (root / "pvc-1" / "meta.json").write_text(json.dumps(m))  # made before expansion existed
    assert store.reported("pvc-1") == 8 * MIB and store.grown("pvc-1")
