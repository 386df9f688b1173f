"""Removes the data of local volumes whose PersistentVolume is gone (reclaim policy Delete).

It lists and watches PersistentVolumes (hosts may read them all).  After the first list,
and on every DELETED event, a volume directory of this host whose PV no longer exists is
unmounted and removed, unless a pod or VM here still uses it: then it goes when the last
user does (the datastore's ``on_idle``).  Before deleting anything the PV's absence is
confirmed with a read of its own, so a PV created after the list cannot lose its data to a
stale cache.  Volumes of a Retain PV (recorded in the volume's ``meta.json``, kept in step
with the PV) keep their data when the PV goes, as upstream: an administrator's to reuse.
"""

from __future__ import annotations

import logging
from typing import Any

from atoll.agent.storage import localvolumes as lv
from atoll.api import errors
from atoll.client.informer import Informer
from atoll.client.rest import ApiClient
from atoll.client.workqueue import WorkQueue, serve

log = logging.getLogger(__name__)


class VolumeJanitor:
    def __init__(self, client: ApiClient, pvs: Informer, store: lv.LocalVolumes) -> None:
        self.client = client
        self.pvs = pvs
        self.store = store
        self.queue: WorkQueue[str] = WorkQueue(base_delay=0.5, max_delay=30.0)
        pvs.add_handler(self._on_pv)
        store.on_idle.append(self._look_at)

    def _on_pv(self, kind: str, pv: dict[str, Any], old: dict[str, Any] | None) -> None:
        if not lv.is_local(pv):
            return
        handle = ((pv.get("spec") or {}).get("csi") or {}).get("volumeHandle")
        if isinstance(handle, str) and handle in self.store.handles():
            self._look_at(handle)

    def _look_at(self, handle: str) -> None:
        self.queue.add(handle)

    async def run(self) -> None:
        await self.pvs.wait_for_sync()
        await self.store.clean_leftovers()
        for handle in self.store.handles():
            self.queue.add(handle)
        await serve(self.queue, self.reconcile, "volume janitor",
                    (lv.LocalVolumeError, OSError, errors.ApiError))

    async def reconcile(self, handle: str) -> None:
        meta = self.store.meta(handle)
        if meta is None:
            return
        pv = lv.pv_of(self.pvs, handle)
        if pv is not None:
            policy = pv["spec"].get("persistentVolumeReclaimPolicy") or "Delete"
            if policy != meta.get("reclaim"):
                await self.store.ensure(lv.spec_from_pv(pv))  # records the new policy
            return
        if meta.get("reclaim") != "Delete":
            return  # Retain: the data outlives its PV
        name = str(meta.get("pv") or handle)
        try:
            current = await self.client.get(f"/api/v1/persistentvolumes/{name}")
        except errors.NotFound:
            current = None
        if current is not None and lv.is_local(current) and \
                (current["spec"].get("csi") or {}).get("volumeHandle") == handle:
            return  # the cache is behind: the PV is there
        if await self.store.remove(handle):
            log.info("volume %s: its PersistentVolume %s is gone; data removed", handle, name)
        else:
            log.info("volume %s: its PersistentVolume %s is gone; removed once unused",
                     handle, name)
