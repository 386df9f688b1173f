"""The pod-VM guest: the tiny image's kernel and an initramfs whose PID 1 is the guest agent.

The kernel is Debian's cloud kernel, fetched and cached exactly as for ``atoll image build
tiny`` (``atoll.vmimage.kernel``); the initramfs is written with the same cpio writer and
busybox applets.  It carries only what a pod-VM needs: virtio-mmio, the virtio console (the
agent's port) and virtio-fs (the pod's shared directory), loaded by ``guest_init.sh``, and
``guest_agent.c`` compiled static with gcc when the image is built (both are Debian packages
``scripts/setup.sh`` installs).  Built once per kernel and source version, then cached.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from atoll.vmimage.cpio import CpioWriter
from atoll.vmimage.kernel import Kernel, KernelError, fetch
from atoll.vmimage.tiny import BUSYBOX, _applets

#: virtio-mmio devices (microvm), the agent's virtio-serial port, the pod's virtio-fs share,
#: the pod's NIC
MODULES = ["virtio_mmio", "virtio_console", "virtiofs", "virtio_net"]


class GuestImageError(Exception):
    pass


@dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initrd: Path
    kernel_version: str


def default_cache() -> Path:
    """The cache ``atoll image build`` uses: the kernel is downloaded once for both."""
    return Path.home() / ".cache" / "atoll"


def build(cache_dir: Path | None = None) -> GuestImage:
    """The guest image, built now unless a cached one matches the sources."""
    cache = cache_dir or default_cache()
    try:
        kernel = fetch(cache / "kernels")
    except KernelError as e:
        raise GuestImageError(f"guest kernel: {e}") from None
    digest = hashlib.sha256()
    for name in ("guest_agent.c", "guest_init.sh"):
        digest.update(_data(name))
    digest.update(kernel.version.encode())
    out = cache / "podvm" / f"{kernel.version}-{digest.hexdigest()[:12]}"
    initrd = out / "initrd.img"
    if not initrd.exists():
        out.mkdir(parents=True, exist_ok=True)
        data = initramfs(kernel, compile_agent())
        fd, tmp = tempfile.mkstemp(dir=out, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, initrd)
    return GuestImage(kernel=kernel.vmlinuz, initrd=initrd, kernel_version=kernel.version)


def compile_agent() -> bytes:
    """``guest_agent.c`` as a static executable (gcc and libc6-dev from Debian)."""
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp) / "agent.c", Path(tmp) / "agent"
        src.write_bytes(_data("guest_agent.c"))
        try:
            proc = subprocess.run(["gcc", "-static", "-Os", "-s", "-o", str(exe), str(src)],
                                  capture_output=True, text=True, timeout=300)
        except FileNotFoundError:
            raise GuestImageError("gcc is not installed (the pod-VM guest agent is built with "
                                  "gcc and libc6-dev)") from None
        if proc.returncode != 0:
            raise GuestImageError(f"compiling the guest agent: {proc.stderr.strip()[-500:]}")
        return exe.read_bytes()


def initramfs(kernel: Kernel, agent: bytes) -> bytes:
    if not BUSYBOX.exists():
        raise GuestImageError("/bin/busybox is missing (install busybox-static)")
    try:
        modules = kernel.with_dependencies(MODULES)
    except KernelError as e:
        raise GuestImageError(str(e)) from None
    raw = io.BytesIO()
    cpio = CpioWriter(raw)
    for d in ("bin", "sbin", "proc", "sys", "dev", "tmp", "run", "etc", "lib", "lib/modules",
              "mnt", "root"):
        cpio.directory(d, 0o700 if d == "root" else 0o755)
    cpio.device("dev/console", "c", 5, 1)
    cpio.device("dev/null", "c", 1, 3, 0o666)
    cpio.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    for applet in _applets():
        if applet != "busybox":
            cpio.symlink("bin/" + applet, "busybox")
    cpio.file("init", _data("guest_init.sh"), 0o755)
    cpio.file("sbin/atoll-agent", agent, 0o755)
    cpio.file("etc/modules", "".join(m.name + "\n" for m in modules).encode())
    for m in modules:
        cpio.file(f"lib/modules/{m.name}", m.read_bytes())
    cpio.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    cpio.close()
    return gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)


def _data(name: str) -> bytes:
    return resources.files("atoll.agent.podvm").joinpath(name).read_bytes()
