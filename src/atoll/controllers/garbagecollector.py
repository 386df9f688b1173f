"""Garbage collector: objects whose owners are gone are deleted; Foreground and Orphan
deletions of owners are carried out, with upstream's GC semantics.

The graph is the factory's informers of every deletable resource (found by discovery, again
whenever a CRD changes), indexed by uid and by owner uid: metadata-only, or the full one where
another controller caches the resource, so each resource is watched once.  A resource's
objects are acted on only once its informer has listed, and a dependent is deleted only after
its owners are confirmed absent by a live read (the informers may lag), so a fresh owner is
never mistaken for a missing one.  Queue keys are object uids, plus one key for rediscovery.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from atoll.api import errors
from atoll.client import indexers as ix
from atoll.client.controller import DONE, Builder, Controller, Result, requeue_after
from atoll.client.discovery import ApiResource, server_resources
from atoll.client.informer import Informer
from atoll.client.rest import MERGE_PATCH, resource_path

log = logging.getLogger(__name__)
GVR = tuple[str, str, str]
#: the queue key of "discover the resources again" (never an object's uid)
RESOURCES = "@resources"
#: the index of objects by their own uid
UID = "uid"
#: seconds a burst of CRD changes may take before resources are discovered again
SETTLE_SECONDS = 0.2
#: seconds a discovery waits for new informers' first list before acting on those listed
SYNC_TIMEOUT = 10.0
#: seconds between looks at informers that had not listed within SYNC_TIMEOUT
PENDING_RECHECK = 5.0
NEEDED_VERBS = frozenset({"list", "watch", "delete", "get"})


def by_uid(obj: dict[str, Any]) -> Iterable[str]:
    uid = (obj.get("metadata") or {}).get("uid")
    return [uid] if isinstance(uid, str) and uid else []


@dataclass
class Node:
    """One object of the graph, as its metadata says."""

    uid: str
    resource: ApiResource
    namespace: str
    name: str
    owners: list[dict[str, Any]] = field(default_factory=list)
    finalizers: list[str] = field(default_factory=list)
    deleting: bool = False
    resource_version: str = ""

    @classmethod
    def of(cls, resource: ApiResource, obj: dict[str, Any]) -> Node:
        meta = obj.get("metadata") or {}
        return cls(meta.get("uid", ""), resource, meta.get("namespace", ""), meta.get("name", ""),
                   owner_refs(obj), list(meta.get("finalizers") or []),
                   bool(meta.get("deletionTimestamp")), meta.get("resourceVersion", ""))

    @property
    def path(self) -> str:
        r = self.resource
        return resource_path(r.group, r.version, r.plural, self.namespace if r.namespaced else "",
                             self.name)


def owner_refs(obj: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [o for o in ((obj or {}).get("metadata") or {}).get("ownerReferences") or []
            if isinstance(o, dict)]


def needs_work(obj: dict[str, Any]) -> bool:
    """Has owners to check, or is an owner being deleted with Orphan or Foreground."""
    meta = obj.get("metadata") or {}
    return bool(owner_refs(obj)) or (bool(meta.get("deletionTimestamp")) and bool(
        {"orphan", "foregroundDeletion"} & set(meta.get("finalizers") or [])))


class GarbageCollector(Controller):
    name = "garbage-collector"
    default_workers = 4
    backoff = (0.05, 10.0)
    sync_timeout: ClassVar[float] = SYNC_TIMEOUT

    def declare(self, b: Builder) -> None:
        self.crds = b.watches("apiextensions.k8s.io", "v1", "customresourcedefinitions",
                              self._crd_changed, metadata_only=True)
        #: (group, kind) -> resource, to find an owner reference's resource
        self.kinds: dict[tuple[str, str], ApiResource] = {}
        #: the graph: resources whose informers have listed and are acted on
        self.monitors: dict[GVR, tuple[ApiResource, Informer]] = {}
        #: resources discovered whose informers have not listed yet
        self.pending: dict[GVR, tuple[ApiResource, Informer]] = {}
        #: shared informers this controller has put its handler on (once each)
        self._handled: set[Informer] = set()

    def _crd_changed(self, kind: str, obj: dict[str, Any],
                     old: dict[str, Any] | None) -> Iterable[str]:
        if self.crds.synced.is_set():  # the first list is covered by on_synced's discovery
            self.queue.add_after(RESOURCES, SETTLE_SECONDS)
        return ()

    async def on_synced(self) -> None:
        self.queue.add(RESOURCES)

    # -- resource set ------------------------------------------------------------------------
    async def _sync_resources(self) -> Result:
        """Discover the deletable resources; monitor new ones once their informers listed."""
        resources = [r for r in await server_resources(self.client) if NEEDED_VERBS <= r.verbs]
        wanted = {(r.group, r.version, r.plural): r for r in resources}
        self.kinds = {(r.group, r.kind): r for r in resources}
        for table in (self.monitors, self.pending):
            for gvr in [g for g in table if g not in wanted]:
                _, inf = table.pop(gvr)  # served no more: its objects leave the graph
                self._handled.discard(inf)
                self.factory.drop_resource(*gvr)
        new: list[Informer] = []
        for gvr, r in wanted.items():
            for table in (self.monitors, self.pending):
                if gvr in table:
                    table[gvr] = (r, table[gvr][1])
                    break
            else:
                inf = self._informer(gvr)
                if inf not in self._handled:
                    self._handled.add(inf)
                    inf.add_handler(lambda kind, obj, old, gvr=gvr, inf=inf: self._on_event(
                        gvr, inf, kind, obj, old))
                new.append(inf)
                self.pending[gvr] = (r, inf)
        waiting = [asyncio.ensure_future(inf.wait_for_sync()) for inf in new
                   if not inf.synced.is_set()]
        if waiting:
            _, late = await asyncio.wait(waiting, timeout=self.sync_timeout)
            for task in late:
                task.cancel()
        for gvr, (r, inf) in list(self.pending.items()):
            if inf.synced.is_set():
                del self.pending[gvr]
                self._monitor(gvr, r, inf)
        if self.pending:
            log.info("garbage collector: waiting for the first list of %s",
                     ", ".join("/".join(p for p in gvr if p) for gvr in sorted(self.pending)))
            return requeue_after(PENDING_RECHECK)
        return DONE

    def _informer(self, gvr: GVR) -> Informer:
        """Metadata is all the graph needs; the factory hands out the full informer instead
        when a controller reads one (one watch, not two)."""
        return self.factory.informer(*gvr, metadata_only=True, indexers={UID: by_uid})

    def _monitor(self, gvr: GVR, r: ApiResource, inf: Informer) -> None:
        """Act on this resource from now on: its events, and what its cache holds already."""
        self.monitors[gvr] = (r, inf)
        for obj in inf.list():
            uid = (obj.get("metadata") or {}).get("uid")
            if uid and needs_work(obj):
                self.queue.add(uid)

    # -- graph -------------------------------------------------------------------------------
    def _on_event(self, gvr: GVR, inf: Informer, kind: str, obj: dict[str, Any],
                  old: dict[str, Any] | None) -> None:
        if self.monitors.get(gvr, (None, None))[1] is not inf:
            return  # not listed yet (_monitor enqueues its cache), or no longer served
        uid = (obj.get("metadata") or {}).get("uid")
        if not uid:
            return
        if kind == "DELETED":
            for ref in owner_refs(old) + owner_refs(obj):  # a foreground owner may now finish
                if isinstance(ref.get("uid"), str) and ref["uid"]:
                    self.queue.add(ref["uid"])
            for dep in self._dependents(uid):
                self.queue.add(dep.uid)
            return
        if needs_work(obj):
            self.queue.add(uid)

    def _node(self, uid: str) -> Node | None:
        for r, inf in self.monitors.values():
            found = inf.by_index(UID, uid)
            if found:
                return Node.of(r, found[0])
        return None

    def _dependents(self, uid: str) -> list[Node]:
        """Objects with an owner reference to ``uid`` (each once, whichever resource lists it)."""
        seen: dict[str, Node] = {}
        for r, inf in self.monitors.values():
            for obj in inf.by_index(ix.OWNER_UID, uid):
                node = Node.of(r, obj)
                if node.uid:
                    seen.setdefault(node.uid, node)
        return list(seen.values())

    # -- reconcile ---------------------------------------------------------------------------
    async def reconcile(self, key: str) -> Result:
        if key == RESOURCES:
            return await self._sync_resources()
        node = self._node(key)
        if node is None:
            return DONE
        if node.deleting and "orphan" in node.finalizers:
            await self._orphan_dependents(node)
            return DONE
        if node.deleting and "foregroundDeletion" in node.finalizers:
            await self._foreground(node)
            return DONE
        if node.owners:
            await self._check_owners(node)
        return DONE

    async def _owner_state(self, node: Node, ref: dict[str, Any]) -> str:
        """'solid', 'dangling' or 'foreground' (owner waiting for its dependents)."""
        owner = self._node(ref.get("uid", ""))
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
        for dep in self._dependents(owner.uid):
            keep = [ref for ref in dep.owners if ref.get("uid") != owner.uid]
            await self._patch_owner_refs(dep, keep)
        await self._remove_finalizer(owner, "orphan")

    async def _foreground(self, owner: Node) -> None:
        """Delete the dependents; the owner's finalizer goes once none blocks it (each
        dependent's DELETED event requeues the owner)."""
        blocking = []
        for dep in self._dependents(owner.uid):
            ref = next((r for r in dep.owners if r.get("uid") == owner.uid), {})
            if not dep.deleting:
                await self._delete(dep, "Foreground" if ref.get("blockOwnerDeletion")
                                   else "Background")
            if ref.get("blockOwnerDeletion"):
                blocking.append(dep)
        if not blocking:
            await self._remove_finalizer(owner, "foregroundDeletion")

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
