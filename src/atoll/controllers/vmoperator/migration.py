"""Live migrations: from a VirtualMachineMigration to a VM running on another host.

The controller owns the decisions; the two agents own the QEMUs.  Phases, as KubeVirt's:

- ``Pending``: checked (the VM exists and runs, nothing else moves it, its disks can move),
  a target chosen by the same placement rules as a new VM (or ``spec.targetNode``, checked),
  a free slot taken (at most ``per_cluster`` active migrations, ``per_source`` leaving one
  host, as KubeVirt's defaults); the object is labelled with both hosts -> ``Scheduling``.
- ``Scheduling`` -> ``Scheduled``: the source agent publishes what the target must copy
  (address, accelerator, size).  ``PreparingTarget`` -> ``TargetReady``: the target agent starts
  an identical QEMU waiting for the state, with its disks exported over NBD.  ``Running``: the
  source mirrors its disks and sends the memory; when QEMU says completed it sets
  ``status.completed``.
- The controller then moves the VM's host label to the target (the target agent adopts the
  QEMU already running there, the source agent removes its paused copy) -> ``Succeeded``.

Every phase has a deadline; a host that stops being Ready fails the migration.  ``Failed`` is
what both agents clean up after: the source's QEMU keeps running, the target's goes.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from atoll.api import conditions as cond
from atoll.api.migration import names as m
from atoll.api.timestamps import parse_rfc3339, rfc3339
from atoll.api.vmoperator import names as n
from atoll.api.vmoperator import snapshots as vmsnap
from atoll.client import indexers as ix
from atoll.client.controller import DONE, Builder, Controller, Result, requeue_after
from atoll.client.events import NORMAL, WARNING
from atoll.client.status import patch_with_retry
from atoll.controllers import capacity
from atoll.controllers.capacity import Resources
from atoll.controllers.vmoperator import migrationpolicy, placement, vmaffinity
from atoll.controllers.vmoperator import volumes as vmvolumes
from atoll.controllers.volume import binder
from atoll.controllers.volume.binder import LOCAL_PROVISIONER

log = logging.getLogger(__name__)
BY_VM = "migration-vm"
ACTIVE_INDEX = "migration-active"

#: seconds each agent step may take before the migration fails
STEP_TIMEOUT = {m.SCHEDULING: 60.0, m.SCHEDULED: 60.0, m.PREPARING: 180.0,
                m.TARGET_READY: 60.0}
#: the memory copy: this much per GiB of guest memory, plus a fixed allowance (KubeVirt's
#: completionTimeoutPerGiB is 150 s)
RUNNING_PER_GIB, RUNNING_BASE = 150.0, 60.0


def by_vm(mig: dict[str, Any]) -> Iterable[str]:
    ns = mig["metadata"].get("namespace", "")
    return [f"{ns}/{(mig.get('spec') or {}).get('vmName', '')}"]


def by_activity(mig: dict[str, Any]) -> Iterable[str]:
    """Waiting migrations under "pending"; running ones under "cluster" and their source."""
    if m.phase(mig) == m.PENDING:
        return ["pending"]
    if m.phase(mig) not in m.ACTIVE:
        return []
    source = (mig.get("status") or {}).get("sourceNode") or ""
    return ["cluster", f"source/{source}"]


class MigrationController(Controller):
    name = "migration-controller"
    events_component = "migration-controller"
    default_workers = 2
    per_cluster = 5
    per_source = 2

    def declare(self, b: Builder) -> None:
        self.migrations = b.primary(m.GROUP, m.VERSION, m.PLURAL,
                                    indexers={BY_VM: by_vm, ACTIVE_INDEX: by_activity})
        self.vms = b.watches(n.GROUP, n.VERSION, "virtualmachines", self._of_vm,
                             indexers={capacity.VM_HOST: capacity.by_vm_host})
        self.nodes = b.watches("", "v1", "nodes", self._of_node)
        self.classes = b.reads(n.GROUP, n.VERSION, "virtualmachineclasses")
        self.pods = b.reads("", "v1", "pods", indexers={ix.NODE_NAME: ix.by_node_name})
        self.claims = b.reads("", "v1", "persistentvolumeclaims")
        self.policies = b.reads(m.POLICY_GROUP, m.VERSION, m.POLICIES)
        self.namespaces = b.reads("", "v1", "namespaces")
        self.volumes = b.reads("", "v1", "persistentvolumes")
        self.snapshots = b.reads(n.GROUP, vmsnap.VERSION, vmsnap.PLURAL)

    def _of_vm(self, kind: str, vm: dict[str, Any], old: dict[str, Any] | None) -> set[str]:
        key = f"{vm['metadata'].get('namespace', '')}/{vm['metadata'].get('name', '')}"
        return set(self.migrations.index_keys(BY_VM, key))

    def _of_node(self, kind: str, node: dict[str, Any], old: dict[str, Any] | None) -> set[str]:
        """A host changed: the active migrations (one may be waiting for room, or lose a host)."""
        return self.migrations.index_keys(ACTIVE_INDEX, "cluster") | \
            self.migrations.index_keys(ACTIVE_INDEX, "pending")

    # -- reconcile -------------------------------------------------------------------------------
    async def reconcile(self, key: str) -> Result:
        mig = self.migrations.get(key)
        if mig is None or mig["metadata"].get("deletionTimestamp"):
            return DONE
        phase = m.phase(mig)
        if phase in m.TERMINAL:
            return DONE
        if phase == m.PENDING:
            return await self._schedule(mig)
        status = mig.get("status") or {}
        if status.get("completed"):  # the guest runs on the target: only moving on is left
            return await self._switch_over(mig)
        for role in ("sourceNode", "targetNode"):
            if why := self._host_lost(status.get(role) or ""):
                return await self._fail(mig, "HostLost", f"{status.get(role)}: {why}")
        left = self._deadline(mig) - self.clock()
        if left <= 0:
            return await self._fail(mig, "Timeout", f"no progress in phase {phase} in time")
        return requeue_after(left)

    def _deadline(self, mig: dict[str, Any]) -> float:
        phase = m.phase(mig)
        since = self._phase_since(mig) or self.clock()
        if phase == m.RUNNING:
            vm = self.vms.get(f"{mig['metadata']['namespace']}/{mig['spec'].get('vmName')}")
            klass = self.classes.get(capacity.vm_class_key(vm)) if vm else None
            gib = placement.demand(klass).memory / 2 ** 30 if klass else 1.0
            per_gib = float(((mig.get("status") or {}).get("policy") or {}).get(
                "completionTimeoutPerGiB") or RUNNING_PER_GIB)
            return since + RUNNING_BASE + per_gib * max(gib, 0.25)
        return since + STEP_TIMEOUT.get(phase, 60.0)

    @staticmethod
    def _phase_since(mig: dict[str, Any]) -> float | None:
        stamps = (mig.get("status") or {}).get("phaseTransitionTimestamps") or []
        mine = [s for s in stamps if isinstance(s, dict) and s.get("phase") == m.phase(mig)]
        return parse_rfc3339(mine[-1].get("timestamp")) if mine else None

    def _host_lost(self, name: str) -> str:
        if not name:
            return ""
        node = self.nodes.get(name)
        if node is None:
            return "the host is gone"
        ready = cond.find((node.get("status") or {}).get("conditions"), "Ready")
        if ready is None or ready.get("status") != "True":
            return "the host is not Ready"
        return ""

    # -- Pending ---------------------------------------------------------------------------------
    async def _schedule(self, mig: dict[str, Any]) -> Result:
        ns, vm_name = mig["metadata"]["namespace"], (mig.get("spec") or {}).get("vmName", "")
        vm = self.vms.get(f"{ns}/{vm_name}")
        if vm is None:
            return await self._fail(mig, "VirtualMachineNotFound",
                                    f"VirtualMachine {vm_name} not found in {ns}")
        source = (vm["metadata"].get("labels") or {}).get(n.HOST_LABEL) or ""
        if (vm.get("status") or {}).get("powerState") != n.POWERED_ON or not source or \
                (vm.get("spec") or {}).get("powerState", n.POWERED_ON) != n.POWERED_ON:
            return await self._fail(mig, "NotRunning",
                                    f"VirtualMachine {vm_name} is not powered on on a host")
        if vm["metadata"].get("deletionTimestamp"):
            return await self._fail(mig, "NotRunning", f"VirtualMachine {vm_name} is deleted")
        for other in self.migrations.by_index(BY_VM, f"{ns}/{vm_name}"):
            if other["metadata"]["uid"] != mig["metadata"]["uid"] and \
                    m.phase(other) in m.ACTIVE and m.phase(other) != m.PENDING:
                return await self._fail(mig, "AlreadyMigrating",
                                        f"migration {other['metadata']['name']} moves it now")
        if taken := vmsnap.names_of_vm(self.snapshots.by_index("namespace", ns), vm_name):
            # internal qcow2 snapshots: the disk mirror copies what the guest sees, not them
            return await self._fail(mig, "HasSnapshots",
                                    f"its snapshots ({', '.join(taken)}) live inside its disks "
                                    f"on {source} and would be left behind: delete them first")
        if pinned := self._pinned_claims(vm, source):
            return await self._fail(mig, "VolumeNotMigratable",
                                    "its claims are on volumes that cannot leave their host: " +
                                    "; ".join(pinned))
        target, why = self._target(mig, vm, source)
        if target is None:
            return await self._fail(mig, "NoTarget", why)
        if busy := self._throttled(source):
            return await self._set(mig, {"conditions": cond.merge(
                (mig.get("status") or {}).get("conditions"),
                [cond.condition(m.CONCURRENCY_LIMIT, True, "Throttled", busy)])},
                requeue=5.0)
        mig = await self._label(mig, {m.SOURCE_LABEL: source, m.TARGET_LABEL: target,
                                      m.VM_LABEL: vm_name[:63]})
        if m.phase(mig) != m.PENDING:
            return DONE  # a reconcile of an older copy: the newer one already scheduled it
        self.events.record(self._vm_ref(vm), NORMAL, "MigrationScheduled",
                           f"{mig['metadata']['name']}: {source} -> {target}")
        policy = migrationpolicy.settings(migrationpolicy.select(
            self.policies.list(), vm, self.namespaces.get(ns)))
        return await self._advance(mig, m.SCHEDULING, sourceNode=source, targetNode=target,
                                   policy=policy,
                                   startTimestamp=rfc3339(self.clock()), conditions=cond.merge(
                                       (mig.get("status") or {}).get("conditions"),
                                       [cond.condition(m.CONCURRENCY_LIMIT, False,
                                                       "SlotAvailable")]))

    def _moving_volumes(self, vm: dict[str, Any], source: str) -> list[dict[str, Any]]:
        """The PVs of the VM's claims that live on ``source`` alone: Atoll's local volumes,
        which the disk mirror copies to the target and which then belong there."""
        ns = vm["metadata"]["namespace"]
        out = []
        for _, claim in vmvolumes.claim_volumes(vm):
            pvc = self.claims.get(f"{ns}/{claim}")
            pv = self.volumes.get((pvc or {}).get("spec", {}).get("volumeName") or "")
            if pv is not None and binder.affinity_node(pv) == source and \
                    ((pv.get("spec") or {}).get("csi") or {}).get("driver") == LOCAL_PROVISIONER:
                out.append(pv)
        return out

    def _pinned_claims(self, vm: dict[str, Any], source: str) -> list[str]:
        """The VM's claims whose volume is tied to a host and cannot follow the VM (a local or
        hostPath PV of someone else's, one whose affinity is not just the source host)."""
        ns = vm["metadata"]["namespace"]
        movable = {pv["metadata"]["name"] for pv in self._moving_volumes(vm, source)}
        out = []
        for _, claim in vmvolumes.claim_volumes(vm):
            pvc = self.claims.get(f"{ns}/{claim}")
            pv = self.volumes.get((pvc or {}).get("spec", {}).get("volumeName") or "")
            if pv is not None and (pv.get("spec") or {}).get("nodeAffinity") and \
                    pv["metadata"]["name"] not in movable:
                out.append(f"claim {claim} ({pv['metadata']['name']})")
        return out

    def _target(self, mig: dict[str, Any], vm: dict[str, Any],
                source: str) -> tuple[str | None, str]:
        klass = self.classes.get(capacity.vm_class_key(vm))
        want = placement.demand(klass) if klass else placement.Demand(1, 0)
        others = [node for node in self.nodes.list() if node["metadata"]["name"] != source]
        asked = (mig.get("spec") or {}).get("targetNode") or ""
        if asked:
            if asked == source:
                return None, f"the VM already runs on {asked}"
            others = [node for node in others if node["metadata"]["name"] == asked]
            if not others:
                return None, f"host {asked} not found"
        accel = (self.nodes.get(source) or {}).get("metadata", {}).get("labels", {}).get(
            n.ACCELERATOR_LABEL)
        same_accel = [node for node in others if not accel or (node["metadata"].get("labels")
                      or {}).get(n.ACCELERATOR_LABEL, accel) == accel]
        if others and not same_accel:
            return None, f"no other host runs guests with {accel}, as {source} does"
        decision = placement.place(want, same_accel, self._requested, rule=vmaffinity.rule(
            vm, self.vms.by_index(ix.NAMESPACE, vm["metadata"]["namespace"]), self.nodes.get))
        return decision.host, decision.message

    def _requested(self, host: str) -> Resources:
        return placement.requested_here(host, self.vms, self.classes, self.pods)

    def _throttled(self, source: str) -> str:
        active = len(self.migrations.index_keys(ACTIVE_INDEX, "cluster"))
        if active >= self.per_cluster:
            return f"{active} migrations run in the cluster (at most {self.per_cluster})"
        leaving = len(self.migrations.index_keys(ACTIVE_INDEX, f"source/{source}"))
        if leaving >= self.per_source:
            return f"{leaving} migrations leave {source} (at most {self.per_source})"
        return ""

    # -- switch-over -----------------------------------------------------------------------------
    async def _switch_over(self, mig: dict[str, Any]) -> Result:
        """QEMU finished on both sides: the VM now belongs to the target host."""
        status = mig["status"]
        ns, name = mig["metadata"]["namespace"], mig["spec"]["vmName"]
        target = status["targetNode"]
        vm = self.vms.get(f"{ns}/{name}")
        if vm is not None:  # its local volumes now live on the target (mutable nodeAffinity)
            for pv in self._moving_volumes(vm, status.get("sourceNode") or ""):
                await patch_with_retry(
                    self.client, f"/api/v1/persistentvolumes/{pv['metadata']['name']}", pv,
                    lambda cur: None if binder.affinity_node(cur) == target else
                    {"spec": {"nodeAffinity": binder.host_affinity(target)}})
        moved: list[bool] = []  # whether the last look at the VM found it still to move

        def move(current: dict[str, Any]) -> dict[str, Any] | None:
            moved[:] = [(current["metadata"].get("labels") or {}).get(n.HOST_LABEL) != target]
            return {"metadata": {"labels": {n.HOST_LABEL: target}}} if moved[0] else None
        if vm is not None:
            await patch_with_retry(self.client, n.vm_path(ns, name), vm, move)
        if vm is not None and moved[0]:  # once, by whoever moved it
            self.events.record(self._vm_ref(vm), NORMAL, "Migrated",
                               f"live-migrated from {status.get('sourceNode')} to {target} "
                               f"(downtime {status.get('downtime', '?')}, total "
                               f"{status.get('totalTime', '?')})")
        return await self._advance(mig, m.SUCCEEDED, endTimestamp=rfc3339(self.clock()))

    # -- writing ---------------------------------------------------------------------------------
    async def _fail(self, mig: dict[str, Any], reason: str, message: str) -> Result:
        log.info("migration %s/%s failed: %s: %s", mig["metadata"]["namespace"],
                 mig["metadata"]["name"], reason, message)
        self.events.record(dict(mig, apiVersion=m.API_VERSION, kind=m.KIND), WARNING,
                           "MigrationFailed", f"{reason}: {message}")
        return await self._advance(mig, m.FAILED, reason=reason, message=message,
                                   endTimestamp=rfc3339(self.clock()))

    async def _advance(self, mig: dict[str, Any], phase: str, **fields: Any) -> Result:
        stamps = list((mig.get("status") or {}).get("phaseTransitionTimestamps") or [])
        stamps.append({"phase": phase, "timestamp": rfc3339(self.clock())})
        return await self._set(mig, {"phase": phase, "phaseTransitionTimestamps": stamps,
                                     **fields})

    async def _set(self, mig: dict[str, Any], status: dict[str, Any],
                   requeue: float | None = None) -> Result:
        before = m.phase(mig)

        def change(current: dict[str, Any]) -> dict[str, Any] | None:
            if m.phase(current) != before:
                return None  # an agent moved it on meanwhile: look again
            if status.get("phase") == m.FAILED and (current.get("status") or {}).get("completed"):
                return None  # it completed meanwhile: the VM runs on the target
            return {"status": status}
        await patch_with_retry(self.client, m.path(mig["metadata"]["namespace"],
                                                   mig["metadata"]["name"]),
                               mig, change, subresource="status")
        return requeue_after(requeue) if requeue else DONE

    async def _label(self, mig: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
        return await patch_with_retry(self.client, m.path(mig["metadata"]["namespace"],
                                                   mig["metadata"]["name"]),
                               mig, lambda cur: {"metadata": {"labels": labels}}
                               if m.phase(cur) == m.PENDING else None)

    @staticmethod
    def _vm_ref(vm: dict[str, Any]) -> dict[str, Any]:
        return dict(vm, apiVersion=n.API_VERSION, kind="VirtualMachine")

