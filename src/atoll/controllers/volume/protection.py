"""Storage object in-use protection: the ``kubernetes.io/pvc-protection`` and
``kubernetes.io/pv-protection`` finalizers (admission adds them to every new object).

A claim being deleted keeps its finalizer while a pod that is scheduled and not finished
uses it (kubelet starts no new pod on a claim being deleted, so unscheduled ones do not
count) or while a VirtualMachine names it in ``spec.volumes[].persistentVolumeClaim``; then
it is removed and the claim goes.  A volume being deleted keeps its finalizer while Bound.
"""

from __future__ import annotations

from typing import Iterable

from atoll.api.vmoperator.names import GROUP as VM_GROUP
from atoll.api.vmoperator.names import VERSION as VM_VERSION
from atoll.client.controller import DONE, Builder, Controller, Result
from atoll.client.status import patch_with_retry, without_finalizer
from atoll.controllers.volume import binder
from atoll.controllers.volume.binder import PV_PROTECTION, PVC_PROTECTION, Obj, meta

USES_CLAIM = "uses-claim"


def _claim_keys(obj: Obj) -> Iterable[str]:
    namespace = meta(obj).get("namespace") or ""
    return [f"{namespace}/{name}" for name in binder.pod_claims(obj)]


def pod_blocks(pod: Obj) -> bool:
    """A pod that holds its claims: scheduled, and neither Succeeded nor Failed."""
    return bool(binder.spec(pod).get("nodeName")) and \
        (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


class StorageProtectionController(Controller):
    name = "storage-protection"
    events_component = "pvc-protection-controller"

    def declare(self, b: Builder) -> None:
        self.claims = b.primary("", "v1", "persistentvolumeclaims")
        self.volumes = b.watches("", "v1", "persistentvolumes", lambda k, o, old: ["pv:" +
                                                                                  meta(o)["name"]])
        self.pods = b.watches("", "v1", "pods", self._deleting_claims,
                              indexers={USES_CLAIM: _claim_keys})
        self.vms = b.watches(VM_GROUP, VM_VERSION, "virtualmachines", self._deleting_claims,
                             indexers={USES_CLAIM: _claim_keys})

    def _deleting_claims(self, kind: str, obj: Obj, old: Obj | None) -> Iterable[str]:
        keys = set(_claim_keys(obj)) | set(_claim_keys(old or {}))
        return [k for k in keys if (c := self.claims.get(k)) is not None
                and meta(c).get("deletionTimestamp")]

    def in_use(self, key: str) -> bool:
        if any(pod_blocks(p) for p in self.pods.by_index(USES_CLAIM, key)):
            return True
        return bool(self.vms.by_index(USES_CLAIM, key))  # a VM holds its disks until gone

    async def in_use_live(self, key: str) -> bool:
        """The caches may not show a pod created a moment ago: ask the API, as upstream's
        controller does before letting a claim go."""
        namespace, _ = key.split("/", 1)
        pods = await self.client.get(f"/api/v1/namespaces/{namespace}/pods")
        return any(pod_blocks(p) and key in _claim_keys(p) for p in pods.get("items") or [])

    async def reconcile(self, key: str) -> Result:
        if key.startswith("pv:"):
            volume = self.volumes.get(key[3:])
            if volume is None or not meta(volume).get("deletionTimestamp") or \
                    PV_PROTECTION not in (meta(volume).get("finalizers") or []) or \
                    (volume.get("status") or {}).get("phase") == "Bound":
                return DONE
            await patch_with_retry(self.client, f"/api/v1/persistentvolumes/{key[3:]}", volume,
                                   without_finalizer(PV_PROTECTION))
            return DONE
        claim = self.claims.get(key)
        if claim is None or not meta(claim).get("deletionTimestamp") or \
                PVC_PROTECTION not in (meta(claim).get("finalizers") or []) or \
                self.in_use(key) or await self.in_use_live(key):
            return DONE
        namespace, name = key.split("/", 1)
        await patch_with_retry(self.client,
                               f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}",
                               claim, without_finalizer(PVC_PROTECTION))
        return DONE
