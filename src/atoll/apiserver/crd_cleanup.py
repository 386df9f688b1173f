"""Deleting a CRD deletes its objects first (upstream's customresourcecleanup finalizer).

Runs inside the API server, like kube-apiserver's apiextensions controllers,
because it must reach objects the registry may already have stopped serving.
"""

from __future__ import annotations

import asyncio
import logging

from atoll.api import errors
from atoll.apiserver import crds
from atoll.apiserver.objects import ObjectService, WriteOptions
from atoll.apiserver.registry import Registry
from atoll.storage.cacher import CacheEvent

log = logging.getLogger(__name__)


class CRDCleanup:
    def __init__(self, svc: ObjectService, registry: Registry) -> None:
        self.svc = svc
        self.registry = registry
        self.queue: asyncio.Queue[str] = asyncio.Queue()

    def _on_event(self, ev: CacheEvent) -> None:
        if ev.key.startswith(crds.CRD_PREFIX) and ev.type != "DELETED" and \
                ev.obj["metadata"].get("deletionTimestamp"):
            self.queue.put_nowait(ev.obj["metadata"]["name"])

    async def run(self) -> None:
        self.svc.cacher.listeners.append(self._on_event)
        for cached in self.svc.cacher.list(crds.CRD_PREFIX):
            if cached.obj["metadata"].get("deletionTimestamp"):
                self.queue.put_nowait(cached.obj["metadata"]["name"])
        while True:
            name = await self.queue.get()
            try:
                await self._cleanup(name)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("cleaning up CRD %s failed; retrying", name)
                await asyncio.sleep(1)
                self.queue.put_nowait(name)

    async def _cleanup(self, name: str) -> None:
        types = self.registry.custom_types(name)
        crd_type = self.registry.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        assert crd_type is not None
        if types:
            st = self.registry.storage_type(types[0])
            for cached in self.svc.cacher.list(st.store_prefix):
                meta = cached.obj["metadata"]
                try:
                    await self.svc.delete(st, meta.get("namespace", ""), meta["name"],
                                          opts=WriteOptions())
                except errors.NotFound:
                    pass
            # objects with finalizers of their own keep the CRD until they are gone
            if self.svc.cacher.count(st.store_prefix):
                await asyncio.sleep(0.5)
                self.queue.put_nowait(name)
                return

        def drop_finalizer(crd: dict) -> dict:
            crd["metadata"]["finalizers"] = [f for f in crd["metadata"].get("finalizers") or []
                                             if f != crds.CLEANUP_FINALIZER]
            return crd
        try:
            await self.svc.guaranteed_update(crd_type, "", name, drop_finalizer,
                                             WriteOptions(field_manager="atoll-apiserver"))
        except errors.NotFound:
            pass
