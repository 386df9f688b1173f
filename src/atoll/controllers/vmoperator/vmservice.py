"""VirtualMachineService: a Service and its Endpoints for the VMs its selector picks.

As vm-operator realizes it: a selectorless core/v1 Service of the same name
(owned by the VirtualMachineService, so the garbage collector removes it),
and an Endpoints object listing the matching VMs' primary addresses, ready ones
under ``addresses`` and the others under ``notReadyAddresses``.  A change to a
VM enqueues the services of its namespace whose selector picks it (before or
after the change), so Endpoints follow VMs as they come, go, and change
readiness.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from atoll.api import conditions as cond
from atoll.api import errors
from atoll.api.vmoperator import names as n
from atoll.client import indexers as ix
from atoll.client.controller import DONE, Builder, Controller, Result
from atoll.client.informer import object_key

log = logging.getLogger(__name__)
MANAGED_BY = "vmoperator.atoll.dev/virtualmachineservice"


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def service_for(vms: dict[str, Any]) -> dict[str, Any]:
    meta, spec = vms["metadata"], vms.get("spec") or {}
    ports = [{"name": p.get("name", ""), "protocol": p.get("protocol") or "TCP",
              "port": p["port"], "targetPort": p.get("targetPort") or p["port"]}
             for p in spec.get("ports") or [] if isinstance(p.get("port"), int)]
    svc_spec: dict[str, Any] = {"type": spec.get("type") or "ClusterIP", "ports": ports}
    if spec.get("clusterIp") == "None":
        svc_spec["clusterIP"] = "None"
    if spec.get("loadBalancerSourceRanges"):
        svc_spec["loadBalancerSourceRanges"] = spec["loadBalancerSourceRanges"]
    if spec.get("loadBalancerIP"):
        svc_spec["loadBalancerIP"] = spec["loadBalancerIP"]
    if svc_spec["type"] == "ExternalName":
        svc_spec["externalName"] = spec.get("externalName") or ""
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                         "labels": {MANAGED_BY: meta["name"]},
                         "ownerReferences": [_owner(vms)]},
            "spec": svc_spec}


def endpoints_for(vms: dict[str, Any], vm_list: list[dict[str, Any]]) -> dict[str, Any]:
    meta, spec = vms["metadata"], vms.get("spec") or {}
    selector = spec.get("selector") or {}
    ready, not_ready = [], []
    for vm in sorted(vm_list, key=lambda v: v["metadata"]["name"]):
        if vm["metadata"].get("namespace") != meta["namespace"] or \
                not matches(selector, vm["metadata"].get("labels") or {}):
            continue
        ip = ((vm.get("status") or {}).get("network") or {}).get("primaryIP4")
        if not ip:
            continue
        address = {"ip": ip, "targetRef": {"apiVersion": n.API_VERSION, "kind": "VirtualMachine",
                                           "namespace": meta["namespace"],
                                           "name": vm["metadata"]["name"],
                                           "uid": vm["metadata"].get("uid", "")}}
        if (vm.get("status") or {}).get("nodeName"):
            address["nodeName"] = vm["status"]["nodeName"]
        ok = cond.is_true((vm.get("status") or {}).get("conditions"), n.READY)
        (ready if ok else not_ready).append(address)
    ports = [{"name": p.get("name", ""), "protocol": p.get("protocol") or "TCP",
              "port": p.get("targetPort") or p["port"]}
             for p in spec.get("ports") or [] if isinstance(p.get("port"), int)]
    subset: dict[str, Any] = {"ports": ports}
    if ready:
        subset["addresses"] = ready
    if not_ready:
        subset["notReadyAddresses"] = not_ready
    return {"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                         "labels": {MANAGED_BY: meta["name"]},
                         "ownerReferences": [_owner(vms)]},
            "subsets": [subset] if ready or not_ready else []}


def _owner(vms: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": n.API_VERSION, "kind": "VirtualMachineService",
            "name": vms["metadata"]["name"], "uid": vms["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": True}


class VirtualMachineServiceController(Controller):
    name = "vmservice-controller"
    default_workers = 2

    def declare(self, b: Builder) -> None:
        self.services = b.primary(n.GROUP, n.VERSION, "virtualmachineservices")
        self.vms = b.watches(n.GROUP, n.VERSION, "virtualmachines", self._on_vm)

    def _on_vm(self, kind: str, vm: dict[str, Any], old: dict[str, Any] | None) -> Iterable[str]:
        """Every service of the VM's namespace whose selector picks it (before or after)."""
        labels = [vm["metadata"].get("labels") or {}]
        if old is not None:
            labels.append(old["metadata"].get("labels") or {})
        ns = vm["metadata"].get("namespace") or ""
        return [object_key(svc) for svc in self.services.by_index(ix.NAMESPACE, ns)
                if any(matches((svc.get("spec") or {}).get("selector") or {}, lb)
                       for lb in labels)]

    async def reconcile(self, key: str) -> Result:
        vms = self.services.get(key)
        if vms is None or vms["metadata"].get("deletionTimestamp"):
            return DONE  # the garbage collector removes what it owned
        ns = vms["metadata"]["namespace"]
        await self._apply(f"/api/v1/namespaces/{ns}/services", service_for(vms))
        await self._apply(f"/api/v1/namespaces/{ns}/endpoints",
                          endpoints_for(vms, self.vms.by_index(ix.NAMESPACE, ns)))
        return DONE

    async def _apply(self, collection: str, desired: dict[str, Any]) -> None:
        path = f"{collection}/{desired['metadata']['name']}"
        try:
            current = await self.client.get(path)
        except errors.NotFound:
            await self.client.create(collection, desired)
            return
        if desired["kind"] == "Service":
            patch = {"metadata": {"labels": desired["metadata"]["labels"],
                                  "ownerReferences": desired["metadata"]["ownerReferences"]},
                     "spec": {k: v for k, v in desired["spec"].items() if k != "clusterIP"}}
            if any(current.get("spec", {}).get(k) != v for k, v in patch["spec"].items()):
                await self.client.patch(path, patch)
        elif current.get("subsets") != desired["subsets"]:
            await self.client.patch(path, {"subsets": desired["subsets"],
                                           "metadata": {"labels": desired["metadata"]["labels"]}})
