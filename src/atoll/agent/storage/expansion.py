"""Volume expansion, host side: this host's volumes grow to their PV's capacity, and the
claim's status is told.

The controller (``controllers/volume/expander.py``) grows ``spec.capacity`` of a PV; hosts
may read every PV but only the claims their own workloads use (apiserver/nodeauthz.py), so
the PV is what this watches.  A local volume of this host whose PV asks more than its file
holds is grown (``LocalVolumes.grow``: the file, the mounted filesystem online, a running
VM's disk by QMP); once the data has its size, the claim named by the PV's ``claimRef`` gets
upstream kubelet's finish: ``status.capacity`` = the size, the resize conditions and
``allocatedResourceStatuses`` gone, and a ``FileSystemResizeSuccessful`` Event.  A
Filesystem volume not mounted here keeps ``FileSystemResizePending`` until a pod or VM uses
it (as upstream: the filesystem grows at the next mount).  A claim this host may not read
(no workload here uses it) is told when one does (``on_used``).

The target is always the PV's capacity, never a delta, and the datastore records each step
after it is done, so a kill -9 anywhere is finished by the next look.
"""

from __future__ import annotations

import logging
from typing import Any

from atoll.agent.storage import claims
from atoll.agent.storage import localvolumes as lv
from atoll.api import conditions as cond
from atoll.api import errors, quantity
from atoll.client.events import NORMAL, EventRecorder
from atoll.client.informer import Informer
from atoll.client.rest import ApiClient
from atoll.client.workqueue import WorkQueue, serve

log = logging.getLogger(__name__)
RESIZE_CONDITIONS = ("Resizing", "FileSystemResizePending", "ControllerResizeError",
                     "NodeResizeError")


def _capacity(pv: dict[str, Any]) -> int:
    try:
        return quantity.integer(((pv.get("spec") or {}).get("capacity") or {}).get("storage"))
    except (TypeError, ValueError):
        return 0


class VolumeExpansion:
    def __init__(self, client: ApiClient, pvs: Informer, store: lv.LocalVolumes, node: str,
                 events: EventRecorder) -> None:
        self.client = client
        self.pvs = pvs
        self.store = store
        self.node = node
        self.events = events
        self.queue: WorkQueue[str] = WorkQueue(base_delay=0.5, max_delay=30.0)
        pvs.add_handler(self._on_pv)
        store.on_used.append(self._look_at)
        store.on_idle.append(self._look_at)  # unmounted: a waiting filesystem can grow now

    def _on_pv(self, kind: str, pv: dict[str, Any], old: dict[str, Any] | None) -> None:
        if kind == "DELETED" or not lv.is_local(pv) or not claims.on_node(pv, self.node):
            return
        handle = ((pv.get("spec") or {}).get("csi") or {}).get("volumeHandle")
        if isinstance(handle, str) and (old is None or _capacity(old) != _capacity(pv)):
            self._look_at(handle)

    def _look_at(self, handle: str) -> None:
        self.queue.add(handle)

    async def run(self) -> None:
        await self.pvs.wait_for_sync()
        for handle in self.store.handles():
            self.queue.add(handle)
        await serve(self.queue, self.reconcile, "volume expansion",
                    (lv.LocalVolumeError, OSError, errors.ApiError))

    async def reconcile(self, handle: str) -> None:
        meta = self.store.meta(handle)
        pv = lv.pv_of(self.pvs, handle)
        if meta is None or pv is None or not claims.on_node(pv, self.node):
            return
        target = _capacity(pv)
        size = int(meta.get("size") or 0)
        if target > size or not self.store.grown(handle):
            if not await self.store.grow(handle, max(target, size)):
                await self._explain(pv)  # the filesystem grows at its next mount here
                return
        size = int((self.store.meta(handle) or {}).get("size") or 0)
        if self.store.reported(handle) < size:
            if await self._report(pv, size):
                self.store.mark_reported(handle, size)

    async def _explain(self, pv: dict[str, Any]) -> None:
        """Say on the claim's ``FileSystemResizePending`` why the mounted filesystem waits."""
        ref = (pv.get("spec") or {}).get("claimRef") or {}
        path = f"/api/v1/namespaces/{ref.get('namespace')}/persistentvolumeclaims/" \
               f"{ref.get('name')}"
        try:
            claim = await self.client.get(path)
        except (errors.NotFound, errors.Forbidden):
            return
        conditions = (claim.get("status") or {}).get("conditions") or []
        pending = cond.find(conditions, "FileSystemResizePending")
        if pending is None and cond.find(conditions, "Resizing"):
            self._look_at_later(pv)  # the controller has not handed it over yet
        if pending is None or pending.get("message") == self.deferred:
            return
        update = dict(pending, message=self.deferred, reason="OnlineResizeNotPermitted")
        body = {"metadata": {"resourceVersion": claim["metadata"].get("resourceVersion")},
                "status": {"conditions": cond.merge(conditions, [update])}}
        try:
            await self.client.patch(path + "/status", body)
        except (errors.Conflict, errors.Forbidden):
            self._look_at_later(pv)

    def _look_at_later(self, pv: dict[str, Any]) -> None:
        handle = ((pv.get("spec") or {}).get("csi") or {}).get("volumeHandle")
        if isinstance(handle, str):
            self.queue.add_after(handle, 1.0)

    @property
    def deferred(self) -> str:
        return (f"Waiting for user to (re-)start a pod to finish file system resize of volume "
                f"on node: {self.node} cannot grow a mounted ext4 filesystem (the agent lacks "
                "CAP_SYS_RESOURCE); it grows when the volume is next mounted")

    async def _report(self, pv: dict[str, Any], size: int) -> bool:
        """The claim's status says the volume has ``size``; False if it cannot be told yet."""
        ref = (pv.get("spec") or {}).get("claimRef") or {}
        namespace, name = ref.get("namespace"), ref.get("name")
        if not namespace or not name:
            return False
        path = f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}"
        for _ in range(5):
            try:
                claim = await self.client.get(path)
            except errors.NotFound:
                return True  # gone: nothing to tell
            except errors.Forbidden:
                return False  # no workload here uses it (yet)
            if ref.get("uid") and claim["metadata"].get("uid") != ref["uid"]:
                return True
            status = claim.get("status") or {}
            conditions = status.get("conditions") or []
            have = (status.get("capacity") or {}).get("storage")
            try:
                told = have is not None and quantity.integer(have) >= size
            except (TypeError, ValueError):
                told = False
            pending = [c for c in conditions if c.get("type") in RESIZE_CONDITIONS]
            if told and not pending and not status.get("allocatedResourceStatuses"):
                return True
            capacity = str((pv["spec"].get("capacity") or {}).get("storage"))
            body = {"metadata": {"resourceVersion": claim["metadata"].get("resourceVersion")},
                    "status": {"capacity": {"storage": capacity},
                               "allocatedResourceStatuses": None,
                               "conditions": cond.merge(conditions, [], RESIZE_CONDITIONS)}}
            if not (status.get("allocatedResources") or {}).get("storage"):
                body["status"]["allocatedResources"] = {"storage": capacity}
            try:
                claim = await self.client.patch(path + "/status", body)
            except errors.Conflict:
                continue
            except errors.Forbidden:
                return False
            if pending:
                self.events.record(claim, NORMAL, "FileSystemResizeSuccessful",
                                   f"MountVolume.NodeExpandVolume succeeded for volume "
                                   f"\"{pv['metadata']['name']}\" {self.node}")
            log.info("claim %s/%s: volume %s grown to %s", namespace, name,
                     pv["metadata"]["name"], capacity)
            return True
        return False
