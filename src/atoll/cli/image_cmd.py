"""`atoll image build|import|list`: VM images in the content library, container images in
this host's local store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from atoll.cli.common import default_data_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("image", help="build, import and list VM and container images")
    isub = p.add_subparsers(dest="image_command", metavar="COMMAND", required=True)
    build = isub.add_parser("build", help="build a VM image and publish it to the content "
                                          "library")
    build.add_argument("kind", choices=["tiny", "debian"],
                       help="tiny: a cloud kernel and a busybox initramfs; debian: Debian 12 "
                            "with cloud-init (debootstrap)")
    build.add_argument("--name", default="", help="display name (default: the kind)")
    build.add_argument("--size", default="2G", help="debian: the disk's size")
    build.add_argument("--disk", default="", metavar="SIZE",
                       help="tiny: give the image a blank qcow2 disk of SIZE (e.g. 256M): its "
                            "VMs get a writable /dev/vda")
    _cluster_flags(build)
    build.set_defaults(func=_lazy("run_build"))
    imp = isub.add_parser("import", help="import a VM disk (qcow2, raw, ISO, VMDK, VHD(X)) or "
                                         "appliance (OVA, OVF) into the content "
                                         "library, or a container image (OCI image layout, "
                                         "directory or tar, or a `docker save` archive) into "
                                         "this host's store")
    imp.add_argument("file", type=Path)
    imp.add_argument("--name", default="", help="VM disks: the image's display name (an "
                                                "appliance's default: its VirtualSystem's name); container "
                                                "images: a name when the file has none, or an "
                                                "extra one")
    imp.add_argument("--data-dir", type=Path, default=None,
                     help="container images: the agent's data dir (default: ~/.atoll/agent)")
    _cluster_flags(imp)
    imp.set_defaults(func=run_import)
    ls = isub.add_parser("list", help="VM images of the cluster and this host's container images")
    ls.add_argument("--data-dir", type=Path, default=None,
                    help="the agent's data dir (default: ~/.atoll/agent)")
    ls.add_argument("--kubeconfig", default=None, help="credentials for the API server")
    ls.set_defaults(func=run_list)


def _cluster_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubeconfig", default=None, help="VM images: credentials for the API server")
    p.add_argument("-n", "--namespace", default="",
                   help="VM images: publish as a VirtualMachineImage in this namespace (default: "
                        "a ClusterVirtualMachineImage)")


def _lazy(name: str):  # type: ignore[no-untyped-def]
    def run(args: argparse.Namespace) -> int:
        from atoll.cli import vmimage_cmd
        return int(getattr(vmimage_cmd, name)(args))
    return run


def _is_container_image(path: Path) -> bool:
    """By content, not by name: an OCI layout directory or a tar (OCI or `docker save`);
    anything else is left to the VM disk import (qemu-img decides)."""
    import tarfile

    if path.is_dir():
        return True
    try:  # a tar with at least one member: a blank raw disk is a valid, empty tar
        with tarfile.open(path) as tar:
            return tar.next() is not None
    except (tarfile.TarError, OSError, EOFError, ValueError):
        return False


def _store(data_dir: Path | None):  # type: ignore[no-untyped-def]
    from atoll.agent.images.store import ImageStore

    return ImageStore((data_dir or default_data_dir() / "agent") / "images")


def run_import(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from atoll.agent.images.importer import ImageImportError, import_file

    if not args.file.exists():
        print(f"error: {args.file} does not exist", file=sys.stderr)
        return 1
    from atoll.vmimage.ova import is_appliance

    if is_appliance(args.file):  # before the tar check: an OVA is a tar too
        return int(_lazy("run_import_appliance")(args))
    if not _is_container_image(args.file):
        return int(_lazy("run_import_disk")(args))
    store = _store(args.data_dir)
    bar = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, desc="importing",
               file=sys.stderr, disable=None)

    def set_total(n: int) -> None:
        bar.total = n
        bar.refresh()
    try:
        images = import_file(store, args.file, name=args.name, progress_total=set_total,
                             progress=bar.update)
    except ImageImportError as e:
        bar.close()
        print(f"error: {e}", file=sys.stderr)
        return 1
    bar.close()
    for image in images:
        print(f"imported {image.ref} ({image.id[:19]}, {len(image.layers)} layers)")
    return 0


def run_list(args: argparse.Namespace) -> int:
    import asyncio

    from atoll.cli.common import resolve_kubeconfig
    from atoll.cli.vmimage_cmd import image_size, list_cluster_images
    from atoll.client import kubeconfig

    try:
        vm_images = asyncio.run(list_cluster_images(kubeconfig.load(
            resolve_kubeconfig(args.kubeconfig))))
    except Exception as e:  # no cluster reachable: still show this host's images
        print(f"(VM images: {e or type(e).__name__})", file=sys.stderr)
        vm_images = []
    if vm_images:
        print(f"{'VM IMAGE':24} {'DISPLAY NAME':20} {'TYPE':5} {'SIZE':>10} READY")
        for image in vm_images:
            st = image.get("status") or {}
            ready = next((c.get("status") for c in st.get("conditions") or []
                          if c.get("type") == "Ready"), "Unknown")
            size = image_size(image)
            print(f"{image['metadata']['name']:24} {st.get('name', ''):20} "
                  f"{st.get('type', ''):5} {size / 2**20:9.1f}M {ready}")
        print()
    images = _store(args.data_dir).list()
    print(f"{'IMAGE':60} {'ID':19} LAYERS")
    for image in images:
        print(f"{image.ref:60} {image.id[:19]:19} {len(image.layers)}")
    return 0
