"""OVF descriptors (DMTF DSP0243, as vSphere exports them): what an appliance holds.

Read with defusedxml, DTDs and entities refused outright (an OVF has no use for them, and
they are how an XML bomb or an external-entity read gets in), and the descriptor's size
bounded before parsing.  Everything here is pure: the archive side is ``ova.py``.

The facts kept are the ones a VM needs: the files (``References``), the disks
(``DiskSection``: capacity, format, file), and the first virtual system's name, vCPUs
(resource type 3), memory (4, with its ``AllocationUnits``), NICs (10), disks in boot order
(17, ``ovf:/disk/<id>``) and firmware (VMware's ``vmw:Config firmware``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from xml.etree.ElementTree import ParseError

#: a descriptor larger than this is refused before parsing (vSphere's are a few KiB)
MAX_DESCRIPTOR = 4 << 20
#: a disk claiming more than this is refused (a typo or a hostile descriptor)
MAX_CAPACITY = 64 << 40

OVF = "http://schemas.dmtf.org/ovf/envelope/1"
RASD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
VMW = "http://www.vmware.com/schema/ovf"
CPU, MEMORY, ETHERNET, DISK = "3", "4", "10", "17"
_UNITS = re.compile(r"^\s*byte\s*(?:\*\s*(\d+)\s*\^\s*(\d+))?\s*$", re.I)


class OvfError(ValueError):
    """The descriptor cannot be used; the message says what is wrong in it."""


@dataclass
class OvfFile:
    id: str
    href: str
    size: int | None = None


@dataclass
class OvfDisk:
    id: str
    file: OvfFile | None
    capacity: int
    format: str = ""


@dataclass
class Descriptor:
    name: str
    cpus: int = 1
    memory_bytes: int = 0
    nics: int = 0
    firmware: str = "bios"
    files: dict[str, OvfFile] = field(default_factory=dict)
    #: every disk, the boot disk (the first the hardware section attaches) first
    disks: list[OvfDisk] = field(default_factory=list)


def _attr(el: Any, name: str, ns: str = OVF) -> str:
    return str(el.get(f"{{{ns}}}{name}", el.get(name, "")) or "")


def _int(text: str, what: str) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise OvfError(f"{what}: {text!r} is not a whole number") from None
    if value < 0:
        raise OvfError(f"{what}: {value} is negative")
    return value


def _unit(units: str, what: str) -> int:
    """``byte * 2^20`` → 1048576 (DSP0004's programmatic units, the form OVF uses)."""
    m = _UNITS.match(units or "byte")
    if not m:
        raise OvfError(f"{what}: unsupported allocation units {units!r}")
    base, power = int(m.group(1) or 1), int(m.group(2) or 0)
    if power > 60:
        raise OvfError(f"{what}: allocation units {units!r} are out of range")
    return base ** power


def parse(text: bytes) -> Descriptor:
    if len(text) > MAX_DESCRIPTOR:
        raise OvfError(f"the descriptor is {len(text)} bytes (at most {MAX_DESCRIPTOR})")
    try:
        root = fromstring(text, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as e:
        raise OvfError(f"the descriptor declares a DTD or entities, refused ({e})") from None
    except ParseError as e:
        raise OvfError(f"the descriptor is not XML: {e}") from None
    if root.tag != f"{{{OVF}}}Envelope":
        raise OvfError(f"not an OVF descriptor (its root is {root.tag!r}, not an OVF Envelope)")

    files: dict[str, OvfFile] = {}
    for el in root.findall(f"{{{OVF}}}References/{{{OVF}}}File"):
        fid, href = _attr(el, "id"), _attr(el, "href")
        if not fid or not href:
            raise OvfError("References: a File without ovf:id or ovf:href")
        size = _attr(el, "size")
        files[fid] = OvfFile(fid, href, _int(size, f"File {fid} size") if size else None)

    disks: dict[str, OvfDisk] = {}
    for el in root.findall(f"{{{OVF}}}DiskSection/{{{OVF}}}Disk"):
        did = _attr(el, "diskId")
        ref = _attr(el, "fileRef")
        if not did:
            raise OvfError("DiskSection: a Disk without ovf:diskId")
        if ref and ref not in files:
            raise OvfError(f"Disk {did}: its fileRef {ref!r} is not in References")
        units = _attr(el, "capacityAllocationUnits") or "byte"
        capacity = _int(_attr(el, "capacity") or "0", f"Disk {did} capacity") * \
            _unit(units, f"Disk {did}")
        if capacity > MAX_CAPACITY:
            raise OvfError(f"Disk {did}: a capacity of {capacity} bytes is beyond "
                           f"{MAX_CAPACITY >> 40} TiB")
        disks[did] = OvfDisk(did, files.get(ref) if ref else None, capacity, _attr(el, "format"))

    system = root.find(f".//{{{OVF}}}VirtualSystem")
    if system is None:
        raise OvfError("the descriptor has no VirtualSystem")
    name = (system.findtext(f"{{{OVF}}}Name") or _attr(system, "id") or "").strip()
    out = Descriptor(name=name, files=files)
    boot_order: list[str] = []
    hardware = system.find(f"{{{OVF}}}VirtualHardwareSection")
    for item in hardware.findall(f"{{{OVF}}}Item") if hardware is not None else []:
        kind = (item.findtext(f"{{{RASD}}}ResourceType") or "").strip()
        quantity = (item.findtext(f"{{{RASD}}}VirtualQuantity") or "").strip()
        if kind == CPU and quantity:
            out.cpus = max(1, _int(quantity, "the CPU item's VirtualQuantity"))
        elif kind == MEMORY and quantity:
            units = item.findtext(f"{{{RASD}}}AllocationUnits") or "byte * 2^20"
            out.memory_bytes = _int(quantity, "the memory item's VirtualQuantity") * \
                _unit(units, "the memory item")
        elif kind == ETHERNET:
            out.nics += 1
        elif kind == DISK:
            host = (item.findtext(f"{{{RASD}}}HostResource") or "").strip()
            did = host.rsplit("/", 1)[-1] if host else ""
            if did and did not in disks:
                raise OvfError(f"a disk item names {host!r}, which DiskSection does not hold")
            if did:
                boot_order.append(did)
    for cfg in hardware.findall(f"{{{VMW}}}Config") if hardware is not None else []:
        if _attr(cfg, "key", VMW) == "firmware":
            out.firmware = _attr(cfg, "value", VMW).lower() or "bios"
    order = boot_order + [d for d in disks if d not in boot_order]
    out.disks = [disks[d] for d in order]
    return out
