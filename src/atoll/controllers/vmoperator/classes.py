"""Default VirtualMachineClasses in every namespace, as a fresh vSphere Namespace offers.

``best-effort-*`` classes reserve nothing; ``guaranteed-*`` reserve their whole
size (requests = limits = hardware).  Missing ones are created; a class a user
changed is left as it is.  A namespace annotated
``vmoperator.atoll.dev/default-classes: "false"`` gets none (the tenancy issue
binds classes to namespaces explicitly).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from atoll.api import errors
from atoll.api.vmoperator import names as n
from atoll.client.informer import Informer
from atoll.client.rest import ApiClient
from atoll.client.workqueue import WorkQueue
from atoll.controllers.runner import run_workers

log = logging.getLogger(__name__)
OPT_OUT = "vmoperator.atoll.dev/default-classes"
SIZES = {"xsmall": (2, "2Gi"), "small": (2, "4Gi"), "medium": (2, "8Gi"), "large": (4, "16Gi"),
         "xlarge": (4, "32Gi")}


def default_classes(namespace: str) -> list[dict[str, Any]]:
    out = []
    for size, (cpus, memory) in SIZES.items():
        for policy in ("best-effort", "guaranteed"):
            spec: dict[str, Any] = {"hardware": {"cpus": cpus, "memory": memory},
                                    "description": f"{cpus} vCPUs, {memory} memory, "
                                                   f"{'fully reserved' if policy == 'guaranteed' else 'no reservation'}"}
            if policy == "guaranteed":
                amount = {"cpu": str(cpus), "memory": memory}
                spec["policies"] = {"resources": {"requests": amount, "limits": dict(amount)}}
            out.append({"apiVersion": n.API_VERSION, "kind": "VirtualMachineClass",
                        "metadata": {"name": f"{policy}-{size}", "namespace": namespace,
                                     "labels": {"vmoperator.atoll.dev/default-class": "true"}},
                        "spec": spec})
    return out


class DefaultClassesController:
    name = "vmclass-defaults"

    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self.namespaces = Informer(client, "", "v1", "namespaces")
        self.classes = Informer(client, n.GROUP, n.VERSION, "virtualmachineclasses",
                                label_selector="vmoperator.atoll.dev/default-class=true")
        self.queue: WorkQueue[str] = WorkQueue()
        self.namespaces.add_handler(lambda kind, ns, old: self.queue.add(ns["metadata"]["name"]))
        self.classes.add_handler(self._on_class)

    def _on_class(self, kind: str, klass: dict[str, Any], old: dict[str, Any] | None) -> None:
        if kind == "DELETED":
            self.queue.add(klass["metadata"]["namespace"])

    async def run(self) -> None:
        tasks = [asyncio.create_task(i.run()) for i in (self.namespaces, self.classes)]
        try:
            await asyncio.gather(self.namespaces.synced.wait(), self.classes.synced.wait())
            await run_workers(self.name, self.queue, self.reconcile, 1)
        finally:
            for t in tasks:
                t.cancel()

    async def reconcile(self, namespace: str) -> float | None:
        ns = self.namespaces.get(namespace)
        if ns is None or (ns.get("status") or {}).get("phase") == "Terminating" or \
                ns["metadata"].get("deletionTimestamp"):
            return None
        if (ns["metadata"].get("annotations") or {}).get(OPT_OUT) == "false":
            return None
        for klass in default_classes(namespace):
            if self.classes.get(f"{namespace}/{klass['metadata']['name']}") is not None:
                continue
            try:
                await self.client.create(
                    f"/apis/{n.GROUP}/{n.VERSION}/namespaces/{namespace}/virtualmachineclasses",
                    klass)
            except errors.AlreadyExists:
                pass
            except errors.Forbidden:
                return None  # the namespace is terminating
        return None
