"""Namespace lifecycle: a namespace being deleted is emptied, then finalized.

As upstream's namespace controller: delete every namespaced collection in it,
wait for the objects to go (their own finalizers may take time), then remove
the ``kubernetes`` finalizer through ``/finalize``; the API server then
deletes the namespace.
"""

from __future__ import annotations

import logging
from typing import Any

from atoll.api import errors
from atoll.client.discovery import server_resources
from atoll.client.informer import Informer
from atoll.client.rest import ApiClient, resource_path
from atoll.client.workqueue import WorkQueue
from atoll.controllers.runner import run_workers

log = logging.getLogger(__name__)
FINALIZER = "kubernetes"


class NamespaceController:
    name = "namespace"

    def __init__(self, client: ApiClient, *, workers: int = 2) -> None:
        self.client = client
        self.workers = workers
        self.informer = Informer(client, "", "v1", "namespaces")
        self.queue: WorkQueue[str] = WorkQueue(base_delay=0.1, max_delay=5.0)
        self.informer.add_handler(self._on_event)
        #: consecutive passes that found content left, per namespace (for the recheck delay)
        self._passes: dict[str, int] = {}

    def _on_event(self, kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        if kind != "DELETED" and obj["metadata"].get("deletionTimestamp"):
            self.queue.add(obj["metadata"]["name"])

    async def run(self) -> None:
        import asyncio

        await asyncio.gather(self.informer.run(),
                             run_workers(self.name, self.queue, self.reconcile, self.workers))

    async def reconcile(self, name: str) -> float | None:
        ns = self.informer.get(name)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            self._passes.pop(name, None)
            return None
        finalizers = (ns.get("spec") or {}).get("finalizers") or []
        if FINALIZER not in finalizers:
            return None
        remaining = await self._delete_content(name)
        if remaining:
            n = self._passes.get(name, 0) + 1
            self._passes[name] = n
            # objects with finalizers are finished by others; look again soon, then less often
            return min(0.2 * (2 ** min(n, 5)), 5.0)
        self._passes.pop(name, None)
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name},
                "spec": {"finalizers": [f for f in finalizers if f != FINALIZER]}}
        try:
            await self.client.update(f"/api/v1/namespaces/{name}/finalize", body)
        except errors.NotFound:
            pass
        return None

    async def _delete_content(self, namespace: str) -> int:
        remaining = 0
        for r in await server_resources(self.client):
            if not r.namespaced or not {"list", "deletecollection"} <= r.verbs:
                continue
            path = resource_path(r.group, r.version, r.plural, namespace)
            try:
                await self.client.delete(path, propagationPolicy="Background")
                body = await self.client.get(path, limit=1)
            except (errors.NotFound, errors.MethodNotAllowed):
                continue
            remaining += len(body.get("items") or [])
        return remaining
