"""VirtualMachineReplicaSets: keep ``spec.replicas`` VirtualMachines made from the template.

The ReplicaSet controller's rules (``controllers/replicaset.py``), applied to VMs: replicas
are created as ``<set>-<random>`` with the set as controller owner, in growing batches (1,
2, 4, ...) so a broken template fails fast with a ``FailedCreate`` Event; matching orphans
are adopted and owned VMs that stop matching are released; surplus VMs go least advanced
first (not yet placed on a host, not powered on, not Ready, newest) — upstream's only
``deletePolicy`` is ``Random``, and any order is a random one to a user who asked for it.
Deleting the set deletes its VMs through the garbage collector (owner references).

Replicas are created in v1alpha6, the version the set is read in, so nothing the template
says is lost on the way; VMs are watched in the version the other VM controllers share.
Status: ``replicas``, ``fullyLabeledReplicas``, ``readyReplicas`` (the VM's ``Ready``
condition), ``availableReplicas`` (Ready for ``minReadySeconds``), ``observedGeneration``,
``selector`` (for the scale subresource) and a ``ReplicaFailure`` condition while creating
replicas fails.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Iterable
from typing import Any

from atoll.api import conditions as cond
from atoll.api import errors, selectors
from atoll.api.timestamps import parse_rfc3339
from atoll.api.vmoperator import names as n
from atoll.client import indexers as ix
from atoll.client.controller import DONE, Builder, Controller, Result, requeue_after
from atoll.client.events import NORMAL, WARNING
from atoll.client.informer import object_key
from atoll.controllers import podcontrol

log = logging.getLogger(__name__)

KIND = "VirtualMachineReplicaSet"
PLURAL = "virtualmachinereplicasets"
VERSION = "v1alpha6"
REPLICA_FAILURE = "ReplicaFailure"
#: at most this many VMs asked for in one reconcile (the rest in the next)
BURST = 100


def sets_path(namespace: str, name: str = "") -> str:
    base = f"/apis/{n.GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    return f"{base}/{name}" if name else base


def vm_from_template(rs: dict[str, Any]) -> dict[str, Any]:
    """One replica: the template's labels, annotations and spec, owned by the set."""
    template = (rs.get("spec") or {}).get("template") or {}
    meta = template.get("metadata") or {}
    vm_meta: dict[str, Any] = {"generateName": f"{rs['metadata']['name']}-",
                               "labels": dict(meta.get("labels") or {}),
                               "ownerReferences": [podcontrol.owner_reference(rs)]}
    if meta.get("annotations"):
        vm_meta["annotations"] = dict(meta["annotations"])
    return {"apiVersion": f"{n.GROUP}/{VERSION}", "kind": "VirtualMachine",
            "metadata": vm_meta, "spec": copy.deepcopy(template.get("spec") or {})}


def deletion_rank(vm: dict[str, Any]) -> tuple[int, int, int, float]:
    """Least advanced first: not placed on a host, not powered on, not Ready, newest."""
    placed = bool((vm["metadata"].get("labels") or {}).get(n.HOST_LABEL))
    on = (vm.get("status") or {}).get("powerState") == n.POWERED_ON
    created = parse_rfc3339(vm["metadata"].get("creationTimestamp")) or 0.0
    return (int(placed), int(on), int(podcontrol.is_ready(vm)), -created)


class VirtualMachineReplicaSetController(Controller):
    """Sets (primary); VMs watched for their owner's expectations and, for orphans, the sets
    of their namespace whose selector matches (adoption)."""

    name = "vm-replicaset"
    events_component = "vm-replicaset-controller"
    default_workers = 2
    backoff = (0.2, 30.0)

    def declare(self, b: Builder) -> None:
        self.expectations = podcontrol.Expectations()
        self.sets = b.primary(n.GROUP, VERSION, PLURAL)
        self._owned = podcontrol.observe_pods(self.expectations, KIND)
        self.vms = b.watches(n.GROUP, n.VERSION, "virtualmachines", self._map_vm,
                             indexers={podcontrol.ORPHANS: podcontrol.by_orphan_namespace})

    def _map_vm(self, kind: str, vm: dict[str, Any], old: dict[str, Any] | None
                ) -> Iterable[str]:
        keys = set(self._owned(kind, vm, old))
        if podcontrol.controller_ref(vm) is None and kind != "DELETED":
            labels = vm["metadata"].get("labels")
            for rs in self.sets.by_index(ix.NAMESPACE, vm["metadata"].get("namespace", "")):
                try:
                    if selector_of(rs).matches(labels):
                        keys.add(object_key(rs))
                except errors.ApiError:
                    continue
        return keys

    async def reconcile(self, key: str) -> Result:
        rs = self.sets.get(key)
        if rs is None:
            self.expectations.forget(key)
            return DONE
        try:
            selector = selector_of(rs)
        except errors.ApiError:
            return DONE  # the API server refuses such selectors; an old object: leave it
        vms = await podcontrol.claim(self.client, self.vms, rs, selector, lambda v: n.vm_path(
            v["metadata"]["namespace"], v["metadata"]["name"]))
        active = [v for v in vms if not v["metadata"].get("deletionTimestamp")]
        wanted = int((rs.get("spec") or {}).get("replicas", 1) or 0)
        failure = None
        if not rs["metadata"].get("deletionTimestamp") and self.expectations.satisfied(key):
            diff = len(active) - wanted
            if diff < 0:
                failure = await self._create(rs, key, -diff)
            elif diff > 0:
                doomed = sorted(active, key=deletion_rank)[:diff]
                self.expectations.expect(key, dels={object_key(v) for v in doomed})
                await asyncio.gather(*(self._delete(rs, v) for v in doomed))
        return await self._update_status(rs, active, selector, failure)

    async def _create(self, rs: dict[str, Any], key: str, count: int) -> str | None:
        """Ask for ``count`` replicas; the first error's message if some could not be made."""
        count = min(count, BURST)
        self.expectations.expect(key, adds=count)
        path = f"/apis/{n.GROUP}/{VERSION}/namespaces/{rs['metadata']['namespace']}/" \
               "virtualmachines"
        batch, done = 1, 0
        while done < count:
            size = min(batch, count - done)
            results = await asyncio.gather(*(self.client.create(path, vm_from_template(rs))
                                             for _ in range(size)), return_exceptions=True)
            done += size
            for r in results:
                if isinstance(r, dict):
                    self.events.record(rs, NORMAL, "SuccessfulCreate",
                                       f"Created VirtualMachine: {r['metadata']['name']}")
            failures = [r for r in results if isinstance(r, BaseException)]
            if failures:
                for _ in range(count - done + len(failures)):
                    self.expectations.created(key)  # those will never be observed
                if not isinstance(failures[0], errors.ApiError):
                    raise failures[0]
                message = f"Error creating: {failures[0]}"
                self.events.record(rs, WARNING, "FailedCreate", message)
                log.warning("vm replicaset %s: %s", key, message)
                return message
            batch *= 2
        return None

    async def _delete(self, rs: dict[str, Any], vm: dict[str, Any]) -> None:
        meta = vm["metadata"]
        try:
            await self.client.delete(n.vm_path(meta["namespace"], meta["name"]), {
                "apiVersion": "v1", "kind": "DeleteOptions",
                "preconditions": {"uid": meta["uid"]}})
        except (errors.NotFound, errors.Conflict):
            return
        self.events.record(rs, NORMAL, "SuccessfulDelete",
                           f"Deleted VirtualMachine: {meta['name']}")

    async def _update_status(self, rs: dict[str, Any], active: list[dict[str, Any]],
                             selector: selectors.LabelSelector, failure: str | None) -> Result:
        spec = rs.get("spec") or {}
        min_ready = int(spec.get("minReadySeconds") or 0)
        now = self.clock()
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        ready = [v for v in active if podcontrol.is_ready(v)]
        available = [v for v in ready if podcontrol.is_available(v, min_ready, now)]
        current = rs.get("status") or {}
        status: dict[str, Any] = {
            "replicas": len(active),
            "fullyLabeledReplicas": sum(1 for v in active if all(
                (v["metadata"].get("labels") or {}).get(k) == val for k, val in labels.items())),
            "readyReplicas": len(ready),
            "availableReplicas": len(available),
            "observedGeneration": rs["metadata"].get("generation", 1),
            "selector": str(selector),
        }
        failed = cond.find(current.get("conditions"), REPLICA_FAILURE)
        if failure is not None:
            status["conditions"] = cond.merge(current.get("conditions"), [cond.condition(
                REPLICA_FAILURE, True, "FailedCreate", failure)])
        elif failed is not None and len(active) >= int(spec.get("replicas", 1) or 0):
            status["conditions"] = [c for c in current.get("conditions") or []
                                    if c.get("type") != REPLICA_FAILURE] or None
        if any(current.get(k) != v for k, v in status.items()):
            ns, name = rs["metadata"]["namespace"], rs["metadata"]["name"]
            try:
                await self.client.patch(f"{sets_path(ns, name)}/status", {"status": status})
            except errors.NotFound:
                return DONE
        if failure is not None:
            return requeue_after(10.0)  # quota or a class may appear: try again
        if len(available) < len(ready) and min_ready:
            return requeue_after(min_ready / 2)  # VMs become available with time alone
        return DONE


def selector_of(rs: dict[str, Any]) -> selectors.LabelSelector:
    return selectors.label_selector_from_dict((rs.get("spec") or {}).get("selector"))
