"""Paths inside a volume or a layer, on real files, symlinks and bind mounts in tmp dirs."""

from __future__ import annotations

import asyncio
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from atoll.agent.images.importer import ImageImportError, unpack_layer
from atoll.agent.pods import volumes
from atoll.agent.pods.env import ConfigError
from atoll.agent.runtime import mounts, safepath


@pytest.fixture(params=[True, False], ids=["openat2", "walk"])
def resolver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Every resolution test runs with openat2 and with the component walk."""
    monkeypatch.setattr(safepath, "use_openat2", request.param)
    return bool(request.param)


@pytest.fixture(autouse=True)
def no_mounts_left(tmp_path: Path):
    """Whatever a test bound under its tmp dir is detached, even when it failed."""
    yield
    mounts.unmount_all_under(str(tmp_path))


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path]:
    """A volume with a nested directory and file, and a 'host' directory outside it."""
    vol, host = tmp_path / "vol", tmp_path / "host"
    (vol / "a" / "b").mkdir(parents=True)
    (vol / "a" / "b" / "f").write_text("inside")
    host.mkdir()
    (host / "secret").write_text("host")
    return vol, host


def _resolve(vol: Path, rel: str, **kw: object) -> os.stat_result:
    root = safepath.open_root(vol)
    try:
        fd = safepath.open_beneath(root, rel, **kw)  # type: ignore[arg-type]
    finally:
        os.close(root)
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def test_nested_paths_resolve_to_the_same_objects(world, resolver) -> None:
    vol, _ = world
    assert _resolve(vol, "a/b/f").st_ino == os.stat(vol / "a/b/f").st_ino
    assert _resolve(vol, "./a//b/").st_ino == os.stat(vol / "a/b").st_ino
    assert _resolve(vol, "").st_ino == os.stat(vol).st_ino


@pytest.mark.parametrize("rel", ["/etc", "../host", "a/../../host", "a/b/../../.."])
def test_absolute_and_dotdot_are_refused(world, resolver, rel: str) -> None:
    vol, _ = world
    with pytest.raises(safepath.PathEscape):
        _resolve(vol, rel, create_dirs=True)


def test_symlinks_are_refused_wherever_they_are(world, resolver) -> None:
    vol, host = world
    os.symlink("/", vol / "escape")
    os.symlink(host, vol / "a" / "link")
    os.symlink(host / "secret", vol / "file-link")
    os.symlink("b", vol / "a" / "inside-link")  # even one that stays inside
    for rel in ("escape", "escape/etc", "a/link/secret", "a/link", "file-link",
                "a/inside-link/f"):
        with pytest.raises(safepath.PathEscape, match="symlink|out of"):
            _resolve(vol, rel, create_dirs=True)
    assert sorted(os.listdir(host)) == ["secret"]  # nothing was created through a link


def test_missing_directories_are_made_inside_with_the_volume_mode(world, resolver) -> None:
    vol, _ = world
    os.chmod(vol, 0o777)
    st = _resolve(vol, "new/deeper", create_dirs=True, dir_mode=0o777)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o777
    assert (vol / "new" / "deeper").is_dir()
    with pytest.raises(FileNotFoundError):
        _resolve(vol, "absent")
    with pytest.raises(safepath.PathEscape, match="not a directory"):
        _resolve(vol, "a/b/f/below", create_dirs=True)


def test_device_nodes_are_not_a_subpath(world, resolver) -> None:
    vol, _ = world
    os.mknod(vol / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    with pytest.raises(safepath.PathEscape, match="device"):
        _resolve(vol, "null")


def test_in_root_resolution_follows_links_inside_only(world) -> None:
    vol, _ = world
    os.symlink("/a", vol / "abs")
    os.symlink("../../..", vol / "a" / "up")
    os.symlink("b", vol / "a" / "rel")
    root = safepath.open_root(vol)
    try:
        for rel, want, escapes in (("abs/b", "a/b", True), ("a/up/a", "a", True),
                                   ("a/rel", "a/b", False)):
            fd = safepath.open_dir_in_root(root, rel, create_mode=None)
            assert os.fstat(fd).st_ino == os.stat(vol / want).st_ino
            os.close(fd)
            if escapes:
                with pytest.raises(safepath.PathEscape):
                    safepath.open_dir_in_root(root, rel, create_mode=None, refuse_escaping=True)
        os.symlink("loop", vol / "loop")
        with pytest.raises(safepath.PathEscape, match="too many"):
            safepath.open_dir_in_root(root, "loop")
    finally:
        os.close(root)


# -- subPath bind mounts ------------------------------------------------------------------------
def test_subpath_binds_the_resolved_object_and_teardown_unmounts(tmp_path: Path) -> None:
    pod = tmp_path / "pod"
    vol = pod / "volumes" / "v"
    (vol / "conf").mkdir(parents=True)
    (vol / "conf" / "app.ini").write_text("x=1")
    d = volumes.prepare_subpath(pod, "v", str(vol), "conf", "c", 0)
    f = volumes.prepare_subpath(pod, "v", str(vol), "conf/app.ini", "c", 1)
    made = volumes.prepare_subpath(pod, "v", str(vol), "made/here", "c", 2)
    assert d == str(pod / "volume-subpaths" / "v" / "c" / "0")
    assert os.stat(d).st_ino == os.stat(vol / "conf").st_ino
    assert Path(f).read_text() == "x=1" and Path(f).is_file()
    assert (vol / "made" / "here").is_dir() and os.stat(made).st_ino == os.stat(
        vol / "made" / "here").st_ino
    # swapping a symlink in afterwards changes nothing: the mount holds the object
    os.rename(vol / "conf", vol / "old")
    os.symlink("/", vol / "conf")
    assert not (Path(d) / "etc").exists() and (Path(d) / "app.ini").exists()
    # a restart of the container prepares again: refused now, the old mount went away
    with pytest.raises(ConfigError, match="symlink"):
        volumes.prepare_subpath(pod, "v", str(vol), "conf", "c", 0)
    assert len(mounts.mount_points_under(str(pod))) == 2
    asyncio.run(volumes.teardown(pod))
    assert mounts.mount_points_under(str(pod)) == []
    assert not (pod / "volume-subpaths").exists() and not (pod / "volumes").exists()


def test_subpath_error_names_the_mount_and_container(tmp_path: Path) -> None:
    vol = tmp_path / "pod" / "volumes" / "v"
    vol.mkdir(parents=True)
    os.symlink("/", vol / "escape")
    with pytest.raises(ConfigError) as e:
        volumes.prepare_subpath(tmp_path / "pod", "v", str(vol), "escape", "c", 0)
    msg = str(volumes.subpath_error("v", "c", str(e.value)))
    assert msg.startswith('failed to prepare subPath for volumeMount "v" of container "c": ')
    assert "leaves its volume" in msg
    assert mounts.mount_points_under(str(tmp_path)) == []


def test_mountinfo_escapes() -> None:
    assert mounts._unescape(r"/a\040b\134c") == "/a b\\c"


# -- configMap/secret/projected item paths ------------------------------------------------------
@pytest.mark.parametrize("rel", ["/etc/x", "../x", "a/../../x", ".."])
def test_item_paths_out_of_the_volume_are_refused(tmp_path: Path, rel: str) -> None:
    with pytest.raises(volumes.VolumeError, match="relative"):
        volumes._write_files(tmp_path / "vol", {rel: (b"x", None)}, None)
    assert not (tmp_path / "x").exists()


def test_item_files_are_written_with_masked_modes(tmp_path: Path) -> None:
    volumes._write_files(tmp_path / "vol", {"a/b/c": (b"1", 0o4755), "d": (b"2", None)}, 0o600)
    assert (tmp_path / "vol" / "a/b/c").read_bytes() == b"1"
    assert stat.S_IMODE(os.stat(tmp_path / "vol" / "a/b/c").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(tmp_path / "vol" / "d").st_mode) == 0o600


def test_writers_never_go_through_a_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    vol = tmp_path / "vol"
    vol.mkdir()
    os.symlink(outside, vol / "dir")
    os.symlink(outside / "f", vol / "file")
    root = safepath.open_root(vol)
    try:
        with pytest.raises(volumes.VolumeError, match="symlink"):
            volumes._write_at(root, "dir", "f", b"x", 0o644)
        with pytest.raises(OSError):
            volumes._write_at(root, "", "file", b"x", 0o644)
    finally:
        os.close(root)
    with pytest.raises(OSError):
        volumes._replace_token(tmp_path, "vol/dir/token", b"t")
    assert os.listdir(outside) == []


# -- image layers -------------------------------------------------------------------------------
def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    buf.seek(0)
    return buf


def _file(name: str, data: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info, data


def _link(name: str, target: str, hard: bool = False) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = (tarfile.LNKTYPE if hard else tarfile.SYMTYPE), target
    return info, None


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """Stands for the host: a layer is unpacked in host/layer, beside host/etc/shadow."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "shadow").write_text("root:secret")
    (tmp_path / "layer").mkdir()
    return tmp_path


@pytest.mark.parametrize("members", [
    [_file("../etc/evil")],
    [_file("a/../../etc/evil")],
    [_link("etc", "/"), _file("etc/evil")],                     # absolute link, then through it
    [_link("up", "../.."), _file("up/etc/evil")],              # relative link out of the layer
    [_link("d", "."), _link("d/e", ".."), _file("d/e/etc/evil")],
    [_link("etc", "../etc", hard=False), _link("h", "etc/shadow", hard=True)],
    [_link("h", "../etc/shadow", hard=True)],
    [_file("sub/x"), _file("sub/.wh...")],                      # whiteout of '..'
], ids=["dotdot", "inner-dotdot", "abs-symlink", "rel-symlink", "chained", "hardlink-via-link",
        "hardlink-dotdot", "whiteout-dotdot"])
def test_hostile_layer_members_are_refused(host: Path, members: list) -> None:
    before = {p: p.read_bytes() for p in (host / "etc").iterdir()}
    with pytest.raises(ImageImportError, match="unsafe"):
        unpack_layer(_tar(*members), host / "layer")
    assert {p: p.read_bytes() for p in (host / "etc").iterdir()} == before
    assert os.stat(host / "etc" / "shadow").st_nlink == 1
    assert (host / "layer").is_dir()


def test_a_symlink_entry_is_replaced_not_written_through(host: Path) -> None:
    unpack_layer(_tar(_link("f", str(host / "etc" / "shadow")), _file("f", b"layer")),
                 host / "layer")
    assert (host / "etc" / "shadow").read_text() == "root:secret"
    assert not (host / "layer" / "f").is_symlink()
    assert (host / "layer" / "f").read_bytes() == b"layer"


def test_legit_layer_entries_still_unpack(host: Path) -> None:
    tool = _file("usr/bin/tool", b"#!", mode=0o4755)
    tool[0].uid = tool[0].gid = 0
    owned = _file("home/u/.profile", b"p")
    owned[0].uid, owned[0].gid = 1000, 1000
    unpack_layer(_tar(_link("lib", "usr/lib"), _file("lib/libc.so", b"elf"), tool,
                      _link("bin/sh", "/bin/busybox"), _link("usr/bin/hard", "usr/bin/tool", True),
                      owned, _file("/abs/file", b"a"), _file("gone/x"), _file("gone/.wh.x")),
                 host / "layer")
    layer = host / "layer"
    assert (layer / "usr/lib/libc.so").read_bytes() == b"elf" and (layer / "lib").is_symlink()
    assert stat.S_IMODE(os.stat(layer / "usr/bin/tool").st_mode) == 0o4755  # setuid kept
    assert os.readlink(layer / "bin/sh") == "/bin/busybox"
    assert os.stat(layer / "usr/bin/hard").st_ino == os.stat(layer / "usr/bin/tool").st_ino
    assert os.stat(layer / "home/u/.profile").st_uid == 1000
    assert (layer / "abs" / "file").read_bytes() == b"a"
    assert stat.S_ISCHR(os.lstat(layer / "gone" / "x").st_mode)
