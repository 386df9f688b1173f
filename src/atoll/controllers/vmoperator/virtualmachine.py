"""The VirtualMachine controller: checks a VM's class and image, places it on a host.

Reconciles each VM from informer caches (VMs, classes, images, nodes, pods):
holds the finalizer; reports ``VirtualMachineClassReady`` and
``VirtualMachineImageReady`` with upstream's reasons and resolves the image
(by object name, or by display name when that is unambiguous) into
``status.image``; then, once both are ready, chooses a host (placement.py),
records it as the label the agents watch by, and reports
``VirtualMachineConditionPlacementReady``.  Everything after that (QEMU, power,
addresses) is the host agent's.  A VM being deleted that no host holds (never
placed, or its Node is gone) loses its finalizer here; otherwise its host's
agent stops it, removes its disks, then the finalizer.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from atoll.api import conditions as cond
from atoll.api.timestamps import parse_rfc3339
from atoll.api.vmoperator import names as n
from atoll.client import indexers as ix
from atoll.client.controller import DONE, Builder, Controller, Result, requeue_after
from atoll.client.events import NORMAL, WARNING
from atoll.client.status import patch_with_retry, with_finalizer, without_finalizer
from atoll.controllers import capacity
from atoll.controllers.capacity import Resources
from atoll.controllers.vmoperator import placement, vmaffinity
from atoll.controllers.vmoperator import volumes as vmvolumes

log = logging.getLogger(__name__)
IMAGE_KINDS = ("VirtualMachineImage", "ClusterVirtualMachineImage")
UNREACHABLE = "node.kubernetes.io/unreachable"
#: images by display name (``status.name``): "namespace/name" for namespaced ones
IMAGE_DISPLAY_NAME = "image-display-name"
#: VMs by the "namespace/name" of each claim they use
VM_CLAIM = "vm-claim"


def _by_claim(vm: dict[str, Any]) -> Iterable[str]:
    ns = (vm.get("metadata") or {}).get("namespace") or ""
    return [f"{ns}/{claim}" for _, claim in vmvolumes.claim_volumes(vm)]


def by_display_name(image: dict[str, Any]) -> Iterable[str]:
    name = (image.get("status") or {}).get("name")
    if not isinstance(name, str) or not name:
        return []
    ns = (image.get("metadata") or {}).get("namespace")
    return [f"{ns}/{name}" if ns else name]


def unreachable_since(node: dict[str, Any], now: float) -> float | None:
    """When the node lifecycle controller declared the host unreachable (its taint's
    timeAdded; ``now`` if it has none readable), or None while it is reachable."""
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("key") == UNREACHABLE and taint.get("effect") == "NoExecute":
            added = parse_rfc3339(taint.get("timeAdded"))
            return now if added is None else added
    return None


class VirtualMachineController(Controller):
    name = "virtualmachine-controller"
    events_component = "vmoperator-controller"
    default_workers = 2
    #: seconds a host stays unreachable before its protected VMs start elsewhere; its agent
    #: has powered them off by then (it fences itself when it cannot renew its Lease)
    ha_delay: float = 1.0

    def declare(self, b: Builder) -> None:
        self.vms = b.primary(n.GROUP, n.VERSION, "virtualmachines",
                             indexers={capacity.VM_HOST: capacity.by_vm_host,
                                       capacity.VM_CLASS: capacity.by_vm_class,
                                       VM_CLAIM: _by_claim})
        # a class or image changed: look again at the VMs still waiting for one (or for room,
        # which a changed reservation may have given back)
        self.classes = b.watches(n.GROUP, n.VERSION, "virtualmachineclasses", self._unplaced)
        images = {IMAGE_DISPLAY_NAME: by_display_name}
        self.images = b.watches(n.GROUP, n.VERSION, "virtualmachineimages", self._unplaced,
                                indexers=images)
        self.cluster_images = b.watches(n.GROUP, n.VERSION, "clustervirtualmachineimages",
                                        self._unplaced, indexers=images)
        self.nodes = b.watches("", "v1", "nodes", self._on_node)
        b.watches(n.GROUP, n.VERSION, "virtualmachines", self._affinity_peers)
        #: what pods request on a host (placement counts them as the scheduler does)
        self.pods = b.reads("", "v1", "pods", indexers={ix.NODE_NAME: ix.by_node_name})
        #: the VMs' claims: their bound volumes pin placement; status.volumes follows them
        self.claims = b.watches("", "v1", "persistentvolumeclaims", self._vms_of_claim)
        self.volumes = b.reads("", "v1", "persistentvolumes")

    def _unplaced(self, kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> set[str]:
        return self.vms.index_keys(capacity.VM_HOST, "")

    def _affinity_peers(self, kind: str, vm: dict[str, Any], old: dict[str, Any] | None
                        ) -> set[str]:
        """A VM placed, moved or gone may satisfy (or free) another's affinity terms: the
        unplaced VMs of its namespace look again."""
        ns = vm["metadata"].get("namespace", "")
        return {k for k in self.vms.index_keys(capacity.VM_HOST, "")
                if k.startswith(f"{ns}/")}

    def _affinity(self, vm: dict[str, Any]) -> vmaffinity.Rule | None:
        return vmaffinity.rule(vm, self.vms.by_index(ix.NAMESPACE, vm["metadata"]["namespace"]),
                               self.nodes.get)

    def _vms_of_claim(self, kind: str, claim: dict[str, Any],
                      old: dict[str, Any] | None) -> set[str]:
        ns = claim["metadata"].get("namespace", "")
        return set(self.vms.index_keys(VM_CLAIM, f"{ns}/{claim['metadata'].get('name', '')}"))

    def _on_node(self, kind: str, node: dict[str, Any], old: dict[str, Any] | None) -> set[str]:
        """Room may have appeared (or a host gone): retry unplaced VMs, and the VMs of a host
        that is deleted or unreachable (deletion, fail-over)."""
        name = node["metadata"]["name"]
        keys = self.vms.index_keys(capacity.VM_HOST, "")
        if kind == "DELETED" or unreachable_since(node, self.clock()) is not None:
            keys |= self.vms.index_keys(capacity.VM_HOST, name)
        return keys

    # -- reconcile -------------------------------------------------------------------------------
    async def reconcile(self, key: str) -> Result:
        vm = self.vms.get(key)
        if vm is None:
            return DONE
        vm = dict(vm, apiVersion=n.API_VERSION, kind="VirtualMachine")  # as Events name it
        ns, name = vm["metadata"]["namespace"], vm["metadata"]["name"]
        path = n.vm_path(ns, name)
        host = (vm["metadata"].get("labels") or {}).get(n.HOST_LABEL)
        if vm["metadata"].get("deletionTimestamp"):
            if not host or self.nodes.get(host) is None:
                await patch_with_retry(self.client, path, vm, without_finalizer(n.FINALIZER))
            return DONE
        vm = await patch_with_retry(self.client, path, vm, with_finalizer(n.FINALIZER))

        updates, status = [], {}
        klass = self.classes.get(f"{ns}/{vm['spec'].get('className', '')}") \
            if vm["spec"].get("className") else None
        if klass is None:
            updates.append(cond.condition(
                n.CLASS_READY, False, "NotFound",
                f"VirtualMachineClass {vm['spec'].get('className', '')!r} not found in {ns}"))
        else:
            updates.append(cond.condition(n.CLASS_READY, True, "True"))
            status["class"] = {"apiVersion": n.API_VERSION, "kind": "VirtualMachineClass",
                               "name": klass["metadata"]["name"]}
        image, image_problem = self._resolve_image(vm)
        if image is None:
            updates.append(cond.condition(n.IMAGE_READY, False, *image_problem))
        else:
            status["image"] = {"apiVersion": n.API_VERSION, "kind": image["kind"],
                               "name": image["metadata"]["name"]}
            updates.append(cond.condition(n.IMAGE_READY, True, "True"))

        if vmvolumes.claim_volumes(vm):
            status["volumes"] = vmvolumes.volume_status(vm, self.claims.get)
        decision: placement.Decision | None = None
        if not host and klass is not None and image is not None:
            decision = placement.place(placement.demand(klass), self.nodes.list(),
                                       self._requested,
                                       vmvolumes.bound_volumes(vm, self.claims.get,
                                                               self.volumes.get),
                                       self._affinity(vm))
            updates.append(cond.condition(n.PLACEMENT_READY, decision.host is not None,
                                          decision.reason, decision.message))
        elif host:
            updates.append(cond.condition(n.PLACEMENT_READY, True, placement.SATISFIED,
                                          f"placed on {host}"))
            if klass is not None and n.ha_protected(vm, klass):
                wait = await self._fail_over(vm, klass, host)
                if wait is not None:
                    return requeue_after(wait)

        def change(current: dict[str, Any]) -> dict[str, Any] | None:
            old = current.get("status") or {}
            merged = cond.merge(old.get("conditions"), updates)
            if all(old.get(k) == v for k, v in status.items()) and \
                    not cond.changed(old.get("conditions"), merged):
                return None
            return {"status": dict(status, conditions=merged)}

        before = vm.get("status") or {}
        vm = await patch_with_retry(self.client, path, vm, change, subresource="status")
        self._record_transitions(vm, before)
        if decision is not None and decision.host:
            # pinned to the version just read: a stale cache never places a VM twice
            await self.client.patch(path, {"metadata": {
                "labels": {n.HOST_LABEL: decision.host},
                "resourceVersion": vm["metadata"]["resourceVersion"]}})
            self.events.record(vm, NORMAL, "Placed", f"placed on {decision.host}")
        elif decision is not None:
            self.events.record(vm, WARNING, decision.reason, decision.message)
        return DONE

    async def _fail_over(self, vm: dict[str, Any], klass: dict[str, Any],
                         host: str) -> float | None:
        """vSphere HA: a protected, powered-on VM whose host is unreachable moves to the
        healthy host with the most unreserved capacity.  Returns seconds to look again, or
        None when there is nothing to do (or it moved: the label change brings it back)."""
        if (vm.get("spec") or {}).get("powerState", n.POWERED_ON) != n.POWERED_ON:
            return None
        node = self.nodes.get(host)
        if node is None:
            # a deleted host loses its VMs; a host that has not registered yet keeps them
            if not (vm.get("status") or {}).get("powerState"):
                return None
            since = 0.0
        else:
            since = unreachable_since(node, self.clock())
        if since is None:
            return None
        wait = since + self.ha_delay - self.clock()
        if wait > 0:
            return wait
        decision = placement.place(placement.demand(klass),
                                   [nd for nd in self.nodes.list()
                                    if nd["metadata"]["name"] != host], self._requested,
                                   vmvolumes.bound_volumes(vm, self.claims.get,
                                                           self.volumes.get),
                                   self._affinity(vm))
        if not decision.host:
            self.events.record(vm, WARNING, "HARestartFailed",
                               f"host {host} is unreachable and no other host can take the VM: "
                               f"{decision.message}")
            return 10.0
        # pinned to the version read: two controllers (or a stale cache) never move it twice
        await self.client.patch(n.vm_path(vm["metadata"]["namespace"], vm["metadata"]["name"]),
                                {"metadata": {
                                    "labels": {n.HOST_LABEL: decision.host},
                                    "annotations": {n.HA_FROM_ANNOTATION: host},
                                    "resourceVersion": vm["metadata"]["resourceVersion"]}})
        self.events.record(vm, WARNING, "HARestarted",
                           f"host {host} is unreachable: restarting the VM on {decision.host}")
        log.warning("vm %s/%s: host %s unreachable, restarting on %s", vm["metadata"]["namespace"],
                    vm["metadata"]["name"], host, decision.host)
        return None

    def _record_transitions(self, vm: dict[str, Any], before: dict[str, Any]) -> None:
        for ctype in (n.CLASS_READY, n.IMAGE_READY):
            now = cond.find((vm.get("status") or {}).get("conditions"), ctype)
            then = cond.find(before.get("conditions"), ctype)
            if now and now["status"] == "False" and (then is None or then["status"] != "False"):
                self.events.record(vm, WARNING, f"{ctype}{now['reason']}", now["message"])

    def _resolve_image(self, vm: dict[str, Any]) -> tuple[dict[str, Any] | None, tuple[str, str]]:
        """The image a VM names, and else (reason, message) for VirtualMachineImageReady."""
        spec, ns = vm.get("spec") or {}, vm["metadata"]["namespace"]
        ref = spec.get("image") or {}
        wanted = str(ref.get("name") or spec.get("imageName") or "")
        if not wanted:
            return None, ("NotFound", "spec.imageName is empty")
        kinds = (ref["kind"],) if ref.get("kind") in IMAGE_KINDS else IMAGE_KINDS
        found: list[dict[str, Any]] = []
        for kind in kinds:
            informer = self.images if kind == "VirtualMachineImage" else self.cluster_images
            key = f"{ns}/{wanted}" if kind == "VirtualMachineImage" else wanted
            if (obj := informer.get(key)) is not None:
                found = [dict(obj, kind=kind)]
                break
        if not found:  # by display name
            for kind in kinds:
                informer = self.images if kind == "VirtualMachineImage" else self.cluster_images
                key = f"{ns}/{wanted}" if kind == "VirtualMachineImage" else wanted
                found += [dict(obj, kind=kind)
                          for obj in informer.by_index(IMAGE_DISPLAY_NAME, key)]
        if not found:
            return None, ("NotFound", f"no VirtualMachineImage or ClusterVirtualMachineImage "
                                      f"named {wanted!r}")
        if len(found) > 1:
            names = ", ".join(sorted(o["metadata"]["name"] for o in found))
            return None, ("MultipleFound", f"display name {wanted!r} matches {names}")
        image = found[0]
        if not cond.is_true((image.get("status") or {}).get("conditions"), "Ready"):
            return None, ("NotReady", f"image {image['metadata']['name']} is not ready")
        return image, ("", "")

    def _requested(self, host: str) -> Resources:
        """What is taken on ``host``: its pods' requests and its placed VMs' reservations
        (their classes' requests), from the indexes by node and by host."""
        return placement.requested_here(host, self.vms, self.classes, self.pods)
