"""Namespace lifecycle: a namespace being deleted is emptied, then finalized.

As upstream's namespace controller: delete every namespaced collection in it,
wait for the objects to go (their own finalizers may take time), then remove
the ``kubernetes`` finalizer through ``/finalize``; the API server then
deletes the namespace.

What is left is counted by live reads, not from caches: a cache that lags could miss an
object still held by its finalizers and let the namespace go before it.
"""

from __future__ import annotations

import logging

from atoll.api import errors
from atoll.client.controller import DONE, Builder, Controller, Result, requeue_after
from atoll.client.discovery import server_resources
from atoll.client.rest import resource_path

log = logging.getLogger(__name__)
FINALIZER = "kubernetes"


class NamespaceController(Controller):
    name = "namespace"
    default_workers = 2
    backoff = (0.1, 5.0)

    def declare(self, b: Builder) -> None:
        self.namespaces = b.primary("", "v1", "namespaces")
        #: consecutive passes that found content left, per namespace (for the recheck delay)
        self._passes: dict[str, int] = {}

    async def reconcile(self, name: str) -> Result:
        ns = self.namespaces.get(name)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            self._passes.pop(name, None)
            return DONE
        finalizers = (ns.get("spec") or {}).get("finalizers") or []
        if FINALIZER not in finalizers:
            return DONE
        remaining = await self._delete_content(name)
        if remaining:
            n = self._passes.get(name, 0) + 1
            self._passes[name] = n
            # objects with finalizers are finished by others; look again soon, then less often
            return requeue_after(min(0.2 * (2 ** min(n, 5)), 5.0))
        self._passes.pop(name, None)
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name},
                "spec": {"finalizers": [f for f in finalizers if f != FINALIZER]}}
        await self.client.update(f"/api/v1/namespaces/{name}/finalize", body)
        return DONE

    async def _delete_content(self, namespace: str) -> int:
        """Delete every namespaced collection in ``namespace``; how many objects are left."""
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
