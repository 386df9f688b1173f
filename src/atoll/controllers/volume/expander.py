"""Volume expansion, controller side: a grown claim grows its PersistentVolume.

As upstream's external-resizer does for a CSI driver: a Bound claim of
``storage.atoll.dev/local`` whose ``spec.resources.requests.storage`` exceeds its volume's
``spec.capacity`` (admission has checked that the class allows expansion) gets

1. ``status.allocatedResources`` = the request, ``allocatedResourceStatuses`` storage
   ``ControllerResizeInProgress`` and condition ``Resizing``;
2. the PV's ``spec.capacity`` = the request (after checking the host's published
   ``CSIStorageCapacity`` can hold the growth: else ``ControllerResizeInfeasible`` and a
   ``VolumeResizeFailed`` Event, and the claim stays as it was);
3. ``Resizing`` replaced by ``FileSystemResizePending`` (storage ``NodeResizePending``):
   the data lives on the host, whose agent grows the file (and the filesystem, or the running
   VM's disk) once it sees the PV's new capacity, then writes ``status.capacity`` and drops
   the conditions (``agent/storage/expansion.py``).

Every step is read from the objects, never from a delta: a controller killed between steps
finishes them on its next look (a claim with ``Resizing`` whose volume is already as large as
its request goes straight to step 3), and a host that finished first is not undone (a claim
whose ``status.capacity`` covers its volume loses any leftover resize condition).  Status
writes carry the claim's resourceVersion, so a host's write in between makes this one retry
on the fresh claim.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from atoll.api import conditions as cond
from atoll.api import errors
from atoll.api.quotausage import format_quantity
from atoll.client.controller import DONE, Builder, Controller, Result
from atoll.client.events import NORMAL, WARNING
from atoll.controllers.volume import binder
from atoll.controllers.volume.binder import LOCAL_PROVISIONER, Obj, annotations, meta, spec
from atoll.controllers.volume.pvcontroller import claim_path, volume_path

log = logging.getLogger(__name__)
RESIZING, FS_PENDING = "Resizing", "FileSystemResizePending"
CONTROLLER_ERROR, NODE_ERROR = "ControllerResizeError", "NodeResizeError"
RESIZE_CONDITIONS = (RESIZING, FS_PENDING, CONTROLLER_ERROR, NODE_ERROR)
IN_PROGRESS, INFEASIBLE, NODE_PENDING = ("ControllerResizeInProgress",
                                         "ControllerResizeInfeasible", "NodeResizePending")
FS_PENDING_MESSAGE = "Waiting for user to (re-)start a pod to finish file system resize of " \
                     "volume on node."


def _claim_of(kind: str, pv: Obj, old: Obj | None) -> Iterable[str]:
    ref = spec(pv).get("claimRef")
    if isinstance(ref, dict) and ref.get("name"):
        return [f"{ref.get('namespace') or ''}/{ref['name']}"]
    return []


def status_capacity(claim: Obj) -> Any:
    return ((claim.get("status") or {}).get("capacity") or {}).get("storage")


class VolumeExpander(Controller):
    name = "volume-expander"
    events_component = LOCAL_PROVISIONER + "_atoll-resizer"

    def declare(self, b: Builder) -> None:
        self.claims = b.primary("", "v1", "persistentvolumeclaims")
        self.volumes = b.watches("", "v1", "persistentvolumes", _claim_of)
        self.classes = b.reads("storage.k8s.io", "v1", "storageclasses")
        self.capacities = b.reads("storage.k8s.io", "v1", "csistoragecapacities")

    async def reconcile(self, key: str) -> Result:
        claim = self.claims.get(key)
        if claim is None or binder.BIND_COMPLETED not in annotations(claim):
            return DONE
        name = spec(claim).get("volumeName") or ""
        volume = self.volumes.get(name) if name else None
        if volume is None or not binder.is_bound_to(volume, claim):
            return DONE
        if ((spec(volume).get("csi") or {}).get("driver")) != LOCAL_PROVISIONER:
            return DONE  # another driver's resizer (or none) handles it
        want, have = binder.requested_bytes(claim), binder.capacity_bytes(volume)
        if want is None or have is None:
            return DONE
        try:
            if want > have:
                await self._expand(claim, volume)
            else:
                await self._settle(claim, volume)
        except errors.Conflict:
            self.queue.add(key)  # someone (the host) wrote first: look at the fresh claim
        except errors.NotFound:
            pass
        return DONE

    async def _expand(self, claim: Obj, volume: Obj) -> None:
        request = str(spec(claim)["resources"]["requests"]["storage"])
        sc = self.classes.get(binder.claim_class(claim))
        if sc is None or sc.get("allowVolumeExpansion") is not True:
            self.events.record(claim, WARNING, "VolumeResizeFailed",
                               f"storageclass \"{binder.claim_class(claim)}\" does not allow "
                               "volume expansion")
            return
        status = claim.get("status") or {}
        allocated = (status.get("allocatedResourceStatuses") or {}).get("storage")
        grow = binder.requested_bytes(claim) - binder.capacity_bytes(volume)  # type: ignore
        node = binder.affinity_node(volume)
        limit = binder.published_capacity(self.capacities.list(), node, meta(sc)["name"]) \
            if node else None
        if limit is not None and grow > limit[0]:
            message = (f"resize volume \"{meta(volume)['name']}\" by controller failed: "
                       f"growing to {request} needs {format_quantity(grow, 'storage')} "
                       f"more but node {node} has "
                       f"only {limit[1]} available")
            if allocated != INFEASIBLE:
                self.events.record(claim, WARNING, "VolumeResizeFailed", message)
            await self._status(claim, {"allocatedResources": {"storage": request},
                                       "allocatedResourceStatuses": {"storage": INFEASIBLE}},
                               [cond.condition(CONTROLLER_ERROR, True, "ResizeInfeasible",
                                               message)], (RESIZING,))
            return
        if allocated != IN_PROGRESS or not cond.find(status.get("conditions"), RESIZING):
            self.events.record(claim, NORMAL, "Resizing",
                               f"External resizer is resizing volume {meta(volume)['name']}")
            claim = await self._status(claim, {
                "allocatedResources": {"storage": request},
                "allocatedResourceStatuses": {"storage": IN_PROGRESS}},
                [cond.condition(RESIZING, True, "", "")], (CONTROLLER_ERROR,))
        volume = await self.client.patch(volume_path(meta(volume)["name"]), {
            "metadata": {"resourceVersion": meta(volume).get("resourceVersion", "")},
            "spec": {"capacity": {"storage": request}}})
        self.events.record(claim, NORMAL, "VolumeResizeSuccessful", "Resize volume succeeded")
        await self._node_pending(claim, volume)

    async def _settle(self, claim: Obj, volume: Obj) -> None:
        """The volume is as large as the request: hand over to the host, or tidy up after it."""
        status = claim.get("status") or {}
        conditions = status.get("conditions") or []
        capacity = status_capacity(claim)
        done = capacity is not None and binder._bytes(capacity) is not None and \
            binder._bytes(capacity) >= binder.capacity_bytes(volume)  # type: ignore[operator]
        if done:
            if any(cond.find(conditions, t) for t in (RESIZING, CONTROLLER_ERROR)):
                await self._status(claim, {}, [], (RESIZING, CONTROLLER_ERROR))
            return
        if cond.find(conditions, RESIZING) or cond.find(conditions, CONTROLLER_ERROR):
            await self._node_pending(claim, volume)

    async def _node_pending(self, claim: Obj, volume: Obj) -> None:
        if (claim.get("status") or {}).get("phase") == "Bound" and \
                cond.find((claim.get("status") or {}).get("conditions"), FS_PENDING) and \
                not cond.find((claim.get("status") or {}).get("conditions"), RESIZING):
            return
        self.events.record(claim, NORMAL, "FileSystemResizeRequired",
                           "Require file system resize of volume on node")
        capacity = str((spec(volume).get("capacity") or {}).get("storage"))
        await self._status(claim, {"allocatedResources": {"storage": capacity},
                                   "allocatedResourceStatuses": {"storage": NODE_PENDING}},
                           [cond.condition(FS_PENDING, True, "", FS_PENDING_MESSAGE)],
                           (RESIZING, CONTROLLER_ERROR))

    async def _status(self, claim: Obj, fields: dict[str, Any], updates: list[dict[str, Any]],
                      remove: tuple[str, ...]) -> Obj:
        m = meta(claim)
        merged = cond.merge((claim.get("status") or {}).get("conditions"), updates, remove)
        body = {"metadata": {"resourceVersion": m.get("resourceVersion", "")},
                "status": dict(fields, conditions=merged)}
        return await self.client.patch(claim_path(m["namespace"], m["name"]) + "/status", body)
