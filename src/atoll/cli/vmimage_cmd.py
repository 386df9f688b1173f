"""VM images from the command line: `atoll image build tiny|debian` and `atoll image import DISK`.

Either way the files end up in the Supervisor's content library (uploaded with
a progress bar) and the image is published as a ClusterVirtualMachineImage (or
a namespaced VirtualMachineImage) whose status says what it is, as vSphere's
content library items appear in VM Operator.  Works from any machine with a
kubeconfig; the build itself runs where the command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from atoll.api import errors
from atoll.api.vmoperator import names as n
from atoll.cli.common import resolve_kubeconfig
from atoll.client import content, kubeconfig
from atoll.client.rest import ApiClient
from atoll.vmimage import BuiltImage

DISK_FORMATS = {"qcow2", "raw", "vmdk", "vdi", "vhdx", "vpc"}


def object_name(display_name: str) -> str:
    """vm-operator's style of image names: vmi- and a stable hash of the display name."""
    return "vmi-" + hashlib.sha256(display_name.encode()).hexdigest()[:17]


def cache_dir() -> Path:
    return Path.home() / ".cache" / "atoll"


def run_build(args: argparse.Namespace) -> int:
    from atoll.vmimage.kernel import KernelError

    def say(message: str) -> None:
        print(f"{args.kind}: {message}", file=sys.stderr)

    try:
        if args.kind == "tiny":
            from atoll.vmimage.tiny import build_tiny
            built = build_tiny(cache_dir(), say)
        else:
            from atoll.vmimage.debian import build_debian
            built = build_debian(cache_dir(), size=args.size, progress=say)
    except (KernelError, OSError, subprocess.SubprocessError, RuntimeError) as e:
        print(f"error: building the {args.kind} image failed: {e}", file=sys.stderr)
        return 1
    if args.name:
        built.display_name = args.name
    return _publish_cli(args, built)


def disk_info(path: Path) -> dict[str, Any]:
    """``qemu-img info`` of a disk image; ValueError when it is not one."""
    try:
        proc = subprocess.run(["qemu-img", "info", "--output=json", str(path)],
                              capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise ValueError("qemu-img is not installed (apt-get install qemu-utils)") from None
    if proc.returncode != 0:
        raise ValueError(f"not a disk image qemu-img can read: "
                         f"{proc.stderr.strip().splitlines()[-1] if proc.stderr else ''}")
    info = json.loads(proc.stdout)
    with path.open("rb") as f:
        magic = f.read(4)
    if magic == b"QFI\xfb" and info.get("format") != "qcow2":
        check = subprocess.run(["qemu-img", "info", "-f", "qcow2", str(path)],
                               capture_output=True, text=True, timeout=60)
        detail = (check.stderr or "").strip().splitlines()
        raise ValueError("a qcow2 header that qemu-img cannot read: the image is corrupt"
                         + (f" ({detail[-1]})" if detail else ""))
    if info.get("format") not in DISK_FORMATS:
        raise ValueError(f"unsupported disk format {info.get('format')!r}")
    check = subprocess.run(["qemu-img", "check", str(path)], capture_output=True, text=True,
                           timeout=600) if info["format"] == "qcow2" else None
    if check is not None and check.returncode not in (0, 3):  # 3: leaked clusters only
        raise ValueError(f"the qcow2 image is corrupt: {check.stdout.strip()[-300:]}")
    return info


def run_import_disk(args: argparse.Namespace) -> int:
    """`atoll image import DISK --name NAME` for qcow2/raw/ISO files."""
    if not args.name:
        print("error: a VM disk image needs --name (the image's display name)", file=sys.stderr)
        return 1
    try:
        info = disk_info(args.file)
    except ValueError as e:
        print(f"error: {args.file}: {e}", file=sys.stderr)
        return 1
    iso = _is_iso(args.file)
    built = BuiltImage(display_name=args.name, disk=args.file,
                       disk_format="raw" if info["format"] == "raw" else info["format"],
                       capabilities=[] if iso else ["cloud-init"])
    return _publish_cli(args, built, iso=iso)


def _is_iso(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            f.seek(0x8001)
            return f.read(5) == b"CD001"
    except OSError:
        return False


def _publish_cli(args: argparse.Namespace, built: BuiltImage, iso: bool = False) -> int:
    try:
        config = kubeconfig.load(resolve_kubeconfig(args.kubeconfig))
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        name = asyncio.run(publish(config, built, namespace=args.namespace, iso=iso))
    except errors.ApiError as e:
        print(f"error: the API server refused: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: cannot reach the API server: {e}", file=sys.stderr)
        return 1
    kind = "virtualmachineimage" if args.namespace else "clustervirtualmachineimage"
    print(f"{kind}/{name} ({built.display_name}) is ready")
    return 0


async def publish(config: kubeconfig.ClientConfig, built: BuiltImage, *, namespace: str = "",
                  iso: bool = False) -> str:
    """Upload the image's files and create or update its image object; its name."""
    from tqdm import tqdm

    client = ApiClient(config, user_agent="atoll-image")
    try:
        files = {role: path for role, path in (("kernel", built.kernel), ("initrd", built.initrd),
                                               ("disk", built.disk)) if path is not None}
        total = sum(p.stat().st_size for p in files.values())
        refs: dict[str, Any] = {}
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="hashing",
                  file=sys.stderr, disable=None) as bar:
            for role, path in files.items():
                refs[role] = {"digest": await asyncio.to_thread(content.digest_of, path,
                                                                bar.update),
                              "size": path.stat().st_size}
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="uploading",
                  file=sys.stderr, disable=None) as bar:
            for role, path in files.items():
                await content.upload(client, path, refs[role]["digest"], bar.update)
        capacity = 0
        if built.disk is not None:
            info = await asyncio.to_thread(disk_info, built.disk)
            capacity = int(info.get("virtual-size") or 0)
            refs["disk"].update(format=built.disk_format, virtualSize=capacity)
        if built.kernel_args:
            refs["kernelArgs"] = built.kernel_args
        return await _apply_image(client, built, refs, namespace, capacity, total, iso)
    finally:
        await client.close()


async def _apply_image(client: ApiClient, built: BuiltImage, refs: dict[str, Any],
                       namespace: str, capacity: int, size: int, iso: bool) -> str:
    name = object_name(built.display_name)
    kind = "VirtualMachineImage" if namespace else "ClusterVirtualMachineImage"
    path = n.image_path(kind, name, namespace)
    labels = {f"capability.image.vmoperator.vmware.com/{c}": "true" for c in built.capabilities}
    labels.update({"os.image.vmoperator.vmware.com/id": built.os_id,
                   "os.image.vmoperator.vmware.com/type": built.os_type})
    if built.os_version:
        labels["os.image.vmoperator.vmware.com/version"] = built.os_version
    spec = {"providerRef": {"apiVersion": "content.atoll.dev/v1", "kind": "ContentLibraryItem",
                            "name": built.display_name},
            "content": refs}
    body = {"apiVersion": n.API_VERSION, "kind": kind,
            "metadata": {"name": name, "labels": labels}, "spec": spec}
    if namespace:
        body["metadata"]["namespace"] = namespace
    try:
        await client.create(path.rsplit("/", 1)[0], body)
    except errors.AlreadyExists:
        await client.patch(path, {"metadata": {"labels": labels}, "spec": spec})
    status = {
        "name": built.display_name, "type": "ISO" if iso else "OVF",
        "firmware": "BIOS", "capabilities": built.capabilities,
        "osInfo": {"id": built.os_id, "type": built.os_type, "version": built.os_version},
        "diskInfo": {"capacity": str(capacity), "size": str(size)},
        "conditions": [{"type": "Ready", "status": "True", "reason": "Uploaded",
                        "message": "all files are in the content library",
                        "lastTransitionTime": _now()}],
    }
    await client.patch(f"{path}/status", {"status": status})
    return name


def _now() -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


async def list_cluster_images(config: kubeconfig.ClientConfig) -> list[dict[str, Any]]:
    client = ApiClient(config, user_agent="atoll-image")
    try:
        out = await client.get(f"/apis/{n.GROUP}/{n.VERSION}/clustervirtualmachineimages")
        items = list(out.get("items") or [])
        out = await client.get(f"/apis/{n.GROUP}/{n.VERSION}/virtualmachineimages")
        return items + list(out.get("items") or [])
    finally:
        await client.close()
