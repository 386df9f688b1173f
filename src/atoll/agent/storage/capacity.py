"""This host's ``CSIStorageCapacity`` for class ``atoll-local``: ``kube-system/atoll-local-<node>``.

What the datastore can still give: the free bytes of its filesystem, minus what the sparse
volumes here may still take (their unallocated remainder), minus the full size of local PVs
already provisioned for this host but not made yet.  Overcommit is therefore never hidden:
a host promising more than it has reports 0.  ``maximumVolumeSize`` is the same figure (one
volume is one file on that filesystem).

Written at start and whenever volumes or this host's PVs change, coalesced so it is written
at most every ``min_interval`` seconds, and refreshed once every ``refresh`` seconds for what
others write on the disk; a write that would not change the object is skipped.  The object
is owned by this host's Node, so it goes with the Node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from atoll.agent.storage import claims
from atoll.agent.storage import localvolumes as lv
from atoll.api import errors, quantity
from atoll.client.informer import Informer
from atoll.client.rest import ApiClient

log = logging.getLogger(__name__)
STORAGE_CLASS = "atoll-local"
NAMESPACE = "kube-system"
COLLECTION = f"/apis/storage.k8s.io/v1/namespaces/{NAMESPACE}/csistoragecapacities"


def object_name(node: str) -> str:
    return f"{STORAGE_CLASS}-{node}"


def capacity_object(node: str, capacity: int, owner: dict[str, Any] | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": object_name(node), "namespace": NAMESPACE,
                            "labels": {"storage.atoll.dev/node": node}}
    if owner:
        meta["ownerReferences"] = [owner]
    return {"apiVersion": "storage.k8s.io/v1", "kind": "CSIStorageCapacity", "metadata": meta,
            "storageClassName": STORAGE_CLASS,
            "nodeTopology": {"matchLabels": {claims.HOSTNAME_LABEL: node}},
            "capacity": str(capacity), "maximumVolumeSize": str(capacity)}


class CapacityPublisher:
    def __init__(self, client: ApiClient, store: lv.LocalVolumes, pvs: Informer, node: str, *,
                 min_interval: float = 3.0, refresh: float = 60.0) -> None:
        self.client = client
        self.store = store
        self.pvs = pvs
        self.node = node
        self.min_interval = min_interval
        self.refresh = refresh
        self._wake = asyncio.Event()
        self._owner: dict[str, Any] | None = None
        self.published: dict[str, Any] | None = None
        store.on_change.append(self.poke)
        pvs.add_handler(self._on_pv)

    def poke(self) -> None:
        self._wake.set()

    def node_replaced(self) -> None:
        """The Node was deleted and made again: the object goes with the old one (owner
        reference), so publish afresh under the new one."""
        self._owner = None
        self.poke()

    def _on_pv(self, kind: str, pv: dict[str, Any], old: dict[str, Any] | None) -> None:
        if lv.is_local(pv) and (claims.on_node(pv, self.node) or
                                (old is not None and claims.on_node(old, self.node))):
            self.poke()

    def capacity(self) -> int:
        """Free bytes minus what volumes here (made or still to be made) may yet take."""
        made = set(self.store.handles())
        pending = 0
        for pv in self.pvs.list():
            if not lv.is_local(pv) or not claims.on_node(pv, self.node) or \
                    (pv["spec"].get("csi") or {}).get("volumeHandle") in made:
                continue
            with contextlib.suppress(TypeError, ValueError):
                pending += quantity.integer((pv["spec"].get("capacity") or {}).get("storage"))
        free = self.store.free_bytes() - self.store.unallocated() - pending
        return max(0, free) // lv.MIB * lv.MIB  # whole MiB: the disk's churn is no news

    async def run(self) -> None:
        await self.pvs.wait_for_sync()
        while True:
            self._wake.clear()
            try:
                await self.publish()
            except (errors.ApiError, OSError) as e:
                log.warning("cannot publish this host's storage capacity: %s", e)
            await asyncio.sleep(self.min_interval)  # coalesces a burst of changes
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.refresh)

    async def publish(self) -> None:
        if self._owner is None:
            with contextlib.suppress(errors.NotFound):
                node = await self.client.get(f"/api/v1/nodes/{self.node}")
                self._owner = {"apiVersion": "v1", "kind": "Node", "name": self.node,
                               "uid": node["metadata"]["uid"]}
        want = capacity_object(self.node, await asyncio.to_thread(self.capacity), self._owner)
        path = f"{COLLECTION}/{object_name(self.node)}"
        try:
            current = await self.client.get(path)
        except errors.NotFound:
            self.published = await self.client.create(COLLECTION, want)
            return
        if all(current.get(k) == want[k] for k in ("capacity", "maximumVolumeSize")) and \
                current["metadata"].get("ownerReferences") == \
                want["metadata"].get("ownerReferences"):
            self.published = current
            return
        want["metadata"]["resourceVersion"] = current["metadata"].get("resourceVersion")
        want["metadata"]["labels"] = {**(current["metadata"].get("labels") or {}),
                                      **want["metadata"]["labels"]}
        try:
            self.published = await self.client.update(path, want)
        except errors.Conflict:
            self.poke()  # written meanwhile: look again
