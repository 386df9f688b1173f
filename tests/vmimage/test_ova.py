"""OVF descriptors and OVA archives as vSphere exports them, and hostile ones: path
traversal, links, missing or remote files, DTDs and entity bombs, bogus VMDKs, absurd
capacities.  Real qemu-img makes and converts the disks."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from atoll.vmimage import ova, ovf

DESCRIPTOR = """<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:vmw="http://www.vmware.com/schema/ovf"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
  <References>
    <File ovf:id="file1" ovf:href="{href}"/>
    <File ovf:id="file2" ovf:href="data.vmdk"/>
  </References>
  <DiskSection><Info>disks</Info>
    <Disk ovf:diskId="data" ovf:fileRef="file2" ovf:capacity="1" ovf:capacityAllocationUnits="byte * 2^30"/>
    <Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="{capacity}"
      ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection><Info>nets</Info><Network ovf:name="VM Network"/></NetworkSection>
  <VirtualSystem ovf:id="barvm"><Info>vm</Info><Name>barvm</Name>
    <VirtualHardwareSection><Info>hw</Info>
      <Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>512</rasd:VirtualQuantity></Item>
      <Item><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceType>17</rasd:ResourceType><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource></Item>
      <Item><rasd:InstanceID>4</rasd:InstanceID><rasd:ResourceType>17</rasd:ResourceType><rasd:HostResource>ovf:/disk/data</rasd:HostResource></Item>
      <Item><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceType>10</rasd:ResourceType><rasd:Connection>VM Network</rasd:Connection></Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""


def descriptor(href: str = "disk1.vmdk", capacity: int = 64 << 20) -> bytes:
    return DESCRIPTOR.format(href=href, capacity=capacity).encode()


@pytest.fixture(scope="module")
def vmdk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64 MiB disk with a marker in its first sector, as a stream-optimised VMDK."""
    tmp = tmp_path_factory.mktemp("vmdk")
    raw = tmp / "d.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(raw), "64M"], check=True)
    with open(raw, "r+b") as f:
        f.write(b"atoll-ova-marker")
    out = tmp / "disk1.vmdk"
    subprocess.run(["qemu-img", "convert", "-O", "vmdk", "-o", "subformat=streamOptimized",
                    str(raw), str(out)], check=True)
    return out


def add(tar: tarfile.TarFile, name: str, data: bytes, kind: bytes = tarfile.REGTYPE,
        link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname = (len(data) if kind == tarfile.REGTYPE else 0), kind, link
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def make_ova(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            add(tar, name, data)
    return path


def test_a_vsphere_descriptor_reads_as_the_machine_it_describes() -> None:
    d = ovf.parse(descriptor())
    assert (d.name, d.cpus, d.memory_bytes, d.nics, d.firmware) == \
        ("barvm", 2, 512 << 20, 1, "efi")
    assert [x.id for x in d.disks] == ["vmdisk1", "data"]  # the hardware's order: boot first
    assert d.disks[0].capacity == 64 << 20 and d.disks[0].file.href == "disk1.vmdk"
    assert d.disks[1].capacity == 1 << 30


def test_an_ova_imports_its_boot_disk_as_qcow2(tmp_path: Path, vmdk: Path) -> None:
    path = make_ova(tmp_path / "bar.ova", [("bar.ovf", descriptor()),
                                           ("disk1.vmdk", vmdk.read_bytes()),
                                           ("data.vmdk", vmdk.read_bytes())])
    assert ova.is_appliance(path)
    seen: list[int] = []
    appliance = ova.read(path, tmp_path / "scratch", seen.append)
    assert appliance.disk_format == "vmdk" and sum(seen) == vmdk.stat().st_size
    percent: list[float] = []
    out = ova.convert(appliance, tmp_path / "out.qcow2", percent.append)
    info = subprocess.run(["qemu-img", "info", "--output=json", str(out)], capture_output=True,
                          text=True, check=True).stdout
    assert '"format": "qcow2"' in info and '"virtual-size": 67108864' in info
    raw = tmp_path / "back.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(out), str(raw)], check=True)
    assert raw.read_bytes()[:16] == b"atoll-ova-marker"
    assert percent and percent[-1] == 100.0


def test_an_ovf_beside_its_disk_imports_too(tmp_path: Path, vmdk: Path) -> None:
    (tmp_path / "bar.ovf").write_bytes(descriptor())
    (tmp_path / "disk1.vmdk").write_bytes(vmdk.read_bytes())
    assert ova.is_appliance(tmp_path / "bar.ovf")
    assert ova.read(tmp_path / "bar.ovf", tmp_path / "scratch").disk == tmp_path / "disk1.vmdk"


@pytest.mark.parametrize("members,why", [
    ([("../../escape.ovf", b"x")], "leaves the appliance"),
    ([("bar.ovf", b""), ("/etc/disk1.vmdk", b"x")], "leaves the appliance"),
    ([("bar.ovf", b""), ("a/../../disk1.vmdk", b"x")], "leaves the appliance"),
    ([("notes.txt", b"x"), ("bar.ovf", b"")], "starts with its .ovf"),
    ([("bar.ovf", b""), ("bar.ovf", b"")], "appears twice"),
])
def test_hostile_members_refuse_the_whole_archive(tmp_path: Path, members: list, why: str
                                                  ) -> None:
    members = [(n, data or descriptor()) for n, data in members]
    path = make_ova(tmp_path / "evil.ova", members)
    with pytest.raises(ova.ApplianceError, match=why):
        ova.read(path, tmp_path / "scratch")
    assert not (tmp_path / "scratch").exists() or not any((tmp_path / "scratch").iterdir())
    assert not (tmp_path.parent / "escape.ovf").exists()


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE])
def test_links_and_devices_are_refused(tmp_path: Path, kind: bytes) -> None:
    path = tmp_path / "links.ova"
    with tarfile.open(path, "w") as tar:
        add(tar, "bar.ovf", descriptor())
        add(tar, "disk1.vmdk", b"", kind, link="/etc/shadow")
    with pytest.raises(ova.ApplianceError, match="not a plain file"):
        ova.read(path, tmp_path / "scratch")


@pytest.mark.parametrize("href,why", [
    ("missing.vmdk", "does not hold"),
    ("http://attacker.example/disk1.vmdk", "URLs and paths are refused"),
    ("sub/disk1.vmdk", "URLs and paths are refused"),
    ("..", "leaves the appliance"),
])
def test_a_descriptor_naming_what_is_not_in_the_archive_is_refused(
        tmp_path: Path, vmdk: Path, href: str, why: str) -> None:
    path = make_ova(tmp_path / "bad.ova", [("bar.ovf", descriptor(href=href)),
                                           ("disk1.vmdk", vmdk.read_bytes())])
    with pytest.raises(ova.ApplianceError, match=why):
        ova.read(path, tmp_path / "scratch")


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1">&lol3;</Envelope>"""
EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1">&x;</Envelope>"""


@pytest.mark.parametrize("text,why", [
    (BOMB, "DTD or entities"),
    (EXTERNAL, "DTD or entities"),
    (b"<Envelope", "not XML"),
    (b"<other/>", "not an OVF descriptor"),
    (b"x" * (ovf.MAX_DESCRIPTOR + 1), "at most"),
    (descriptor(capacity=1 << 60), "beyond 64 TiB"),
    (descriptor().replace(b"ovf:/disk/vmdisk1", b"ovf:/disk/nope"), "does not hold"),
    (descriptor().replace(b'<rasd:VirtualQuantity>2<', b'<rasd:VirtualQuantity>two<'),
     "not a whole number"),
    (descriptor().replace(b"byte * 2^20", b"furlongs"), "unsupported allocation units"),
])
def test_bad_descriptors_say_what_is_wrong(text: bytes, why: str) -> None:
    with pytest.raises(ovf.OvfError, match=why):
        ovf.parse(text)


def test_a_vmdk_with_a_bogus_grain_table_is_refused_and_leaves_nothing(
        tmp_path: Path, vmdk: Path) -> None:
    data = bytearray(vmdk.read_bytes())
    data[512:4096] = b"\xff" * (4096 - 512)  # the grain directory and tables, garbled
    path = make_ova(tmp_path / "bogus.ova", [("bar.ovf", descriptor()),
                                             ("disk1.vmdk", bytes(data))])
    out = tmp_path / "out.qcow2"
    with pytest.raises(ova.ApplianceError, match="qemu-img"):
        ova.convert(ova.read(path, tmp_path / "scratch"), out)
    assert not out.exists()


def test_not_an_appliance(tmp_path: Path) -> None:
    (tmp_path / "disk.qcow2").write_bytes(b"QFI\xfb")
    assert not ova.is_appliance(tmp_path / "disk.qcow2")
    container = make_ova(tmp_path / "image.tar", [("manifest.json", b"[]")])
    assert not ova.is_appliance(container)
