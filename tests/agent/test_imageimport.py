"""Image import from real files: OCI layouts, docker save archives, whiteouts, hostile tars."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from atoll.agent.images.importer import ImageImportError, import_file
from atoll.agent.images.store import ImageStore
from tests.imagebuild import busybox_layer, docker_save, layer_tar, oci_layout

CONFIG = {"Env": ["PATH=/bin", "GREETING=hi"], "Cmd": ["sh"], "WorkingDir": "/data"}


def test_oci_layout_with_whiteouts(tmp_path: Path) -> None:
    base = layer_tar({"data/keep": b"k", "data/gone": b"g", "old/x": b"x"},
                     dirs=("data", "old"))
    top = layer_tar({"data/gone": None, "old/.wh..wh..opq": b"", "old/y": b"y"})
    layout = oci_layout(tmp_path / "layout", [busybox_layer(), base, top],
                        ref="example.com/tools:1.0", config=CONFIG)
    store = ImageStore(tmp_path / "store")
    images = import_file(store, layout)
    assert [i.ref for i in images] == ["example.com/tools:1.0"]
    image = store.get("example.com/tools:1.0")
    assert image is not None and len(image.layers) == 3
    assert image.config["WorkingDir"] == "/data" and "GREETING=hi" in image.env
    whiteout = image.layers[2] / "data" / "gone"
    assert stat.S_ISCHR(os.lstat(whiteout).st_mode) and os.lstat(whiteout).st_rdev == 0
    assert os.getxattr(image.layers[2] / "old", "trusted.overlay.opaque") == b"y"
    # the overlay shows what a container sees
    merged, upper, work = tmp_path / "m", tmp_path / "u", tmp_path / "w"
    for d in (merged, upper, work):
        d.mkdir()
    lower = ":".join(str(p) for p in reversed(image.layers))
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged)], check=True)
    try:
        assert sorted(os.listdir(merged / "data")) == ["keep"]
        assert sorted(os.listdir(merged / "old")) == ["y"]
    finally:
        subprocess.run(["umount", str(merged)], check=True)
    # importing again reuses the layers
    assert import_file(store, layout)[0].layers == image.layers


def test_docker_save_archive_and_cli(tmp_path: Path) -> None:
    archive = docker_save(tmp_path / "img.tar", [busybox_layer()], tag="mytool:2",
                          config=CONFIG)
    data_dir = tmp_path / "agent"
    out = subprocess.run([sys.executable, "-m", "atoll.cli.main", "image", "import",
                          str(archive), "--data-dir", str(data_dir)],
                         capture_output=True, text=True, check=True)
    assert "imported docker.io/library/mytool:2" in out.stdout
    listing = subprocess.run([sys.executable, "-m", "atoll.cli.main", "image", "list",
                              "--data-dir", str(data_dir)], capture_output=True, text=True,
                             check=True).stdout
    assert "docker.io/library/mytool:2" in listing
    assert ImageStore(data_dir / "images").get("mytool:2") is not None


def test_hostile_layers_are_refused(tmp_path: Path) -> None:
    def tar_with(*members: tarfile.TarInfo) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for m in members:
                tar.addfile(m, io.BytesIO(b"x" * m.size) if m.isfile() else None)
        return buf.getvalue()

    escape = tarfile.TarInfo("../../etc/evil")
    escape.size = 1
    link = tarfile.TarInfo("etc")
    link.type, link.linkname = tarfile.SYMTYPE, "/tmp"
    through = tarfile.TarInfo("etc/evil")
    through.size = 1
    store = ImageStore(tmp_path / "store")
    for n, layer in enumerate((tar_with(escape), tar_with(link, through))):
        layout = oci_layout(tmp_path / f"bad{n}", [layer], ref="bad:1", config=CONFIG)
        with pytest.raises(ImageImportError):
            import_file(store, layout)
    assert not Path("/tmp/evil").exists()
    (tmp_path / "junk.bin").write_bytes(b"not an image")
    with pytest.raises(ImageImportError):
        import_file(store, tmp_path / "junk.bin")
    unnamed = oci_layout(tmp_path / "unnamed", [busybox_layer()], ref="latest", config=CONFIG)
    with pytest.raises(ImageImportError, match="--name"):
        import_file(store, unnamed)
    assert import_file(store, unnamed, name="named:1")[0].ref == "docker.io/library/named:1"
