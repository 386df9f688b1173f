"""`atoll host maintenance HOST`: empty a host without downtime, and `--off` to end it.

Entering maintenance cordons the Node (so nothing new lands there), waits while the
evacuation controller live-migrates its VMs away (printing each as it leaves, and why any
stays), then evicts its pods through the Eviction API as ``kubectl drain`` does (PodDisruption
Budgets respected, DaemonSet pods left alone), retrying evictions a budget refuses.
``--power-off`` powers off (Hard) the VMs that cannot move once their migrations have failed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from atoll.api import errors
from atoll.api.migration import names as m
from atoll.api.vmoperator import names as n
from atoll.cli.common import resolve_kubeconfig
from atoll.client import kubeconfig
from atoll.client.rest import ApiClient
from atoll.controllers.vmoperator.evacuation import (
    STRATEGY_ANNOTATION,
    EvacuationController,
    migration_name,
)

POLL = 1.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("host", help="work with hosts (maintenance mode)")
    hsub = p.add_subparsers(dest="host_command", metavar="COMMAND", required=True)
    mt = hsub.add_parser("maintenance", help="move every VM and pod off a host (--off: end it)")
    mt.add_argument("name", help="the host (Node) name")
    mt.add_argument("--off", action="store_true", help="leave maintenance (uncordon)")
    mt.add_argument("--power-off", action="store_true",
                    help="power off the VMs that cannot be migrated instead of waiting")
    mt.add_argument("--timeout", type=float, default=900.0, help="seconds to wait at most")
    mt.add_argument("--kubeconfig", default=None, help="credentials for the API server")
    mt.set_defaults(func=maintenance)


def maintenance(args: argparse.Namespace) -> int:
    config = kubeconfig.load(resolve_kubeconfig(args.kubeconfig))
    return asyncio.run(_maintenance(config, args))


async def _maintenance(config: kubeconfig.ClientConfig, args: argparse.Namespace) -> int:
    client = ApiClient(config, user_agent="atoll-host-maintenance")
    try:
        node_path = f"/api/v1/nodes/{args.name}"
        try:
            await client.patch(node_path, {"spec": {"unschedulable": not args.off or None}})
        except errors.ApiError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        if args.off:
            print(f"{args.name} left maintenance: it takes VMs and pods again")
            return 0
        print(f"{args.name} cordoned: migrating its VMs away")
        deadline = time.monotonic() + args.timeout
        if not await _vms_gone(client, args, deadline):
            return 1
        if not await _evict_pods(client, args.name, deadline):
            return 1
        print(f"{args.name} is in maintenance: no VM or pod runs there")
        return 0
    finally:
        await client.close()


async def _running_vms(client: ApiClient, host: str) -> list[dict[str, Any]]:
    vms = await client.get(f"/apis/{n.GROUP}/{n.VERSION}/virtualmachines",
                           labelSelector=f"{n.HOST_LABEL}={host}")
    return [vm for vm in vms.get("items") or []
            if (vm.get("status") or {}).get("powerState") == n.POWERED_ON]


async def _vms_gone(client: ApiClient, args: argparse.Namespace, deadline: float) -> bool:
    seen: set[str] = set()
    while True:
        vms = await _running_vms(client, args.name)
        keys = {f"{vm['metadata']['namespace']}/{vm['metadata']['name']}" for vm in vms}
        for left in sorted(seen - keys):
            print(f"  {left} left {args.name}")
        seen = keys
        if not vms:
            return True
        stuck = [vm for vm in vms if await _cannot_move(client, vm, args.name)]
        if stuck and len(stuck) == len(vms):
            names = ", ".join(f"{vm['metadata']['namespace']}/{vm['metadata']['name']}"
                              for vm in stuck)
            if not args.power_off:
                print(f"error: these VMs cannot be migrated: {names} (see their Events; "
                      "--power-off powers them off)", file=sys.stderr)
                return False
            for vm in stuck:
                await client.patch(n.vm_path(vm["metadata"]["namespace"], vm["metadata"]["name"]),
                                   {"spec": {"powerState": n.POWERED_OFF, "powerOffMode": n.HARD}})
                print(f"  {vm['metadata']['namespace']}/{vm['metadata']['name']} powered off")
        if time.monotonic() > deadline:
            print(f"error: VMs still on {args.name}: {', '.join(sorted(keys))}", file=sys.stderr)
            return False
        await asyncio.sleep(POLL)


async def _cannot_move(client: ApiClient, vm: dict[str, Any], host: str) -> bool:
    """Opted out, or every evacuation attempt for it failed."""
    if (vm["metadata"].get("annotations") or {}).get(STRATEGY_ANNOTATION) == "None":
        return True
    ns, name = vm["metadata"]["namespace"], vm["metadata"]["name"]
    for attempt in range(EvacuationController.attempts):
        try:
            mig = await client.get(m.path(ns, migration_name(name, host, attempt)))
        except errors.NotFound:
            return False
        if m.phase(mig) != m.FAILED:
            return False
    return True


async def _evict_pods(client: ApiClient, host: str, deadline: float) -> bool:
    while True:
        pods = (await client.get("/api/v1/pods", fieldSelector=f"spec.nodeName={host}"))["items"]
        movable = [p for p in pods if not _daemon(p) and
                   (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        if not movable:
            return True
        for pod in movable:
            ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
            try:
                await client.create(f"/api/v1/namespaces/{ns}/pods/{name}/eviction", {
                    "apiVersion": "policy/v1", "kind": "Eviction",
                    "metadata": {"name": name, "namespace": ns}})
                print(f"  evicted pod {ns}/{name}")
            except errors.TooManyRequests:
                pass  # a disruption budget says not now: try again
            except errors.NotFound:
                pass
        if time.monotonic() > deadline:
            names = ", ".join(p["metadata"]["name"] for p in movable)
            print(f"error: pods still on {host}: {names}", file=sys.stderr)
            return False
        await asyncio.sleep(POLL * 5)


def _daemon(pod: dict[str, Any]) -> bool:
    return any(ref.get("kind") == "DaemonSet" and ref.get("controller")
               for ref in pod["metadata"].get("ownerReferences") or [])
