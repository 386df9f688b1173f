"""The common snapshot controller: VolumeSnapshots bound to VolumeSnapshotContents, as
external-snapshotter's snapshot-controller does (the data itself is the host's job:
``agent/storage/snapshots.py``, the sidecar's half).

A VolumeSnapshot of a claim (``spec.source.persistentVolumeClaimName``) gets the content
``snapcontent-<snapshot uid>`` (one name per snapshot: a controller killed after the create
finds it again instead of making a second), naming the claim's PV's volume handle, the
class's driver and deletion policy; a snapshot naming no class gets the default class of
that driver written into its spec.  A snapshot of an existing content
(``volumeSnapshotContentName``) binds to it when the content names it back.  The
snapshot's status mirrors the content's: ``boundVolumeSnapshotContentName``,
``readyToUse``, ``creationTime``, ``restoreSize``, ``error``; a claim that is missing, not
Bound or not a CSI volume is an ``error`` in status and an Event, tried again when the
claim changes.

Finalizers, as upstream: the snapshot holds ``volumesnapshot-as-source-protection`` (while
a Pending claim restores from it, deletion waits) and, bound to a Delete content,
``volumesnapshot-bound-protection`` (until that content is gone); a bound content holds
``volumesnapshotcontent-bound-protection`` (the snapshotter lifts it once the data is
deleted, or let go for Retain); the claim holds ``pvc-as-source-protection`` while a
snapshot of it is being cut.  Deleting a snapshot marks its content
``volumesnapshot-being-deleted`` and deletes it for policy Delete; a Retain content stays.
A content whose snapshot is gone is deleted too when its policy is Delete.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any, Iterable

from atoll.api import errors
from atoll.api import snapshots as snap
from atoll.api.quotausage import format_quantity
from atoll.api.timestamps import rfc3339
from atoll.client.controller import DONE, Builder, Controller, Result
from atoll.client.events import NORMAL, WARNING
from atoll.client.status import patch_with_retry, with_finalizer, without_finalizer
from atoll.controllers.volume.binder import Obj, meta, spec

log = logging.getLogger(__name__)
SOURCE_CLAIM = "snapshot-source-claim"
RESTORES_FROM = "restores-from-snapshot"
CONTENT = "content:"
BASE = f"/apis/{snap.GROUP}/{snap.VERSION}"


def snapshot_path(namespace: str, name: str) -> str:
    return f"{BASE}/namespaces/{namespace}/volumesnapshots/{name}"


def content_path(name: str) -> str:
    return f"{BASE}/volumesnapshotcontents/{name}"


def _claim_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}"


def _d(value: Any) -> Obj:
    return value if isinstance(value, dict) else {}


def source_claim(vs: Obj) -> str | None:
    name = _d(spec(vs).get("source")).get("persistentVolumeClaimName")
    return name if isinstance(name, str) and name else None


def _source_claim_keys(vs: Obj) -> Iterable[str]:
    name = source_claim(vs)
    return [f"{meta(vs).get('namespace', '')}/{name}"] if name else []


def restore_source(claim: Obj) -> str | None:
    """The VolumeSnapshot a claim is restored from (``dataSourceRef`` first), if any."""
    for key in ("dataSourceRef", "dataSource"):
        ref = _d(spec(claim).get(key))
        if ref.get("kind") == "VolumeSnapshot" and ref.get("apiGroup") == snap.GROUP and \
                isinstance(ref.get("name"), str) and not ref.get("namespace"):
            return ref["name"]
    return None


def _restore_keys(claim: Obj) -> Iterable[str]:
    name = restore_source(claim)
    return [f"{meta(claim).get('namespace', '')}/{name}"] if name else []


def points_back(content: Obj | None, vs: Obj) -> bool:
    """Both halves of the binding: the content's reference names this very snapshot."""
    if content is None:
        return False
    ref = _d(spec(content).get("volumeSnapshotRef"))
    m = meta(vs)
    return ref.get("name") == m.get("name") and ref.get("namespace") == m.get("namespace") \
        and ref.get("uid") == m.get("uid")


def snapshot_status(content: Obj) -> dict[str, Any]:
    """What a bound snapshot's status says of its content."""
    s = _d(content.get("status"))
    out: dict[str, Any] = {"boundVolumeSnapshotContentName": meta(content)["name"],
                           "readyToUse": s.get("readyToUse") is True}
    if isinstance(s.get("creationTime"), int):
        out["creationTime"] = rfc3339(s["creationTime"] / 1e9)
    if isinstance(s.get("restoreSize"), int):
        out["restoreSize"] = format_quantity(Decimal(s["restoreSize"]), "storage")
    if isinstance(s.get("error"), dict) and not out["readyToUse"]:
        out["error"] = s["error"]
    return out


class ContentError(Exception):
    """The content cannot be made (yet); the message goes to the snapshot's status."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class SnapshotController(Controller):
    name = "snapshot-controller"
    events_component = "snapshot-controller"

    def declare(self, b: Builder) -> None:
        self.snapshots = b.primary(snap.GROUP, snap.VERSION, "volumesnapshots",
                                   indexers={SOURCE_CLAIM: _source_claim_keys})
        self.contents = b.watches(snap.GROUP, snap.VERSION, "volumesnapshotcontents",
                                  self._of_content)
        self.claims = b.watches("", "v1", "persistentvolumeclaims", self._of_claim,
                                indexers={RESTORES_FROM: _restore_keys})
        self.classes = b.watches(snap.GROUP, snap.VERSION, "volumesnapshotclasses",
                                 self._unbound)
        self.volumes = b.reads("", "v1", "persistentvolumes")

    @staticmethod
    def _of_content(kind: str, content: Obj, old: Obj | None) -> Iterable[str]:
        keys = {CONTENT + meta(content)["name"]}
        for c in (content, old or {}):
            ref = _d(spec(c).get("volumeSnapshotRef"))
            if ref.get("name") and ref.get("namespace"):
                keys.add(f"{ref['namespace']}/{ref['name']}")
        return keys

    def _unbound(self, kind: str, klass: Obj, old: Obj | None) -> Iterable[str]:
        """A class appeared or changed: the snapshots still without a content try again."""
        return [f"{meta(v)['namespace']}/{meta(v)['name']}" for v in self.snapshots.list()
                if not _d(v.get("status")).get("boundVolumeSnapshotContentName")]

    def _of_claim(self, kind: str, claim: Obj, old: Obj | None) -> Iterable[str]:
        keys: set[str] = set()
        for c in (claim, old or {}):
            if not c:
                continue
            keys.update(_restore_keys(c))
            ns_name = f"{meta(c).get('namespace', '')}/{meta(c).get('name', '')}"
            keys.update(f"{meta(v)['namespace']}/{meta(v)['name']}"
                        for v in self.snapshots.by_index(SOURCE_CLAIM, ns_name))
        return keys

    async def reconcile(self, key: str) -> Result:
        if key.startswith(CONTENT):
            await self._content(key[len(CONTENT):])
            return DONE
        vs = self.snapshots.get(key)
        if vs is None:
            return DONE
        if meta(vs).get("deletionTimestamp"):
            await self._deleting(vs)
            return DONE
        vs = await self._finalizer(vs, snap.AS_SOURCE_FINALIZER, True)
        source = _d(spec(vs).get("source"))
        try:
            if source.get("volumeSnapshotContentName"):
                content = await self._pre_provisioned(vs, source["volumeSnapshotContentName"])
            else:
                content = await self._dynamic(vs)
        except ContentError as e:
            await self._error(vs, e.reason, str(e))
            return DONE
        await self._sync_status(vs, content)
        if _d(spec(content).get("volumeSnapshotRef")).get("uid") == meta(vs)["uid"]:
            await self._finalizer(vs, snap.BOUND_FINALIZER,
                                  spec(content).get("deletionPolicy") == "Delete")
        if (content.get("status") or {}).get("readyToUse") is True:
            await self._release_claim(vs)
        return DONE

    # -- binding ---------------------------------------------------------------------------------
    async def _pre_provisioned(self, vs: Obj, name: str) -> Obj:
        content = self.contents.get(name)
        if content is None:
            raise ContentError("SnapshotContentMissing", "VolumeSnapshotContent is missing")
        ref = _d(spec(content).get("volumeSnapshotRef"))
        m = meta(vs)
        if ref.get("name") != m["name"] or ref.get("namespace") != m["namespace"] or \
                (ref.get("uid") and ref["uid"] != m["uid"]):
            raise ContentError("SnapshotMisbound", f"VolumeSnapshotContent {name} is bound to "
                                                   "a different snapshot")
        if not ref.get("uid"):
            content = await self.client.patch(content_path(name), {
                "metadata": {"resourceVersion": meta(content).get("resourceVersion", "")},
                "spec": {"volumeSnapshotRef": {"uid": m["uid"]}}})
        return content

    async def _dynamic(self, vs: Obj) -> Obj:
        m = meta(vs)
        name = snap.content_name(m["uid"])
        content = self.contents.get(name)
        if content is not None:
            return content
        claim_name = source_claim(vs) or ""
        pv = self._claim_volume(vs, claim_name)
        klass = await self._class_of(vs, pv)
        csi = _d(spec(pv).get("csi"))
        await patch_with_retry(self.client, _claim_path(m["namespace"], claim_name),
                               self.claims.get(f"{m['namespace']}/{claim_name}") or {},
                               with_finalizer(snap.PVC_AS_SOURCE_FINALIZER))
        body = {"apiVersion": snap.API_VERSION, "kind": "VolumeSnapshotContent",
                "metadata": {"name": name},
                "spec": {"volumeSnapshotRef": {
                    "kind": "VolumeSnapshot", "apiVersion": snap.API_VERSION,
                    "namespace": m["namespace"], "name": m["name"], "uid": m["uid"]},
                    "deletionPolicy": klass.get("deletionPolicy"),
                    "driver": klass.get("driver"),
                    "volumeSnapshotClassName": meta(klass)["name"],
                    "source": {"volumeHandle": csi["volumeHandle"]},
                    "sourceVolumeMode": spec(pv).get("volumeMode") or "Filesystem"}}
        try:
            content = await self.client.create(f"{BASE}/volumesnapshotcontents", body)
        except errors.AlreadyExists:
            content = await self.client.get(content_path(name))
        self.events.record(vs, NORMAL, "CreatingSnapshot", "Waiting for a snapshot "
                           f"{m['namespace']}/{m['name']} to be created by the CSI driver.")
        return content

    def _claim_volume(self, vs: Obj, claim_name: str) -> Obj:
        ns = meta(vs)["namespace"]
        prefix = f"failed to get input parameters to create snapshot {meta(vs)['name']}: "
        claim = self.claims.get(f"{ns}/{claim_name}")
        if claim is None:
            raise ContentError("SnapshotContentCreationFailed", prefix +
                               f'persistentvolumeclaim "{claim_name}" not found')
        if meta(claim).get("deletionTimestamp"):
            raise ContentError("SnapshotContentCreationFailed", prefix +
                               f"the PVC {claim_name} is being deleted")
        volume = spec(claim).get("volumeName")
        if (claim.get("status") or {}).get("phase") != "Bound" or not volume:
            raise ContentError("SnapshotContentCreationFailed", prefix +
                               f"the PVC {claim_name} is not yet bound to a PV, will not "
                               "attempt to take a snapshot")
        pv = self.volumes.get(volume)
        if pv is None or _d(spec(pv).get("claimRef")).get("uid") != meta(claim).get("uid"):
            raise ContentError("SnapshotContentCreationFailed", prefix +
                               f"the PV {volume} of PVC {claim_name} is not bound to it")
        csi = _d(spec(pv).get("csi"))
        if not csi.get("driver") or not csi.get("volumeHandle"):
            raise ContentError("SnapshotContentCreationFailed", prefix +
                               f"the PV {volume} is not a CSI volume: it cannot be snapshotted")
        return pv

    async def _class_of(self, vs: Obj, pv: Obj) -> Obj:
        driver = _d(spec(pv).get("csi")).get("driver")
        name = spec(vs).get("volumeSnapshotClassName")
        if name:
            klass = self.classes.get(name)
            if klass is None:
                raise ContentError("GetSnapshotClassFailed", "failed to get snapshot class "
                                   f'with error volumesnapshotclass.snapshot.storage.k8s.io '
                                   f'"{name}" not found')
            if klass.get("driver") != driver:
                raise ContentError("SnapshotContentCreationFailed",
                                   f"the snapshot class {name} is for driver "
                                   f"{klass.get('driver')}, the volume's driver is {driver}")
            return klass
        defaults = [c for c in self.classes.list()
                    if snap.is_default_class(c) and c.get("driver") == driver]
        if len(defaults) != 1:
            raise ContentError("SetDefaultSnapshotClassFailed",
                               f"cannot find default snapshot class for driver {driver}"
                               if not defaults else
                               f"{len(defaults)} default snapshot classes exist for driver "
                               f"{driver}")
        m = meta(vs)
        await self.client.patch(snapshot_path(m["namespace"], m["name"]), {
            "spec": {"volumeSnapshotClassName": meta(defaults[0])["name"]}})
        return defaults[0]

    # -- status ----------------------------------------------------------------------------------
    async def _sync_status(self, vs: Obj, content: Obj) -> None:
        want = snapshot_status(content)
        have = _d(vs.get("status"))
        change = {k: v for k, v in want.items() if have.get(k) != v}
        if "error" in have and "error" not in want:
            change["error"] = None
        if not change:
            return
        m = meta(vs)
        await self.client.patch(snapshot_path(m["namespace"], m["name"]) + "/status",
                                {"status": change})
        if change.get("readyToUse") is True:
            self.events.record(vs, NORMAL, "SnapshotReady",
                               f"Snapshot {m['namespace']}/{m['name']} is ready to use.")

    async def _error(self, vs: Obj, reason: str, message: str) -> None:
        current = _d(_d(vs.get("status")).get("error")).get("message")
        if current == message:
            return
        m = meta(vs)
        self.events.record(vs, WARNING, reason, message)
        await self.client.patch(snapshot_path(m["namespace"], m["name"]) + "/status", {
            "status": {"readyToUse": False, "error": {"message": message, "time": rfc3339()}}})

    async def _finalizer(self, vs: Obj, finalizer: str, want: bool) -> Obj:
        m = meta(vs)
        change = with_finalizer(finalizer) if want else without_finalizer(finalizer)
        return await patch_with_retry(self.client, snapshot_path(m["namespace"], m["name"]), vs,
                                      change)

    async def _release_claim(self, vs: Obj) -> None:
        """Lift ``pvc-as-source-protection`` once no snapshot of the claim is being cut."""
        claim_name = source_claim(vs)
        if not claim_name:
            return
        key = f"{meta(vs)['namespace']}/{claim_name}"
        claim = self.claims.get(key)
        if claim is None or snap.PVC_AS_SOURCE_FINALIZER not in (meta(claim).get("finalizers")
                                                                 or []):
            return
        for other in self.snapshots.by_index(SOURCE_CLAIM, key):
            if meta(other)["uid"] == meta(vs)["uid"] or meta(other).get("deletionTimestamp"):
                continue
            content = self.contents.get(snap.content_name(meta(other)["uid"]))
            if content is None or (content.get("status") or {}).get("readyToUse") is not True:
                return
        await patch_with_retry(self.client, _claim_path(meta(vs)["namespace"], claim_name),
                               claim, without_finalizer(snap.PVC_AS_SOURCE_FINALIZER))

    # -- deletion --------------------------------------------------------------------------------
    async def _deleting(self, vs: Obj) -> None:
        finalizers = meta(vs).get("finalizers") or []
        if snap.AS_SOURCE_FINALIZER not in finalizers and snap.BOUND_FINALIZER not in finalizers:
            return
        name = _d(vs.get("status")).get("boundVolumeSnapshotContentName")
        if not name and source_claim(vs):
            name = snap.content_name(meta(vs)["uid"])
        content = self.contents.get(name) if name else None
        if not points_back(content, vs):
            content = None
        ns = meta(vs)["namespace"]
        if content is not None and any(
                (c.get("status") or {}).get("phase") == "Pending"
                for c in self.claims.by_index(RESTORES_FROM, f"{ns}/{meta(vs)['name']}")):
            self.events.record(vs, WARNING, "SnapshotDeletePending",
                               "Snapshot is being used to restore a PVC")
            return  # the claim's change brings this back
        delete = content is not None and spec(content).get("deletionPolicy") == "Delete"
        if content is not None:
            if snap.BEING_DELETED not in (meta(content).get("annotations") or {}):
                content = await self.client.patch(content_path(meta(content)["name"]), {
                    "metadata": {"annotations": {snap.BEING_DELETED: "yes"}}})
            if delete and not meta(content).get("deletionTimestamp"):
                try:
                    await self.client.delete(content_path(meta(content)["name"]))
                except errors.NotFound:
                    content = None
        vs = await self._finalizer(vs, snap.AS_SOURCE_FINALIZER, False)
        await self._release_claim(vs)
        if delete and content is not None and self.contents.get(meta(content)["name"]):
            return  # the bound finalizer goes with the content (its DELETED event)
        await self._finalizer(vs, snap.BOUND_FINALIZER, False)

    async def _content(self, name: str) -> None:
        content = self.contents.get(name)
        if content is None:
            return
        m = meta(content)
        ref = _d(spec(content).get("volumeSnapshotRef"))
        if not ref.get("uid"):
            return  # pre-provisioned, not bound yet: the snapshot's sync binds it
        if not m.get("deletionTimestamp") and snap.CONTENT_FINALIZER not in (m.get("finalizers")
                                                                              or []):
            content = await patch_with_retry(self.client, content_path(name), content,
                                             with_finalizer(snap.CONTENT_FINALIZER))
            m = meta(content)
        vs = self.snapshots.get(f"{ref.get('namespace')}/{ref.get('name')}")
        if vs is not None and meta(vs).get("uid") == ref["uid"]:
            return
        if spec(content).get("deletionPolicy") != "Delete":
            return  # Retain: the content and its data outlive the snapshot
        if snap.BEING_DELETED not in (m.get("annotations") or {}):
            await self.client.patch(content_path(name), {
                "metadata": {"annotations": {snap.BEING_DELETED: "yes"}}})
        if not m.get("deletionTimestamp"):
            try:
                await self.client.delete(content_path(name))
            except errors.NotFound:
                pass
