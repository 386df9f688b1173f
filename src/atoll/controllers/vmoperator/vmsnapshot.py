"""VirtualMachineSnapshot: the controller's half (the agent of the VM's host takes them).

For each snapshot it keeps, from informer caches:

- its metadata: the finalizer, upstream's ``snapshot.vmoperator.vmware.com/vm-name`` label,
  the VM's host label (the agent there list+watches its snapshots by it) and an owner
  reference to the VM, so the garbage collector deletes a deleted VM's snapshots;
- ``VirtualMachineSnapshotReady``, following ``…Created`` (written by the agent), and
  ``status.children`` (the snapshots whose parent it is: the tree's other direction).

Per VM (keys ``vm:<ns>/<name>``): ``status.rootSnapshots``; ``status.currentSnapshot``
moved to the parent when it is deleted (the agent sets it when it takes one or reverts);
the children of a deleted snapshot re-parented to its parent (the consolidation's tree
half; the disks' half is the agent's ``snapshot-delete``); and reverts: a VM whose
``spec.currentSnapshotName`` names a snapshot gets that snapshot's power state in
``spec.powerState``, and once the agent's ``VirtualMachineSnapshotRevertSucceeded`` answers
this generation, ``currentSnapshotName`` is cleared (upstream: cleared on success).
A snapshot whose VM is gone has nothing left on any disk: its finalizer goes.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from atoll.api import conditions as cond
from atoll.api import errors
from atoll.api.vmoperator import names as n
from atoll.api.vmoperator import snapshots as s
from atoll.api.vmoperator.conversion import in_version
from atoll.client import indexers as ix
from atoll.client.controller import DONE, Builder, Controller, Result
from atoll.client.events import WARNING
from atoll.client.status import patch_with_retry, without_finalizer

log = logging.getLogger(__name__)
VM_KEY = "vm:"


def parent_of(snap: dict[str, Any]) -> str:
    return str((snap["metadata"].get("annotations") or {}).get(s.PARENT_ANNOTATION) or "")


def live(snaps: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [x for x in snaps if not x["metadata"].get("deletionTimestamp")]


def ready_condition(snap: dict[str, Any]) -> dict[str, Any]:
    """Ready follows Created (no CSI volumes here to wait for)."""
    created = cond.find((snap.get("status") or {}).get("conditions"), s.CREATED)
    gen = snap["metadata"].get("generation")
    if created is None:
        return cond.condition(s.READY, False, s.WAITING_FOR_CREATION, "", gen)
    if created.get("status") == "True":
        return cond.condition(s.READY, True, "Ready", "", gen)
    return cond.condition(s.READY, False, str(created.get("reason") or s.WAITING_FOR_CREATION),
                          str(created.get("message") or ""), gen)


def revert_power(snap: dict[str, Any]) -> str:
    """The power state a revert to ``snap`` leaves the VM in (upstream: a snapshot without
    memory reverts to PoweredOff)."""
    return str((snap.get("status") or {}).get("powerState") or n.POWERED_OFF)


class VirtualMachineSnapshotController(Controller):
    name = "vmsnapshot-controller"
    default_workers = 2

    def declare(self, b: Builder) -> None:
        self.snapshots = b.primary(n.GROUP, s.VERSION, s.PLURAL)
        b.watches(n.GROUP, s.VERSION, s.PLURAL, self._vm_of)
        # the VMs' watch the other controllers hold (v1alpha3), read as v1alpha6 (``_vm``)
        self.vms = b.watches(n.GROUP, n.VERSION, "virtualmachines", self._on_vm)

    def _vm_of(self, kind: str, snap: dict[str, Any], old: dict[str, Any] | None
               ) -> Iterable[str]:
        ns = snap["metadata"].get("namespace", "")
        return {f"{VM_KEY}{ns}/{s.vm_name(x)}" for x in (snap, old) if x and s.vm_name(x)}

    def _on_vm(self, kind: str, vm: dict[str, Any], old: dict[str, Any] | None
               ) -> Iterable[str]:
        ns, name = vm["metadata"].get("namespace", ""), vm["metadata"].get("name", "")
        return [f"{VM_KEY}{ns}/{name}"] + [f"{ns}/{x['metadata']['name']}"
                                            for x in self._of(ns, name)]

    def _vm(self, key: str) -> dict[str, Any] | None:
        """The VM in v1alpha6, which has the snapshot fields."""
        vm = self.vms.get(key)
        return None if vm is None else in_version(vm, "VirtualMachine", n.VERSION, s.VERSION)

    def _of(self, ns: str, vm_name: str) -> list[dict[str, Any]]:
        return [x for x in self.snapshots.by_index(ix.NAMESPACE, ns) if s.vm_name(x) == vm_name]

    async def reconcile(self, key: str) -> Result:
        if key.startswith(VM_KEY):
            return await self._reconcile_vm(key[len(VM_KEY):])
        snap = self.snapshots.get(key)
        if snap is None:
            return DONE
        ns, vm_name = snap["metadata"]["namespace"], s.vm_name(snap)
        vm = self._vm(f"{ns}/{vm_name}") if vm_name else None
        if snap["metadata"].get("deletionTimestamp"):
            taken = bool((snap.get("status") or {}).get("uniqueID"))
            if vm is None or not taken or not (vm["metadata"].get("labels") or {}).get(
                    n.HOST_LABEL):
                await self._patch(snap, without_finalizer(s.FINALIZER))  # nothing on a disk
            return DONE
        if vm is None or vm["metadata"].get("deletionTimestamp"):
            why = "spec.vmName is required" if not vm_name else \
                f"VirtualMachine {vm_name} not found in {ns}" if vm is None else \
                f"VirtualMachine {vm_name} is being deleted"
            bad = cond.condition(s.CREATED, False, "VirtualMachineNotFound", why,
                                 snap["metadata"].get("generation"))
            await self._status(snap, {}, [bad])
            return DONE
        snap = await self._patch(snap, self._metadata_change(vm))
        children = sorted(x["metadata"]["name"] for x in live(self._of(ns, vm_name))
                          if parent_of(x) == snap["metadata"]["name"])
        await self._status(snap, {"children": [{"type": "Managed", "name": c}
                                                for c in children] or None},
                           [ready_condition(snap)])
        return DONE

    def _metadata_change(self, vm: dict[str, Any]) -> Any:
        host = (vm["metadata"].get("labels") or {}).get(n.HOST_LABEL) or ""
        owner = {"apiVersion": s.API_VERSION, "kind": "VirtualMachine",
                 "name": vm["metadata"]["name"], "uid": vm["metadata"]["uid"]}

        def change(current: dict[str, Any]) -> dict[str, Any] | None:
            meta = current["metadata"]
            labels = meta.get("labels") or {}
            want = {s.VM_NAME_LABEL: vm["metadata"]["name"][:63]}
            if host:
                want[n.HOST_LABEL] = host
            out: dict[str, Any] = {}
            if any(labels.get(k) != v for k, v in want.items()):
                out["labels"] = want
            finalizers = meta.get("finalizers") or []
            if s.FINALIZER not in finalizers:
                out["finalizers"] = finalizers + [s.FINALIZER]
            owners = meta.get("ownerReferences") or []
            if not any(o.get("uid") == owner["uid"] for o in owners):
                out["ownerReferences"] = [o for o in owners if o.get("kind") != "VirtualMachine"
                                          ] + [owner]
            return {"metadata": out} if out else None
        return change

    # -- per VM: the tree and reverts ------------------------------------------------------------
    async def _reconcile_vm(self, key: str) -> Result:
        ns, _, name = key.partition("/")
        snaps = self._of(ns, name)
        by_name = {x["metadata"]["name"]: x for x in snaps}
        # consolidation, tree half: a deleted snapshot's children hang from its parent
        for gone in (x for x in snaps if x["metadata"].get("deletionTimestamp")):
            for child in live(snaps):
                if parent_of(child) == gone["metadata"]["name"]:
                    await self._patch(child, _reparent(gone["metadata"]["name"],
                                                       parent_of(gone)))
        vm = self._vm(key)
        if vm is None or vm["metadata"].get("deletionTimestamp"):
            return DONE
        alive = {x["metadata"]["name"] for x in live(snaps)}
        status = vm.get("status") or {}
        fields: dict[str, Any] = {}
        roots = [s.ref(x) for x in sorted(alive) if _root(by_name[x], alive, by_name)]
        if (status.get("rootSnapshots") or []) != roots:
            fields["rootSnapshots"] = roots or None
        current = str((status.get("currentSnapshot") or {}).get("name") or "")
        if current and current not in alive:
            parent = _nearest_live(current, by_name, alive)
            fields["currentSnapshot"] = s.ref(parent) if parent else None
        return await self._revert(vm, by_name, fields)

    async def _revert(self, vm: dict[str, Any], by_name: dict[str, dict[str, Any]],
                      fields: dict[str, Any]) -> Result:
        spec, meta = vm.get("spec") or {}, vm["metadata"]
        target = str(spec.get("currentSnapshotName") or "")
        updates: list[dict[str, Any]] = []
        path = s.vm_path(meta["namespace"], meta["name"])
        if target:
            gen = meta.get("generation")
            answer = cond.find((vm.get("status") or {}).get("conditions"), s.REVERT_SUCCEEDED)
            snap = by_name.get(target)
            if answer is not None and answer.get("observedGeneration") == gen:
                if answer.get("status") == "True":
                    await self.client.patch(path, {"spec": {"currentSnapshotName": None}})
            elif snap is None or snap["metadata"].get("deletionTimestamp"):
                updates.append(cond.condition(s.REVERT_SUCCEEDED, False, "SnapshotNotFound",
                                              f"VirtualMachineSnapshot {target} of this VM "
                                              "not found", gen))
            elif not cond.is_true((snap.get("status") or {}).get("conditions"), s.CREATED):
                updates.append(cond.condition(s.REVERT_SUCCEEDED, False, "SnapshotNotReady",
                                              f"VirtualMachineSnapshot {target} is not taken "
                                              "yet", gen))
            elif spec.get("powerState", n.POWERED_ON) != revert_power(snap):
                await self.client.patch(path, {"spec": {"powerState": revert_power(snap)}})
        if fields or updates:
            await self._status(vm, fields, updates, path=path)
        if updates:
            self.events.record(dict(vm, apiVersion=s.API_VERSION, kind="VirtualMachine"),
                               WARNING, "SnapshotRevertFailed", updates[0]["message"])
        return DONE

    # -- writes ----------------------------------------------------------------------------------
    async def _patch(self, obj: dict[str, Any], change: Any) -> dict[str, Any]:
        try:
            return await patch_with_retry(self.client, s.path(obj["metadata"]["namespace"],
                                                              obj["metadata"]["name"]),
                                          obj, change)
        except errors.NotFound:
            return obj

    async def _status(self, obj: dict[str, Any], fields: dict[str, Any],
                      updates: list[dict[str, Any]], *, path: str = "") -> None:
        path = path or s.path(obj["metadata"]["namespace"], obj["metadata"]["name"])

        def change(current: dict[str, Any]) -> dict[str, Any] | None:
            status = current.get("status") or {}
            body = {k: v for k, v in fields.items() if status.get(k) != v}
            merged = cond.merge(status.get("conditions"), updates)
            if cond.changed(status.get("conditions"), merged):
                body["conditions"] = merged
            return {"status": body} if body else None

        try:
            await patch_with_retry(self.client, path, obj, change, subresource="status")
        except errors.NotFound:
            pass


def _reparent(old: str, new: str) -> Any:
    def change(current: dict[str, Any]) -> dict[str, Any] | None:
        if parent_of(current) != old:
            return None
        return {"metadata": {"annotations": {s.PARENT_ANNOTATION: new}}}
    return change


def _root(snap: dict[str, Any], alive: set[str], by_name: dict[str, dict[str, Any]]) -> bool:
    """No live ancestor: its parent is none, or (while re-parenting catches up) gone."""
    return not _nearest_live(parent_of(snap), by_name, alive) if parent_of(snap) else True


def _nearest_live(name: str, by_name: dict[str, dict[str, Any]], alive: set[str]) -> str:
    seen: set[str] = set()
    while name and name not in alive and name not in seen:
        seen.add(name)
        snap = by_name.get(name)
        name = parent_of(snap) if snap is not None else ""
    return name if name in alive else ""
