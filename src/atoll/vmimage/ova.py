"""Appliances from vSphere and elsewhere: an OVA (a tar whose first member is the OVF
descriptor) or an OVF beside its files, read without trusting either.

An OVA is read member by member, never extracted whole: a member that is not a plain file
(links, devices, directories) or whose name leaves the archive (absolute, ``..``) refuses
the whole archive, as does a descriptor that names a file the archive does not hold, or a
path, or a URL.  Only the boot disk is copied out (streamed, with progress, after checking
there is room for it) and converted to qcow2 by ``qemu-img convert``, which also refuses a
VMDK whose grain tables do not hold together.  Nothing is published until all of that has
succeeded, so a refused appliance leaves nothing behind in the content library.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from atoll.vmimage import ovf

Progress = Callable[[int], None]
_PERCENT = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")
#: disk formats an appliance may carry (what qemu-img reads of them), by qemu-img's name
DISK_FORMATS = ("vmdk", "qcow2", "raw", "vpc", "vhdx", "vdi")


class ApplianceError(ValueError):
    """The appliance is refused; the message says why."""


@dataclass
class Appliance:
    descriptor: ovf.Descriptor
    #: the boot disk as found in (copied out of) the appliance
    disk: Path
    disk_format: str


def is_appliance(path: Path) -> bool:
    """An ``.ovf`` file, or a tar whose first member is one (the OVA layout, DSP0243 §5.3)."""
    if path.suffix.lower() == ".ovf" and path.is_file():
        return True
    try:
        with tarfile.open(path, "r:") as tar:
            first = tar.next()
    except (tarfile.TarError, OSError, EOFError, ValueError):
        return False
    return first is not None and first.name.lower().endswith(".ovf")


def _safe_name(name: str, what: str) -> str:
    p = PurePosixPath(name)
    if not name or p.is_absolute() or ".." in p.parts or "\\" in name or "\0" in name:
        raise ApplianceError(f"{what} {name!r} leaves the appliance: refused")
    return str(p)


def _href(href: str) -> str:
    """A file the descriptor references: a plain name inside the appliance."""
    plain = href[2:] if href.startswith("./") else href
    if "://" in plain or "/" in plain:
        raise ApplianceError(f"the descriptor references {href!r}, which is not a file of the "
                             "appliance (URLs and paths are refused)")
    return _safe_name(plain, "the descriptor's file")


def _room_for(size: int, where: Path) -> None:
    free = shutil.disk_usage(where).free
    if size > free:
        raise ApplianceError(f"the disk is {size} bytes and {where} has {free} free")


def read(path: Path, scratch: Path, progress: Progress | None = None) -> Appliance:
    """The appliance's descriptor and its boot disk, copied into ``scratch`` (an OVA) or
    found beside the descriptor (an OVF)."""
    if path.suffix.lower() == ".ovf" and path.is_file():
        return _read_ovf(path)
    try:
        with tarfile.open(path, "r:") as tar:
            return _read_ova(tar, scratch, progress)
    except tarfile.TarError as e:
        raise ApplianceError(f"not a readable OVA (tar): {e}") from None


def _read_ova(tar: tarfile.TarFile, scratch: Path, progress: Progress | None) -> Appliance:
    members: dict[str, tarfile.TarInfo] = {}
    first: tarfile.TarInfo | None = None
    for member in tar:  # every member is checked before anything is read
        name = _safe_name(member.name, "the member")
        if not member.isreg():
            raise ApplianceError(f"the member {member.name!r} is not a plain file: refused")
        if name in members:
            raise ApplianceError(f"the member {name!r} appears twice: refused")
        members[name] = member
        first = first or member
    if first is None or not first.name.lower().endswith(".ovf"):
        raise ApplianceError("an OVA starts with its .ovf descriptor; this one does not")
    if first.size > ovf.MAX_DESCRIPTOR:
        raise ApplianceError(f"the descriptor is {first.size} bytes (at most "
                             f"{ovf.MAX_DESCRIPTOR})")
    handle = tar.extractfile(first)
    assert handle is not None  # a regular member
    descriptor = _descriptor(handle.read())
    boot = descriptor.disks[0]
    name = _href(boot.file.href) if boot.file else ""
    member = members.get(name)
    if member is None:
        raise ApplianceError(f"the descriptor's disk {boot.id} is {name!r}, which the OVA "
                             "does not hold")
    scratch.mkdir(parents=True, exist_ok=True)
    _room_for(member.size, scratch)
    out = scratch / f"disk-0{PurePosixPath(name).suffix or '.img'}"
    source = tar.extractfile(member)
    assert source is not None
    with source, open(out, "wb") as dst:
        while chunk := source.read(1 << 20):
            dst.write(chunk)
            if progress:
                progress(len(chunk))
    return Appliance(descriptor, out, _format_of(out))


def _read_ovf(path: Path) -> Appliance:
    if path.stat().st_size > ovf.MAX_DESCRIPTOR:
        raise ApplianceError(f"the descriptor is {path.stat().st_size} bytes (at most "
                             f"{ovf.MAX_DESCRIPTOR})")
    descriptor = _descriptor(path.read_bytes())
    boot = descriptor.disks[0]
    name = _href(boot.file.href) if boot.file else ""
    disk = path.parent / name if name else path.parent
    if not name or disk.is_symlink() or not disk.is_file():
        raise ApplianceError(f"the descriptor's disk {boot.id} is {name!r}, which is not a "
                             f"file beside {path.name}")
    return Appliance(descriptor, disk, _format_of(disk))


def _descriptor(text: bytes) -> ovf.Descriptor:
    try:
        descriptor = ovf.parse(text)
    except ovf.OvfError as e:
        raise ApplianceError(f"OVF descriptor: {e}") from None
    if not descriptor.disks:
        raise ApplianceError("OVF descriptor: no disk to import (DiskSection is empty)")
    return descriptor


def _format_of(disk: Path) -> str:
    """What qemu-img reads the disk as; an appliance disk it sees as raw bytes must say so."""
    try:
        proc = subprocess.run(["qemu-img", "info", "--output=json", str(disk)],
                              capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise ApplianceError("qemu-img is not installed (apt-get install qemu-utils)") from None
    if proc.returncode:
        raise ApplianceError(f"the disk {disk.name} is not one qemu-img reads: "
                             f"{_last_line(proc.stderr)}")
    fmt = str(json.loads(proc.stdout).get("format") or "")
    if fmt not in DISK_FORMATS:
        raise ApplianceError(f"the disk {disk.name} is {fmt!r}, not a VM disk format")
    return fmt


def convert(appliance: Appliance, out: Path, progress: Callable[[float], None] | None = None
            ) -> Path:
    """The boot disk as qcow2 at ``out`` (``progress`` gets the percentage done)."""
    argv = ["qemu-img", "convert", "-p", "-f", appliance.disk_format, "-O", "qcow2",
            str(appliance.disk), str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    buffer = b""
    while chunk := proc.stdout.read1(4096):  # type: ignore[attr-defined]
        buffer = (buffer + chunk)[-256:]
        found = _PERCENT.findall(buffer)
        if found and progress:
            progress(float(found[-1]))
    err = proc.stderr.read().decode(errors="replace")
    if proc.wait():
        out.unlink(missing_ok=True)
        raise ApplianceError(f"qemu-img cannot convert the disk {appliance.disk.name}: "
                             f"{_last_line(err)}")
    return out


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].removeprefix("qemu-img: ") if lines else "unknown reason"
