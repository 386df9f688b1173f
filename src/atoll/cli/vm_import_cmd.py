"""`atoll vm import FILE.ova -n NS`: an appliance becomes an image *and* a VM sized like it.

The boot disk is published as a VirtualMachineImage of the namespace (`atoll image import`'s
appliance path), then a VirtualMachine is created from it with the smallest of the
namespace's VirtualMachineClasses that holds the descriptor's vCPUs and memory (fewest
vCPUs, then least memory, then name), unless ``--class`` names one.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path
from typing import Any

from atoll.api import errors, quantity
from atoll.api.vmoperator import names as n
from atoll.client import kubeconfig
from atoll.client.rest import ApiClient


def register(vsub: argparse._SubParsersAction) -> None:
    p = vsub.add_parser("import", help="import an OVA/OVF appliance as an image and a VM "
                                       "sized from its descriptor")
    p.add_argument("file", type=Path, help="the .ova (or .ovf beside its disks)")
    p.add_argument("-n", "--namespace", default="", help="namespace (default: the kubeconfig's)")
    p.add_argument("--name", default="", help="the VM's and image's name (default: the "
                                              "descriptor's VirtualSystem name)")
    p.add_argument("--class", dest="klass", default="",
                   help="the VirtualMachineClass (default: the smallest that fits)")
    p.add_argument("--power-off", action="store_true", help="create the VM powered off")
    p.add_argument("--kubeconfig", default=None, help="credentials for the API server")
    p.set_defaults(func=run)


def smallest_fitting(classes: list[dict[str, Any]], cpus: int, memory: int
                     ) -> dict[str, Any] | None:
    """The class with the fewest vCPUs, then the least memory, holding ``cpus`` and
    ``memory`` bytes (classes that cannot be read are passed over)."""
    fitting = []
    for klass in classes:
        hw = (klass.get("spec") or {}).get("hardware") or {}
        try:
            have_cpus, have_memory = int(hw.get("cpus") or 0), quantity.integer(
                hw.get("memory") or 0)
        except (ValueError, TypeError):
            continue
        if have_cpus >= cpus and have_memory >= memory:
            fitting.append(((have_cpus, have_memory, klass["metadata"]["name"]), klass))
    return min(fitting, key=lambda f: f[0])[1] if fitting else None


def dns_label(text: str) -> str:
    """``Web Server (prod)`` → ``web-server-prod``: a VM name from a descriptor's."""
    out = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return out[:63].rstrip("-")


def run(args: argparse.Namespace) -> int:
    from atoll.cli import vmimage_cmd

    if not args.file.exists():
        print(f"error: {args.file} does not exist", file=sys.stderr)
        return 1
    try:
        config = vmimage_cmd.load_config(args.kubeconfig)
        ns = args.namespace = args.namespace or getattr(config, "namespace", "") or "default"
        classes = asyncio.run(_classes(config, ns))
        chosen: dict[str, Any] = {}

        def choose(descriptor: Any) -> None:
            """Before anything is published: the VM's name and class, or why not."""
            name = dns_label(args.name or descriptor.name)
            if not name:
                raise vmimage_cmd.CliError(f"{descriptor.name!r} makes no VM name; give --name")
            if args.klass:
                klass = next((c for c in classes if c["metadata"]["name"] == args.klass), None)
                if klass is None:
                    raise vmimage_cmd.CliError(f"no VirtualMachineClass {args.klass} in {ns}")
            else:
                klass = smallest_fitting(classes, descriptor.cpus, descriptor.memory_bytes)
                if klass is None:
                    raise vmimage_cmd.CliError(
                        f"no VirtualMachineClass in {ns} holds {descriptor.cpus} vCPU and "
                        f"{descriptor.memory_bytes >> 20} MiB; give --class")
            chosen.update(name=name, klass=klass)
        image, _ = vmimage_cmd.import_appliance(args, check=choose)
        return asyncio.run(_create_vm(config, args, image, chosen["name"], chosen["klass"]))
    except vmimage_cmd.CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


async def _classes(config: kubeconfig.ClientConfig, ns: str) -> list[dict[str, Any]]:
    from atoll.cli.vmimage_cmd import CliError

    client = ApiClient(config, user_agent="atoll-vm-import")
    try:
        return list((await client.get(
            f"/apis/{n.GROUP}/{n.VERSION}/namespaces/{ns}/virtualmachineclasses"))["items"])
    except errors.ApiError as e:
        raise CliError(f"listing the VM classes of {ns}: {e}") from None
    except OSError as e:
        raise CliError(f"cannot reach the API server at {config.server}: {e}") from None
    finally:
        await client.close()


async def _create_vm(config: kubeconfig.ClientConfig, args: argparse.Namespace, image: str,
                     name: str, klass: dict[str, Any]) -> int:
    ns = args.namespace
    client = ApiClient(config, user_agent="atoll-vm-import")
    try:
        body = {"apiVersion": n.API_VERSION, "kind": "VirtualMachine",
                "metadata": {"name": name, "namespace": ns,
                             "annotations": {"vmoperator.atoll.dev/imported-from":
                                             args.file.name[:253]}},
                "spec": {"className": klass["metadata"]["name"], "imageName": image,
                         "powerState": "PoweredOff" if args.power_off else "PoweredOn"}}
        try:
            await client.create(n.vm_path(ns), body)
        except errors.ApiError as e:
            print(f"error: creating the VM: {e}", file=sys.stderr)
            return 1
        hw = (klass.get("spec") or {}).get("hardware") or {}
        print(f"virtualmachine/{name} created in {ns} (class {klass['metadata']['name']}: "
              f"{hw.get('cpus')} vCPU, {hw.get('memory')}; image {image})")
        return 0
    finally:
        await client.close()
