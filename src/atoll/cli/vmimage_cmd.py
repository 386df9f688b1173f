"""VM images from the command line: `atoll image build tiny|debian` and `atoll image import DISK`.

Either way the files end up in the Supervisor's content library (uploaded with
a progress bar) and the image is published as a ClusterVirtualMachineImage (or
a namespaced VirtualMachineImage) whose status says what it is, as vSphere's
content library items appear in VM Operator.  Works from any machine with a
kubeconfig; the build itself runs where the command runs.  Every failure a
person can cause is one ``error:`` line and exit code 1.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import aiohttp
import yaml

from atoll.api import errors
from atoll.api import quantity
from atoll.api.vmoperator import names as n
from atoll.cli.common import resolve_kubeconfig
from atoll.client import content, kubeconfig
from atoll.client.rest import ApiClient
from atoll.vmimage import BuiltImage

DISK_FORMATS = {"qcow2", "raw", "vmdk", "vdi", "vhdx", "vpc"}
SECTOR = 512


class CliError(Exception):
    """A failure worth one line to the user."""


def object_name(display_name: str) -> str:
    """vm-operator's style of image names: vmi- and a stable hash of the display name."""
    return "vmi-" + hashlib.sha256(display_name.encode()).hexdigest()[:17]


def cache_dir() -> Path:
    return Path.home() / ".cache" / "atoll"


def load_config(explicit: str | None) -> kubeconfig.ClientConfig:
    """The CLI's kubeconfig, read before any slow work so a missing one fails at once."""
    try:
        return kubeconfig.load(resolve_kubeconfig(explicit))
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as e:
        raise CliError(f"kubeconfig: {e}") from None


def run_build(args: argparse.Namespace) -> int:
    """`atoll image build tiny|debian`."""
    from atoll.vmimage.kernel import KernelError

    def say(message: str) -> None:
        print(f"{args.kind}: {message}", file=sys.stderr)

    try:
        config = load_config(args.kubeconfig)
        try:
            if args.kind == "tiny":
                from atoll.vmimage.tiny import build_tiny
                built = build_tiny(cache_dir(), say)
                if args.disk:
                    from atoll.vmimage.tiny import blank_disk
                    built.disk = blank_disk(cache_dir(), args.disk)
            else:
                from atoll.vmimage.debian import build_debian
                built = build_debian(cache_dir(), size=args.size, progress=say)
        except (KernelError, OSError, subprocess.SubprocessError, RuntimeError) as e:
            raise CliError(f"building the {args.kind} image failed: {e}") from None
        if args.name:
            built.display_name = args.name
        return _publish_cli(args, config, built)
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def disk_info(path: Path) -> dict[str, Any]:
    """``qemu-img info`` of a disk image, checked; ValueError when it is not a usable one."""
    with path.open("rb") as f:
        qcow2_magic = f.read(4) == b"QFI\xfb"
    try:
        info = _qemu_img_info(path)
    except ValueError as e:
        if qcow2_magic:
            raise ValueError(f"the qcow2 image is corrupt ({e})") from None
        raise
    if qcow2_magic and info.get("format") != "qcow2":
        raise ValueError("a qcow2 header that qemu-img cannot read: the image is corrupt")
    fmt = info.get("format")
    if fmt not in DISK_FORMATS:
        raise ValueError(f"unsupported disk format {fmt!r} (supported: "
                         f"{', '.join(sorted(DISK_FORMATS))})")
    if fmt == "raw":
        size = path.stat().st_size
        if size == 0 or size % SECTOR:
            raise ValueError(f"not a disk image: qemu-img sees raw bytes, and {size} bytes is "
                             f"not a whole number of {SECTOR}-byte sectors")
    if fmt == "qcow2":
        check = subprocess.run(["qemu-img", "check", "-f", "qcow2", str(path)],
                               capture_output=True, text=True, timeout=600)
        if check.returncode not in (0, 3):  # 3: leaked clusters only, harmless
            detail = (check.stderr or check.stdout).strip().splitlines()
            raise ValueError("the qcow2 image is corrupt"
                             + (f": {detail[-1]}" if detail else ""))
    return info


def _qemu_img_info(path: Path) -> dict[str, Any]:
    try:
        proc = subprocess.run(["qemu-img", "info", "--output=json", str(path)],
                              capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise ValueError("qemu-img is not installed (apt-get install qemu-utils)") from None
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        detail = lines[-1].removeprefix("qemu-img: ") if lines else "unknown reason"
        raise ValueError(f"not a disk image qemu-img can read: {detail}")
    info: dict[str, Any] = json.loads(proc.stdout)
    return info


def is_iso(path: Path) -> bool:
    """ISO 9660: the primary volume descriptor's "CD001" at 32 KiB + 1."""
    try:
        with path.open("rb") as f:
            f.seek(0x8001)
            return f.read(5) == b"CD001"
    except OSError:
        return False


def run_import_disk(args: argparse.Namespace) -> int:
    """`atoll image import DISK --name NAME` for qcow2, raw and ISO files (and what else
    qemu-img reads: vmdk, vdi, vhdx, vpc)."""
    try:
        if not args.name:
            raise CliError(f"{args.file}: not a container image; as a VM disk image it needs "
                           f"--name (the image's display name)")
        try:
            info = disk_info(args.file)
        except (ValueError, OSError, subprocess.SubprocessError) as e:
            raise CliError(f"{args.file}: {e}") from None
        config = load_config(args.kubeconfig)
        iso = is_iso(args.file)
        built = BuiltImage(display_name=args.name, disk=args.file, disk_format=info["format"],
                           capabilities=[] if iso else ["cloud-init"])
        return _publish_cli(args, config, built, iso=iso, info=info)
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def run_import_appliance(args: argparse.Namespace) -> int:
    """`atoll image import FILE.ova|FILE.ovf`: the boot disk converted to qcow2 and published,
    with what the descriptor says of the machine printed (vCPUs, memory, disks, NICs)."""
    try:
        import_appliance(args)
        return 0
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def import_appliance(args: argparse.Namespace,
                     check: Callable[[Any], None] | None = None) -> tuple[str, Any]:
    """Publish the appliance ``args.file`` as ``args.name`` (default: its VirtualSystem's
    name) in ``args.namespace``: the image object's name and the OVF descriptor.
    ``check`` sees the descriptor before anything is converted or published (CliError to
    stop there)."""
    import tempfile

    from tqdm import tqdm

    from atoll.vmimage import ova

    config = load_config(args.kubeconfig)
    scratch_root = cache_dir() / "imports"
    scratch_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch_root) as scratch:
        with tqdm(total=args.file.stat().st_size, unit="B", unit_scale=True,
                  unit_divisor=1024, desc="reading", file=sys.stderr, disable=None) as bar:
            try:
                appliance = ova.read(args.file, Path(scratch), bar.update)
            except (ova.ApplianceError, OSError) as e:
                raise CliError(f"{args.file}: {e}") from None
        d = appliance.descriptor
        extra = f"; {len(d.disks) - 1} more disk(s) not imported" if len(d.disks) > 1 else ""
        print(f"{args.file.name}: {d.name or 'unnamed'}, {d.cpus} vCPU, "
              f"{d.memory_bytes >> 20} MiB, {d.nics} NIC, {d.firmware} firmware, boot disk "
              f"{d.disks[0].capacity >> 20} MiB ({appliance.disk_format}){extra}",
              file=sys.stderr)
        if check is not None:
            check(d)
        if d.firmware == "efi":
            print("warning: the appliance boots with EFI firmware; Atoll's VMs boot with "
                  "SeaBIOS (BIOS) today", file=sys.stderr)
        with tqdm(total=100, unit="%", desc="converting", file=sys.stderr,
                  disable=None) as bar:
            def advance(percent: float) -> None:
                bar.update(max(0.0, percent - bar.n))
            try:
                disk = ova.convert(appliance, Path(scratch) / "disk.qcow2", advance)
            except ova.ApplianceError as e:
                raise CliError(f"{args.file}: {e}") from None
        name = args.name or d.name
        if not name:
            raise CliError(f"{args.file}: the descriptor names no VirtualSystem; give --name")
        built = BuiltImage(display_name=name, disk=disk, disk_format="qcow2")
        return _publish_named(args, config, built), d


def _publish_cli(args: argparse.Namespace, config: kubeconfig.ClientConfig, built: BuiltImage,
                 *, iso: bool = False, info: dict[str, Any] | None = None) -> int:
    _publish_named(args, config, built, iso=iso, info=info)
    return 0


def _publish_named(args: argparse.Namespace, config: kubeconfig.ClientConfig, built: BuiltImage,
                   *, iso: bool = False, info: dict[str, Any] | None = None) -> str:
    """Publish ``built``, saying so; the image object's name (CliError when refused)."""
    try:
        name = asyncio.run(publish(config, built, namespace=args.namespace, iso=iso,
                                   info=info))
    except errors.ApiError as e:
        raise CliError(f"the API server refused: {e}") from None
    except content.DigestMismatch as e:
        raise CliError(str(e)) from None
    except ValueError as e:  # the built disk is not one qemu-img accepts
        raise CliError(f"{built.disk}: {e}") from None
    except (OSError, aiohttp.ClientError, asyncio.TimeoutError, ssl.SSLError) as e:
        raise CliError(f"cannot reach the API server at {config.server}: "
                       f"{e or type(e).__name__}") from None
    kind = "virtualmachineimage" if args.namespace else "clustervirtualmachineimage"
    print(f"{kind}/{name} ({built.display_name}) is ready")
    return name


async def publish(config: kubeconfig.ClientConfig, built: BuiltImage, *, namespace: str = "",
                  iso: bool = False, info: dict[str, Any] | None = None) -> str:
    """Upload the image's files and create or update its image object; its name.

    ``info`` is the disk's ``qemu-img info`` when the caller has it already."""
    from tqdm import tqdm

    capacity = 0
    if built.disk is not None:
        info = info or await asyncio.to_thread(disk_info, built.disk)
        capacity = int(info.get("virtual-size") or 0)
    files = {role: path for role, path in (("kernel", built.kernel), ("initrd", built.initrd),
                                           ("disk", built.disk)) if path is not None}
    total = sum(p.stat().st_size for p in files.values())
    refs: dict[str, Any] = {}
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="hashing",
              file=sys.stderr, disable=None) as bar:
        for role, path in files.items():
            refs[role] = {"digest": await asyncio.to_thread(content.digest_of, path, bar.update),
                          "size": path.stat().st_size}
    client = ApiClient(config, user_agent="atoll-image")
    try:
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="uploading",
                  file=sys.stderr, disable=None) as bar:
            for role, path in files.items():
                await content.upload(client, path, bar.update, digest=refs[role]["digest"])
        if built.disk is not None:
            refs["disk"].update(format=built.disk_format, virtualSize=capacity)
        if built.kernel_args:
            refs["kernelArgs"] = built.kernel_args
        return await _apply_image(client, built, refs, namespace, capacity, total, iso)
    finally:
        await client.close()


def image_labels(built: BuiltImage) -> dict[str, str]:
    """The labels upstream's VM Operator puts on images: capabilities and OS."""
    labels = {f"capability.image.vmoperator.vmware.com/{c}": "true" for c in built.capabilities}
    labels.update({"os.image.vmoperator.vmware.com/id": built.os_id,
                   "os.image.vmoperator.vmware.com/type": built.os_type})
    if built.os_version:
        labels["os.image.vmoperator.vmware.com/version"] = built.os_version
    return labels


def image_status(built: BuiltImage, capacity: int, size: int, iso: bool) -> dict[str, Any]:
    """``status`` as docs/vm-operator.md shows it: what the image is, and Ready."""
    return {
        "name": built.display_name, "type": "ISO" if iso else "OVF",
        "firmware": "BIOS", "capabilities": built.capabilities,
        "osInfo": {"id": built.os_id, "type": built.os_type, "version": built.os_version},
        "diskInfo": {"capacity": _quantity(capacity), "size": _quantity(size, round_to=20)},
        "conditions": [{"type": "Ready", "status": "True", "reason": "Uploaded",
                        "message": "all files are in the content library",
                        "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                            time.gmtime())}],
    }


def _quantity(n: int, round_to: int = 0) -> str:
    """Bytes as a Kubernetes quantity: exact (``2Gi``) when a binary unit divides it,
    else rounded up to ``2**round_to`` first (``9Mi`` for a size shown to people)."""
    if round_to and n % (1 << round_to):
        n = (n // (1 << round_to) + 1) << round_to
    for suffix, shift in (("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)):
        if n and n % (1 << shift) == 0:
            return f"{n >> shift}{suffix}"
    return str(n)


async def _apply_image(client: ApiClient, built: BuiltImage, refs: dict[str, Any],
                       namespace: str, capacity: int, size: int, iso: bool) -> str:
    name = object_name(built.display_name)
    kind = "VirtualMachineImage" if namespace else "ClusterVirtualMachineImage"
    path = n.image_path(kind, name, namespace)
    labels = image_labels(built)
    spec = {"providerRef": {"apiVersion": "content.atoll.dev/v1", "kind": "ContentLibraryItem",
                            "name": built.display_name},
            "content": refs}
    body: dict[str, Any] = {"apiVersion": n.API_VERSION, "kind": kind,
                            "metadata": {"name": name, "labels": labels}, "spec": spec}
    if namespace:
        body["metadata"]["namespace"] = namespace
    try:
        await client.create(path.rsplit("/", 1)[0], body)
    except errors.AlreadyExists:
        # one merge patch; the old content's other parts are removed (null), not kept
        gone = {part: None for part in ("kernel", "initrd", "disk", "kernelArgs")
                if part not in refs}
        await client.patch(path, {"metadata": {"labels": labels},
                                  "spec": {**spec, "content": {**gone, **refs}}})
    await client.patch(f"{path}/status",
                       {"status": image_status(built, capacity, size, iso)})
    return name


async def list_cluster_images(config: kubeconfig.ClientConfig) -> list[dict[str, Any]]:
    """Every ClusterVirtualMachineImage, then every namespaced VirtualMachineImage."""
    client = ApiClient(config, user_agent="atoll-image")
    try:
        out = await client.get(f"/apis/{n.GROUP}/{n.VERSION}/clustervirtualmachineimages")
        items = list(out.get("items") or [])
        out = await client.get(f"/apis/{n.GROUP}/{n.VERSION}/virtualmachineimages")
        return items + list(out.get("items") or [])
    finally:
        await client.close()


def image_size(image: dict[str, Any]) -> int:
    """``status.diskInfo.size`` in bytes (0 when absent or unreadable)."""
    try:
        return quantity.integer((image.get("status") or {}).get("diskInfo", {}).get("size") or 0)
    except (ValueError, ArithmeticError, TypeError):
        return 0
