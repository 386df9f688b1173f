"""The initramfs writer and the NoCloud seed, read back with independent readers."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pycdlib
import yaml

from atoll.vmimage.cpio import CpioWriter
from atoll.vmimage.seed import make_seed


def test_cpio_lists_and_extracts_with_busybox(tmp_path: Path) -> None:
    raw = io.BytesIO()
    w = CpioWriter(raw)
    w.directory("etc")
    w.file("etc/hello", b"hi there\n", 0o600)
    w.symlink("etc/link", "hello")
    w.device("console", "c", 5, 1)
    w.close()
    assert len(raw.getvalue()) % 512 == 0
    archive = tmp_path / "a.cpio"
    archive.write_bytes(raw.getvalue())
    listing = subprocess.run(["busybox", "cpio", "-t", "-F", str(archive)], capture_output=True,
                             text=True, check=True).stdout.split()
    assert listing == ["etc", "etc/hello", "etc/link", "console"]
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["busybox", "cpio", "-i", "-d", "-F", str(archive)], cwd=out, check=True,
                   capture_output=True)
    assert (out / "etc/hello").read_text() == "hi there\n"
    assert (out / "etc/hello").stat().st_mode & 0o777 == 0o600
    assert (out / "etc/link").readlink() == Path("hello")


def test_seed_holds_the_nocloud_files(tmp_path: Path) -> None:
    seed = tmp_path / "seed.iso"
    make_seed(seed, "i-1", "web", "#cloud-config\nruncmd: [echo hi]\n",
              {"version": 2, "ethernets": {}})
    iso = pycdlib.PyCdlib()
    iso.open(str(seed))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "cidata"

        def read(name: str) -> str:
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, rr_path=f"/{name}")
            return buf.getvalue().decode()

        assert yaml.safe_load(read("meta-data")) == {"instance-id": "i-1", "local-hostname": "web"}
        assert read("user-data").startswith("#cloud-config")
        assert yaml.safe_load(read("network-config"))["version"] == 2
    finally:
        iso.close()
