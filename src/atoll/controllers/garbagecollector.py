"""Garbage collector: objects whose owners are gone are deleted; Foreground and Orphan
deletions of owners are carried out (upstream's GC semantics, over metadata-only informers).

The graph maps every object's uid to its owner references and dependents.  A
dependent is deleted only after its owners are confirmed absent by a live read
(the informers may lag), so a fresh owner is never mistaken for a missing one.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from atoll.api import errors
from atoll.client.discovery import ApiResource, server_resources
from atoll.client.informer import Informer
from atoll.client.rest import ApiClient, MERGE_PATCH, resource_path
from atoll.client.workqueue import WorkQueue
from atoll.controllers.runner import run_workers

log = logging.getLogger(__name__)


@dataclass
class Node:
    uid: str
    resource: ApiResource
    namespace: str
    name: str
    owners: list[dict[str, Any]] = field(default_factory=list)
    finalizers: list[str] = field(default_factory=list)
    deleting: bool = False
    resource_version: str = ""

    @property
    def path(self) -> str:
        r = self.resource
        return resource_path(r.group, r.version, r.plural, self.namespace if r.namespaced else "",
                             self.name)


class GarbageCollector:
    name = "garbage-collector"

    def __init__(self, client: ApiClient, *, workers: int = 4) -> None:
        self.client = client
        self.workers = workers
        self.nodes: dict[str, Node] = {}
        self.dependents: dict[str, set[str]] = {}
        self.kinds: dict[tuple[str, str], ApiResource] = {}  # (group, kind) -> resource
        self.informers: dict[tuple[str, str, str], tuple[Informer, asyncio.Task[None]]] = {}
        self.queue: WorkQueue[str] = WorkQueue(base_delay=0.05, max_delay=10.0)
        self._refresh = asyncio.Event()

    # -- resource set ------------------------------------------------------------------------
    async def _sync_resources(self) -> None:
        resources = [r for r in await server_resources(self.client)
                     if {"list", "watch", "delete", "get"} <= r.verbs]
        wanted = {(r.group, r.version, r.plural): r for r in resources}
        self.kinds = {(r.group, r.kind): r for r in resources}
        for key, (inf, task) in list(self.informers.items()):
            if key not in wanted:
                task.cancel()
                del self.informers[key]
        for key, r in wanted.items():
            if key in self.informers:
                continue
            inf = Informer(self.client, r.group, r.version, r.plural, metadata_only=True)
            inf.add_handler(lambda kind, obj, old, r=r: self._on_event(r, kind, obj))
            task = asyncio.create_task(inf.run(), name=f"gc-informer-{r.plural}")
            self.informers[key] = (inf, task)

    def _on_crd_event(self, kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        self._refresh.set()

    async def _resource_loop(self) -> None:
        crds = Informer(self.client, "apiextensions.k8s.io", "v1", "customresourcedefinitions",
                        metadata_only=True)
        crds.add_handler(self._on_crd_event)
        crd_task = asyncio.create_task(crds.run(), name="gc-crd-informer")
        try:
            while True:
                self._refresh.clear()
                try:
                    await self._sync_resources()
                except Exception as exc:
                    log.warning("garbage collector: discovery failed: %s", exc)
                    await asyncio.sleep(1.0)
                    continue
                await self._refresh.wait()
                await asyncio.sleep(0.2)  # let a burst of CRD changes settle
        finally:
            crd_task.cancel()

    # -- graph -------------------------------------------------------------------------------
    def _on_event(self, r: ApiResource, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        uid = meta.get("uid")
        if not uid:
            return
        old = self.nodes.get(uid)
        if kind == "DELETED":
            self.nodes.pop(uid, None)
            if old:
                for ref in old.owners:
                    deps = self.dependents.get(ref.get("uid", ""))
                    if deps:
                        deps.discard(uid)
                    self.queue.add(ref.get("uid", ""))  # a foreground owner may now finish
            for dep in self.dependents.get(uid, set()):
                self.queue.add(dep)
            return
        node = Node(uid, r, meta.get("namespace", ""), meta.get("name", ""),
                    [o for o in meta.get("ownerReferences") or [] if isinstance(o, dict)],
                    list(meta.get("finalizers") or []), bool(meta.get("deletionTimestamp")),
                    meta.get("resourceVersion", ""))
        self.nodes[uid] = node
        if old:
            for ref in old.owners:
                if ref not in node.owners:
                    self.dependents.get(ref.get("uid", ""), set()).discard(uid)
        for ref in node.owners:
            self.dependents.setdefault(ref.get("uid", ""), set()).add(uid)
        if node.owners:
            self.queue.add(uid)
        if node.deleting and ({"orphan", "foregroundDeletion"} & set(node.finalizers)):
            self.queue.add(uid)

    # -- reconcile ---------------------------------------------------------------------------
    async def reconcile(self, uid: str) -> float | None:
        node = self.nodes.get(uid)
        if node is None:
            return None
        if node.deleting and "orphan" in node.finalizers:
            await self._orphan_dependents(node)
            return None
        if node.deleting and "foregroundDeletion" in node.finalizers:
            return await self._foreground(node)
        if node.owners:
            await self._check_owners(node)
        return None

    async def _owner_state(self, node: Node, ref: dict[str, Any]) -> str:
        """'solid', 'dangling' or 'foreground' (owner waiting for its dependents)."""
        owner = self.nodes.get(ref.get("uid", ""))
        if owner is not None:
            if owner.deleting and "foregroundDeletion" in owner.finalizers:
                return "foreground"
            return "solid"
        api_version = ref.get("apiVersion", "")
        group = api_version.split("/")[0] if "/" in api_version else ""
        r = self.kinds.get((group, ref.get("kind", "")))
        if r is None:
            return "solid"  # unknown kind: never delete on a guess
        path = resource_path(r.group, r.version, r.plural, node.namespace if r.namespaced else "",
                             ref.get("name", ""))
        try:
            live = await self.client.get(path)
        except errors.NotFound:
            return "dangling"
        if (live.get("metadata") or {}).get("uid") != ref.get("uid"):
            return "dangling"
        meta = live.get("metadata") or {}
        if meta.get("deletionTimestamp") and "foregroundDeletion" in (meta.get("finalizers") or []):
            return "foreground"
        return "solid"

    async def _check_owners(self, node: Node) -> None:
        states = [(ref, await self._owner_state(node, ref)) for ref in node.owners]
        solid = [ref for ref, s in states if s == "solid"]
        dangling = [ref for ref, s in states if s == "dangling"]
        foreground = [ref for ref, s in states if s == "foreground"]
        if solid:
            if dangling:
                keep = [ref for ref in node.owners if ref not in dangling]
                await self._patch_owner_refs(node, keep)
            return
        if foreground:
            if not node.deleting:
                await self._delete(node, "Foreground")
            return
        if not node.deleting:
            await self._delete(node, "Background")

    async def _delete(self, node: Node, policy: str) -> None:
        try:
            await self.client.delete(node.path, {"kind": "DeleteOptions", "apiVersion": "v1",
                                                 "propagationPolicy": policy,
                                                 "preconditions": {"uid": node.uid}})
        except (errors.NotFound, errors.Conflict):
            pass

    async def _patch_owner_refs(self, node: Node, refs: list[dict[str, Any]]) -> None:
        try:
            await self.client.patch(node.path, {"metadata": {"ownerReferences": refs or None,
                                                             "uid": node.uid}},
                                    content_type=MERGE_PATCH)
        except errors.NotFound:
            pass

    async def _orphan_dependents(self, owner: Node) -> None:
        for dep_uid in list(self.dependents.get(owner.uid, set())):
            dep = self.nodes.get(dep_uid)
            if dep is None:
                continue
            keep = [ref for ref in dep.owners if ref.get("uid") != owner.uid]
            await self._patch_owner_refs(dep, keep)
        await self._remove_finalizer(owner, "orphan")

    async def _foreground(self, owner: Node) -> float | None:
        remaining = [self.nodes[d] for d in self.dependents.get(owner.uid, set()) if d in self.nodes]
        blocking = []
        for dep in remaining:
            ref = next((r for r in dep.owners if r.get("uid") == owner.uid), {})
            if not dep.deleting:
                await self._delete(dep, "Foreground" if ref.get("blockOwnerDeletion") else "Background")
            if ref.get("blockOwnerDeletion"):
                blocking.append(dep)
        if blocking:
            return None  # each dependent's DELETED event requeues the owner
        await self._remove_finalizer(owner, "foregroundDeletion")
        return None

    async def _remove_finalizer(self, node: Node, finalizer: str) -> None:
        try:
            live = await self.client.get(node.path)
        except errors.NotFound:
            return
        meta = live.get("metadata") or {}
        finalizers = [f for f in meta.get("finalizers") or [] if f != finalizer]
        if finalizers == (meta.get("finalizers") or []):
            return
        await self.client.patch(node.path, {"metadata": {
            "finalizers": finalizers or None, "resourceVersion": meta.get("resourceVersion")}},
            content_type=MERGE_PATCH)

    async def run(self) -> None:
        await asyncio.gather(self._resource_loop(),
                             run_workers(self.name, self.queue, self.reconcile, self.workers))
