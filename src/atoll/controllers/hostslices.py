"""Host slices follow their host: the EndpointSlice an agent writes for a server it runs
itself (``kube-system/kube-dns``, ``kube-system/atoll-ingress``) turns not ready while its
Node is unreachable and is deleted with the Node.

Without this a host that died, or was removed, stays in those Services: its cluster IP and
load-balancer address keep sending a share of the traffic to a server that is gone (upstream
gets the same effect from pods marked not ready on an unreachable node; these slices have no
pods behind them).  The agent writes its slice ready when it starts; this controller only
ever lowers and restores the conditions, and deletes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from atoll.api import errors
from atoll.api.resources.discovery_v1 import HOST_MANAGER, MANAGED_BY_LABEL
from atoll.client.controller import DONE, Builder, Controller, Result
from atoll.controllers.nodelifecycle import UNREACHABLE

log = logging.getLogger(__name__)
HOST_INDEX = "host-slice-node"


def by_host(obj: dict[str, Any]) -> Iterable[str]:
    """The nodes a host-written slice names (other slices are not filed)."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    if labels.get(MANAGED_BY_LABEL) != HOST_MANAGER:
        return []
    return {ep["nodeName"] for ep in obj.get("endpoints") or []
            if isinstance(ep, dict) and isinstance(ep.get("nodeName"), str)}


def reachable(node: dict[str, Any]) -> bool:
    return not any(isinstance(t, dict) and t.get("key") == UNREACHABLE
                   for t in (node.get("spec") or {}).get("taints") or [])


def conditions_for(ready: bool) -> dict[str, bool]:
    return {"ready": ready, "serving": ready, "terminating": False}


class HostSliceController(Controller):
    name = "host-slices"
    default_workers = 1

    def declare(self, b: Builder) -> None:
        self.nodes = b.primary("", "v1", "nodes")
        self.slices = b.watches("discovery.k8s.io", "v1", "endpointslices", self._nodes_of,
                                indexers={HOST_INDEX: by_host})

    @staticmethod
    def _nodes_of(kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> Iterable[str]:
        return set(by_host(obj)) | set(by_host(old or {}))

    async def reconcile(self, name: str) -> Result:
        node = self.nodes.get(name)
        for sl in list(self.slices.by_index(HOST_INDEX, name)):
            meta = sl["metadata"]
            path = (f"/apis/discovery.k8s.io/v1/namespaces/{meta['namespace']}"
                    f"/endpointslices/{meta['name']}")
            try:
                if node is None:
                    if await self._node_exists(name):  # made again: its informer lags
                        continue
                    log.info("node %s is gone: deleting its slice %s", name, meta["name"])
                    await self.client.delete(path, {
                        "apiVersion": "v1", "kind": "DeleteOptions",
                        "preconditions": {"uid": meta["uid"]}})
                    continue
                wanted = conditions_for(reachable(node))
                endpoints = [dict(ep, conditions=wanted) if ep.get("nodeName") == name else ep
                             for ep in sl.get("endpoints") or []]
                if endpoints != sl.get("endpoints"):
                    log.info("node %s: its slice %s is %s", name, meta["name"],
                             "ready" if wanted["ready"] else "not ready")
                    await self.client.update(path, {**sl, "apiVersion": "discovery.k8s.io/v1",
                                                     "kind": "EndpointSlice",
                                                     "endpoints": endpoints})
            except errors.NotFound:
                continue
            # a Conflict is retried with back-off: the newer slice comes through the watch
        return DONE

    async def _node_exists(self, name: str) -> bool:
        try:
            await self.client.get(f"/api/v1/nodes/{name}")
        except errors.NotFound:
            return False
        return True
