"""Default VirtualMachineClasses in every namespace, as a fresh vSphere Namespace offers.

``best-effort-*`` classes reserve nothing; ``guaranteed-*`` reserve their whole
size (requests = limits = hardware).  Missing ones are created; a class a user
changed is left as it is.  A namespace annotated
``vmoperator.atoll.dev/default-classes: "false"`` gets none (the tenancy issue
binds classes to namespaces explicitly).
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from atoll.api import errors
from atoll.api.vmoperator import names as n
from atoll.client.controller import DONE, Builder, Controller, Result

log = logging.getLogger(__name__)
OPT_OUT = "vmoperator.atoll.dev/default-classes"
DEFAULT_LABEL = "vmoperator.atoll.dev/default-class"
SIZES = {"xsmall": (2, "2Gi"), "small": (2, "4Gi"), "medium": (2, "8Gi"), "large": (4, "16Gi"),
         "xlarge": (4, "32Gi")}


def default_classes(namespace: str) -> list[dict[str, Any]]:
    out = []
    for size, (cpus, memory) in SIZES.items():
        for policy in ("best-effort", "guaranteed"):
            reserve = "fully reserved" if policy == "guaranteed" else "no reservation"
            spec: dict[str, Any] = {"hardware": {"cpus": cpus, "memory": memory},
                                    "description": f"{cpus} vCPUs, {memory} memory, {reserve}"}
            if policy == "guaranteed":
                amount = {"cpu": str(cpus), "memory": memory}
                spec["policies"] = {"resources": {"requests": amount, "limits": dict(amount)}}
            out.append({"apiVersion": n.API_VERSION, "kind": "VirtualMachineClass",
                        "metadata": {"name": f"{policy}-{size}", "namespace": namespace,
                                     "labels": {DEFAULT_LABEL: "true"}},
                        "spec": spec})
    return out


class DefaultClassesController(Controller):
    name = "vmclass-defaults"

    def declare(self, b: Builder) -> None:
        self.namespaces = b.primary("", "v1", "namespaces")
        # the process's one informer on classes; a default class deleted: its namespace
        # gets it back (a class of that name, default or not, is never created over)
        self.classes = b.watches(n.GROUP, n.VERSION, "virtualmachineclasses", self._on_class)

    @staticmethod
    def _on_class(kind: str, klass: dict[str, Any], old: dict[str, Any] | None) -> Iterable[str]:
        meta = klass["metadata"]
        if kind != "DELETED" or (meta.get("labels") or {}).get(DEFAULT_LABEL) != "true":
            return []
        return [meta["namespace"]]

    async def reconcile(self, namespace: str) -> Result:
        ns = self.namespaces.get(namespace)
        if ns is None or (ns.get("status") or {}).get("phase") == "Terminating" or \
                ns["metadata"].get("deletionTimestamp"):
            return DONE
        if (ns["metadata"].get("annotations") or {}).get(OPT_OUT) == "false":
            return DONE
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
                return DONE  # the namespace is terminating
        return DONE
