"""The "tiny" guest image: Debian's cloud kernel, booted directly, and a busybox initramfs.

It boots in about a second under KVM (a few under TCG), understands the guest
contract of docs/vm-operator.md (``ip=`` on the kernel command line, a NoCloud
seed, the ACPI power button) and leaves a root shell on the serial console.  Its
cloud-init is a small awk program (``tiny_cloudinit.awk``) that reads the
subset of cloud-config listed there.
"""

from __future__ import annotations

import gzip
import io
import subprocess
from importlib import resources
from pathlib import Path
from typing import Callable

from atoll.vmimage import BuiltImage
from atoll.vmimage.cpio import CpioWriter
from atoll.vmimage.kernel import Kernel, KernelError, fetch

BUSYBOX = Path("/bin/busybox")
#: what the guest needs from the kernel's modules: virtio-mmio devices (microvm), disks, the
#: NIC, the seed's file system, and the power button
MODULES = ["virtio_mmio", "virtio_pci", "virtio_blk", "virtio_net", "isofs", "button", "evdev"]
POWER_OFF = "#!/bin/sh\necho 'atoll-tiny: power button: powering off'\nsync\npoweroff -f\n"

Progress = Callable[[str], None]


def build_tiny(cache_dir: Path, progress: Progress | None = None) -> BuiltImage:
    """Fetch the kernel (cached) and write ``initrd.img`` next to it; the image's files."""
    say = progress or (lambda message: None)
    say("fetching Debian's cloud kernel")
    kernel = fetch(cache_dir / "kernels")
    out = cache_dir / "tiny" / kernel.version
    out.mkdir(parents=True, exist_ok=True)
    say("building the busybox initramfs")
    initrd = out / "initrd.img"
    tmp = initrd.with_suffix(".tmp")
    tmp.write_bytes(initramfs(kernel))
    tmp.rename(initrd)
    return BuiltImage(display_name="tiny", kernel=kernel.vmlinuz, initrd=initrd, kernel_args="quiet",
                      os_id="busybox", os_type="linux",
                      os_version=kernel.version.split("-")[0], capabilities=["cloud-init"])


def blank_disk(cache_dir: Path, size: str) -> Path:
    """An empty qcow2 disk of ``size`` (qemu-img's units) for the tiny image, cached by size."""
    path = cache_dir / "tiny" / f"blank-{size}.qcow2"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(tmp), size], check=True,
                       capture_output=True)
        tmp.rename(path)
    return path


def initramfs(kernel: Kernel) -> bytes:
    if not BUSYBOX.exists():
        raise KernelError("/bin/busybox is missing (install busybox-static)")
    modules = kernel.with_dependencies([m for m in MODULES if _has(kernel, m)])
    raw = io.BytesIO()
    cpio = CpioWriter(raw)
    for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "run",
              "root", "etc", "etc/acpi", "etc/acpi/PWRF", "lib", "lib/modules", "mnt", "var",
              "var/log"):
        cpio.directory(d, 0o700 if d == "root" else 0o755)
    cpio.device("dev/console", "c", 5, 1)
    cpio.device("dev/null", "c", 1, 3, 0o666)
    cpio.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    for applet in _applets():
        target = "bin/" + applet
        if applet != "busybox":
            cpio.symlink(target, "busybox")
    cpio.file("init", _data("tiny_init.sh"), 0o755)
    cpio.file("etc/cloudinit.awk", _data("tiny_cloudinit.awk"))
    cpio.file("etc/modules", "".join(m.name + "\n" for m in modules).encode())
    for m in modules:
        cpio.file(f"lib/modules/{m.name}", m.read_bytes())
    cpio.file("etc/acpid.conf", b"PWRF PWRF/00000080\n")
    cpio.file("etc/acpi/PWRF/00000080", POWER_OFF.encode(), 0o755)
    cpio.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    cpio.file("etc/group", b"root:x:0:\n")
    cpio.file("etc/profile", b"export PS1='\\h:\\w# '\n")
    cpio.close()
    return gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)


def _has(kernel: Kernel, module: str) -> bool:
    try:
        kernel.module_path(module)
        return True
    except KernelError:
        return kernel.builtin(module)


def _applets() -> list[str]:
    out = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True)
    return [a for a in out.stdout.split() if a and "/" not in a]


def _data(name: str) -> bytes:
    return resources.files("atoll.vmimage").joinpath(name).read_bytes()
