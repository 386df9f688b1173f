"""`atoll vm migrate NAME [--to HOST]`: live-migrate a VM and show how the copy goes.

Creates a VirtualMachineMigration and watches it: the phase, then progress bars for the disk
mirror and the memory copy (bytes sent, dirty rate, expected downtime) as the source host
reports them, and at the end the downtime and total time QEMU measured.  ``--no-wait`` only
creates the object.  Exit status 0 when it succeeded, 1 when it failed (the reason printed).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from tqdm import tqdm

from atoll.api import errors
from atoll.api.migration import names as m
from atoll.cli.common import resolve_kubeconfig
from atoll.client import kubeconfig
from atoll.client.rest import ApiClient


def register(vsub: argparse._SubParsersAction) -> None:
    p = vsub.add_parser("migrate", help="live-migrate a running VM to another host")
    p.add_argument("name", help="VirtualMachine name")
    p.add_argument("--to", dest="target", default="",
                   help="the host to move it to (default: placement chooses)")
    p.add_argument("-n", "--namespace", default="", help="namespace (default: the kubeconfig's)")
    p.add_argument("--kubeconfig", default=None, help="credentials for the API server")
    p.add_argument("--no-wait", action="store_true", help="create the migration and return")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait at most")
    p.set_defaults(func=migrate)


def migrate(args: argparse.Namespace) -> int:
    config = kubeconfig.load(resolve_kubeconfig(args.kubeconfig))
    namespace = args.namespace or getattr(config, "namespace", "") or "default"
    return asyncio.run(_migrate(config, namespace, args))


async def _migrate(config: kubeconfig.ClientConfig, namespace: str,
                   args: argparse.Namespace) -> int:
    client = ApiClient(config, user_agent="atoll-vm-migrate")
    try:
        body: dict[str, Any] = {
            "apiVersion": m.API_VERSION, "kind": m.KIND,
            "metadata": {"generateName": f"{args.name[:50]}-migration-", "namespace": namespace},
            "spec": {"vmName": args.name}}
        if args.target:
            body["spec"]["targetNode"] = args.target
        try:
            mig = await client.create(m.path(namespace), body)
        except errors.ApiError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        name = mig["metadata"]["name"]
        print(f"{m.KIND.lower()}/{name} created")
        if args.no_wait:
            return 0
        try:
            mig = await asyncio.wait_for(_follow(client, mig), args.timeout)
        except asyncio.TimeoutError:
            print(f"error: {name} did not finish within {args.timeout:.0f} s "
                  f"(phase {m.phase(mig)})", file=sys.stderr)
            return 1
        status = mig.get("status") or {}
        if m.phase(mig) == m.SUCCEEDED:
            print(f"{args.name} now runs on {status.get('targetNode')} "
                  f"(from {status.get('sourceNode')}; downtime {status.get('downtime') or '?'}, "
                  f"total {status.get('totalTime') or '?'})")
            return 0
        print(f"error: migration failed: {status.get('reason')}: {status.get('message')}",
              file=sys.stderr)
        return 1
    finally:
        await client.close()


async def _follow(client: ApiClient, mig: dict[str, Any]) -> dict[str, Any]:
    """Watch the migration to its end, drawing its progress."""
    ns, name = mig["metadata"]["namespace"], mig["metadata"]["name"]
    view = _Progress()
    try:
        while True:
            view.show(mig)
            if m.phase(mig) in m.TERMINAL:
                return mig
            try:
                async for event in client.watch(
                        m.path(ns), resource_version=mig["metadata"]["resourceVersion"],
                        fieldSelector=f"metadata.name={name}"):
                    if event["type"] in ("ADDED", "MODIFIED"):
                        mig = event["object"]
                        view.show(mig)
                        if m.phase(mig) in m.TERMINAL:
                            return mig
                    elif event["type"] == "DELETED":
                        raise SystemExit(f"error: {name} was deleted")
            except errors.Expired:
                pass
            mig = await client.get(m.path(ns, name))
    finally:
        view.close()


class _Progress:
    """Two bars (disks, memory) under a phase line, on a terminal or as plain lines."""

    def __init__(self) -> None:
        self.phase = ""
        self.disk: tqdm | None = None
        self.ram: tqdm | None = None

    def show(self, mig: dict[str, Any]) -> None:
        status = mig.get("status") or {}
        phase = m.phase(mig)
        if phase != self.phase:
            self.phase = phase
            where = f" {status.get('sourceNode')} -> {status.get('targetNode')}" \
                if status.get("targetNode") else ""
            tqdm.write(f"{phase}{where}", file=sys.stderr)
        p = status.get("progress") or {}
        if p.get("diskTotalBytes"):
            self.disk = self._bar(self.disk, "disks", int(p["diskTotalBytes"]),
                                  int(p.get("diskTransferredBytes") or 0))
        if p.get("ramTotalBytes"):
            # zero pages are not sent: what is left to send says how far it is
            total = int(p["ramTotalBytes"])
            self.ram = self._bar(self.ram, "memory", total,
                                 total - int(p.get("ramRemainingBytes") or 0))
            self.ram.set_postfix_str(
                f"dirty {int(p.get('dirtyPagesRate') or 0)} pages/s, expected downtime "
                f"{int(p.get('expectedDowntimeMs') or 0)} ms", refresh=True)

    @staticmethod
    def _bar(bar: tqdm | None, label: str, total: int, done: int) -> tqdm:
        if bar is None:
            bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                       file=sys.stderr, leave=True)
        bar.total = max(total, done)
        bar.n = done
        bar.refresh()
        return bar

    def close(self) -> None:
        for bar in (self.disk, self.ram):
            if bar is not None:
                bar.close()
