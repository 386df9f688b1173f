"""VMs' claims follow their VM: a VirtualMachine is placed by the VM operator, not the pod
scheduler, so once it has a host this controller records that host on each of its unbound
``WaitForFirstConsumer`` claims (``volume.kubernetes.io/selected-node``), as the scheduler
does for a pod's.  The provisioner then makes the volume on that host."""

from __future__ import annotations

from typing import Iterable

from atoll.api import errors
from atoll.api.vmoperator.names import GROUP as VM_GROUP
from atoll.api.vmoperator.names import VERSION as VM_VERSION
from atoll.client.controller import DONE, Builder, Controller, Result
from atoll.controllers import capacity
from atoll.controllers.volume import binder
from atoll.controllers.volume.binder import Obj, annotations, meta, spec

USED_BY_VM = "claim-used-by-vm"


def _claim_keys(vm: Obj) -> Iterable[str]:
    namespace = meta(vm).get("namespace") or ""
    return [f"{namespace}/{name}" for name in binder.vm_claims(vm)]


class VMClaimsController(Controller):
    name = "vm-claims"

    def declare(self, b: Builder) -> None:
        self.vms = b.primary(VM_GROUP, VM_VERSION, "virtualmachines",
                             indexers={USED_BY_VM: _claim_keys})
        self.claims = b.watches("", "v1", "persistentvolumeclaims", self._vms_of_claim)
        self.classes = b.reads("storage.k8s.io", "v1", "storageclasses")

    def _vms_of_claim(self, kind: str, claim: Obj, old: Obj | None) -> Iterable[str]:
        return [f"{meta(vm).get('namespace')}/{meta(vm).get('name')}"
                for vm in self.vms.by_index(USED_BY_VM, binder.claim_key(claim))]

    async def reconcile(self, key: str) -> Result:
        vm = self.vms.get(key)
        if vm is None or meta(vm).get("deletionTimestamp"):
            return DONE
        host = capacity.vm_host(vm)
        if not host:
            return DONE
        for claim_key in _claim_keys(vm):
            claim = self.claims.get(claim_key)
            if claim is None or spec(claim).get("volumeName") or \
                    annotations(claim).get(binder.SELECTED_NODE):
                continue
            sc = self.classes.get(binder.claim_class(claim))
            if sc is None or sc.get("volumeBindingMode") != binder.WAIT_FOR_FIRST_CONSUMER:
                continue
            m = meta(claim)
            try:
                await self.client.patch(
                    f"/api/v1/namespaces/{m['namespace']}/persistentvolumeclaims/{m['name']}",
                    {"metadata": {"resourceVersion": m.get("resourceVersion", ""),
                                  "annotations": {binder.SELECTED_NODE: host}}})
            except errors.NotFound:
                continue
        return DONE
