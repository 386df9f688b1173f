"""The "debian" guest image: Debian 12 with cloud-init, built with debootstrap.

The root file system is made from the debootstrap directory with ``mke2fs -d``
(no loop mount needed), labelled ``atoll-root``, and converted to a compressed
qcow2.  Its kernel and initramfs are kept beside it for direct kernel boot
(``microvm``, as the tiny image), so no boot loader is installed.  cloud-init
is limited to the NoCloud datasource, which is what the agent provides.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Callable

from atoll.vmimage import BuiltImage

SUITE = "bookworm"
PACKAGES = ["systemd-sysv", "udev", "cloud-init", "openssh-server", "ifupdown", "iproute2",
            "isc-dhcp-client", "netbase", "ca-certificates", "sudo", "linux-image-cloud-amd64",
            "initramfs-tools", "e2fsprogs", "acpid",
            # debootstrap does not resolve virtual packages: what cloud-init needs through them
            "python3-cffi-backend"]
LABEL = "atoll-root"
CLOUD_CFG = """# Atoll: the seed disk is the only datasource
datasource_list: [NoCloud, None]
"""

Progress = Callable[[str], None]


def mirror() -> str:
    """The Debian mirror this machine's apt uses (the only registry it may reach)."""
    sources = sorted(p for p in Path("/etc/apt/sources.list.d").glob("*")
                     if p.suffix in (".list", ".sources"))
    for source in [Path("/etc/apt/sources.list"), *sources]:
        try:
            text = source.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split()
            if line.startswith("deb ") and len(words) > 1:
                url = next((w for w in words[1:] if w.startswith("http")), "")
                if url and "security" not in url:
                    return url
            if line.startswith("URIs:"):
                url = line.split(":", 1)[1].split()[0]
                if "security" not in url:
                    return url
    return "http://deb.debian.org/debian"


def build_debian(cache_dir: Path, size: str = "2G", progress: Progress | None = None) -> BuiltImage:
    say = progress or (lambda message: None)
    out = cache_dir / "debian"
    root = out / "rootfs"
    if root.exists():
        shutil.rmtree(root)
    out.mkdir(parents=True, exist_ok=True)
    say(f"debootstrap {SUITE} from {mirror()} (a few minutes)")
    _run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE,
          str(root), mirror()])
    say("configuring cloud-init, fstab, console")
    (root / "etc/cloud/cloud.cfg.d/99-atoll.cfg").write_text(CLOUD_CFG)
    (root / "etc/fstab").write_text(f"LABEL={LABEL} / ext4 defaults,discard 0 1\n")
    (root / "etc/hostname").write_text("debian\n")
    _run(["chroot", str(root), "systemctl", "enable", "serial-getty@ttyS0.service"])
    # the ACPI power button (a Soft power-off) powers the guest off: minbase has no logind
    (root / "etc/acpi/events").mkdir(parents=True, exist_ok=True)
    (root / "etc/acpi/events/atoll-powerbtn").write_text(
        "event=button/power.*\naction=/sbin/poweroff\n")
    _run(["chroot", str(root), "systemctl", "enable", "acpid.service"])
    kernel = sorted((root / "boot").glob("vmlinuz-*"))[-1]
    initrd = sorted((root / "boot").glob("initrd.img-*"))[-1]
    shutil.copy(kernel, out / "vmlinuz")
    shutil.copy(initrd, out / "initrd.img")
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for f in (root / cache).glob("*"):
            if f.is_file():
                f.unlink()
    say(f"making the {size} root file system")
    raw = out / "root.raw"
    raw.unlink(missing_ok=True)
    _run(["mke2fs", "-q", "-t", "ext4", "-L", LABEL, "-d", str(root), str(raw), size])
    say("converting to qcow2")
    disk = out / "debian-12.qcow2"
    _run(["qemu-img", "convert", "-c", "-O", "qcow2", str(raw), str(disk)])
    raw.unlink()
    shutil.rmtree(root)
    return BuiltImage(display_name="debian-12", kernel=out / "vmlinuz", initrd=out / "initrd.img",
                      disk=disk, disk_format="qcow2",
                      kernel_args=f"root=LABEL={LABEL} rw", os_id="debian", os_type="linux",
                      os_version="12", capabilities=["cloud-init", "ssh"])


def _run(argv: list[str]) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    except FileNotFoundError:
        raise RuntimeError(f"{argv[0]} is not installed") from None
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {(proc.stderr or proc.stdout).strip()[-800:]}")
