"""The provisioner of ``storage.atoll.dev/local``, controller side: claims become PVs on a host.

It acts as a CSI external-provisioner does for its driver: on a claim the PV controller has
marked for it (``volume.kubernetes.io/storage-provisioner``) it picks the host (the
scheduler's ``volume.kubernetes.io/selected-node`` for ``WaitForFirstConsumer`` classes; for
``Immediate`` ones the Ready host with the most published free space) and creates a
PersistentVolume ``pvc-<claim uid>`` pinned to it by node affinity, pre-bound to the claim;
the PV controller then binds both.  The host agent makes the data on first use.

The name makes it idempotent: a second create is AlreadyExists, so a provisioner killed at
any point never makes two volumes for one claim.  A request larger than the host's published
``CSIStorageCapacity`` is a ``ProvisioningFailed`` Event naming both sizes; for a selected
node the annotation is then removed, as the external-provisioner does, so the scheduler picks
again (and its capacity filter now keeps that host out).  A host that publishes nothing is
assumed to have room.

A claim with a data source (``datasource.py``: a VolumeSnapshot to restore, a claim to
clone) is provisioned on the host holding that data, at the claim's size (at least the
source's), its PV naming the source in ``spec.csi.volumeAttributes`` so the host fills the
volume from it; a source not usable yet is a ``ProvisioningFailed`` Event naming why, and
the claim is looked at again when the snapshot, its content or the source claim changes.
For ``WaitForFirstConsumer`` a selected node other than the source's host is given back to
the scheduler, as upstream does when a topology cannot be served.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any, Iterable

from atoll.api import errors
from atoll.client.controller import DONE, Builder, Controller, Result
from atoll.client.events import NORMAL, WARNING
from atoll.api import snapshots as snap
from atoll.controllers.volume import binder, datasource
from atoll.controllers.volume.binder import LOCAL_PROVISIONER, Obj, annotations, meta, spec

log = logging.getLogger(__name__)
PENDING_OURS = "pending-local"
DATA_SOURCE = "data-source"


def _pending_ours(claim: Obj) -> Iterable[str]:
    ann = annotations(claim)
    if spec(claim).get("volumeName") or LOCAL_PROVISIONER not in (
            ann.get(binder.STORAGE_PROVISIONER), ann.get(binder.BETA_STORAGE_PROVISIONER)):
        return []
    return ["1"]


def _ready(node: Obj) -> bool:
    if spec(node).get("unschedulable"):
        return False
    return any(isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or [])


def volume_for(claim: Obj, sc: Obj, node: str,
               attributes: dict[str, str] | None = None) -> Obj:
    """The PersistentVolume provisioned for ``claim`` on ``node`` (filled from the data
    source ``attributes`` name, if any)."""
    m, cspec = meta(claim), spec(claim)
    name = f"pvc-{m['uid']}"
    mode = binder.volume_mode(claim)
    csi: dict[str, Any] = {"driver": LOCAL_PROVISIONER, "volumeHandle": name}
    if mode == "Filesystem":
        csi["fsType"] = "ext4"
    if attributes:
        csi["volumeAttributes"] = dict(attributes)
    return {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {binder.PROVISIONED_BY: LOCAL_PROVISIONER}},
        "spec": {
            "capacity": {"storage": cspec["resources"]["requests"]["storage"]},
            "accessModes": list(cspec.get("accessModes") or []),
            "volumeMode": mode,
            "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy") or "Delete",
            "storageClassName": meta(sc)["name"],
            "claimRef": {"kind": "PersistentVolumeClaim", "namespace": m["namespace"],
                         "name": m["name"], "uid": m["uid"], "apiVersion": "v1"},
            "csi": csi,
            "nodeAffinity": binder.host_affinity(node),
        },
    }


class LocalProvisioner(Controller):
    name = "local-provisioner"
    events_component = LOCAL_PROVISIONER + "_atoll-controller-manager"

    def declare(self, b: Builder) -> None:
        self.claims = b.primary("", "v1", "persistentvolumeclaims",
                                indexers={PENDING_OURS: _pending_ours,
                                          DATA_SOURCE: datasource.source_key})
        self.claims.add_handler(self._clones_of)
        self.snapshots = b.watches(snap.GROUP, snap.VERSION, "volumesnapshots",
                                   self._restoring_from)
        self.contents = b.watches(snap.GROUP, snap.VERSION, "volumesnapshotcontents",
                                  self._restoring_from_content)
        self.capacities = b.watches("storage.k8s.io", "v1", "csistoragecapacities",
                                    self._all_pending)
        self.nodes = b.watches("", "v1", "nodes", self._all_pending_on_ready)
        self.classes = b.reads("storage.k8s.io", "v1", "storageclasses")
        self.volumes = b.reads("", "v1", "persistentvolumes")

    def _all_pending(self, kind: str, obj: Obj, old: Obj | None) -> Iterable[str]:
        return [binder.claim_key(c) for c in self.claims.by_index(PENDING_OURS, "1")]

    def _waiting_on(self, ns: str, kind: str, name: str) -> list[str]:
        return [binder.claim_key(c) for c in self.claims.by_index(DATA_SOURCE,
                                                                  f"{ns}/{kind}/{name}")]

    def _clones_of(self, kind: str, claim: Obj, old: Obj | None) -> None:
        for key in self._waiting_on(meta(claim).get("namespace", ""), "PersistentVolumeClaim",
                                    meta(claim).get("name", "")):
            self.queue.add(key)

    def _restoring_from(self, kind: str, vs: Obj, old: Obj | None) -> Iterable[str]:
        return self._waiting_on(meta(vs).get("namespace", ""), "VolumeSnapshot",
                                meta(vs).get("name", ""))

    def _restoring_from_content(self, kind: str, content: Obj, old: Obj | None
                                ) -> Iterable[str]:
        ref = spec(content).get("volumeSnapshotRef")
        if not isinstance(ref, dict):
            return []
        return self._waiting_on(str(ref.get("namespace") or ""), "VolumeSnapshot",
                                str(ref.get("name") or ""))

    def _all_pending_on_ready(self, kind: str, node: Obj, old: Obj | None) -> Iterable[str]:
        if old is not None and _ready(old) == _ready(node):
            return []
        return self._all_pending(kind, node, old)

    async def reconcile(self, key: str) -> Result:
        claim = self.claims.get(key)
        if claim is None or not list(_pending_ours(claim)) or meta(claim).get("deletionTimestamp"):
            return DONE
        sc = self.classes.get(binder.claim_class(claim))
        if sc is None or sc.get("provisioner") != LOCAL_PROVISIONER:
            return DONE
        if self.volumes.get(f"pvc-{meta(claim)['uid']}") is not None:
            return DONE  # made already; the PV controller binds it
        want = binder.requested_bytes(claim)
        if want is None:
            return DONE  # validation refuses such claims; an old one is left alone
        try:
            source = datasource.resolve(claim, self.snapshots, self.contents, self.claims,
                                        self.volumes)
        except datasource.SourceError as e:
            self.events.record(claim, WARNING, "ProvisioningFailed",
                               f"failed to provision volume with StorageClass "
                               f"\"{meta(sc)['name']}\": {e}")
            return DONE
        if source is datasource.FOREIGN:
            return DONE  # a volume populator's claim
        wait = sc.get("volumeBindingMode") == binder.WAIT_FOR_FIRST_CONSUMER
        if source is not None:
            node = annotations(claim).get(binder.SELECTED_NODE) or ""
            if wait and not node:
                return DONE
            if wait and node != source.node:
                await self._elsewhere(claim, sc, node, source.node)
                return DONE
            if not await self._fits(claim, sc, source.node, want, reschedule=wait):
                return DONE
            await self._create(claim, sc, source.node, source.attributes)
            return DONE
        if wait:
            node = annotations(claim).get(binder.SELECTED_NODE)
            if not node:
                return DONE
            if not await self._fits(claim, sc, node, want, reschedule=True):
                return DONE
        else:
            found = self._immediate_node(claim, sc, want)
            if found is None:
                return DONE
            node = found
        await self._create(claim, sc, node)
        return DONE

    def _request_text(self, claim: Obj) -> str:
        return str(spec(claim)["resources"]["requests"]["storage"])

    async def _fits(self, claim: Obj, sc: Obj, node: str, want: Decimal,
                    reschedule: bool) -> bool:
        limit = binder.published_capacity(self.capacities.list(), node, meta(sc)["name"])
        if limit is None or want <= limit[0]:
            return True
        self.events.record(claim, WARNING, "ProvisioningFailed",
                           f"failed to provision volume with StorageClass \"{meta(sc)['name']}\""
                           f": requested {self._request_text(claim)} but node {node} has only "
                           f"{limit[1]} available")
        if reschedule:
            await self._unselect(claim)
        return False

    async def _unselect(self, claim: Obj) -> None:
        """Give the claim's node back to the scheduler (it picks again)."""
        m = meta(claim)
        try:
            await self.client.patch(
                f"/api/v1/namespaces/{m['namespace']}/persistentvolumeclaims/{m['name']}",
                {"metadata": {"resourceVersion": m.get("resourceVersion", ""),
                              "annotations": {binder.SELECTED_NODE: None}}})
        except errors.NotFound:
            pass

    async def _elsewhere(self, claim: Obj, sc: Obj, node: str, source_node: str) -> None:
        self.events.record(claim, WARNING, "ProvisioningFailed",
                           f"failed to provision volume with StorageClass \"{meta(sc)['name']}\""
                           f": the data source is on node {source_node}, not on the selected "
                           f"node {node}")
        await self._unselect(claim)

    def _immediate_node(self, claim: Obj, sc: Obj, want: Decimal) -> str | None:
        """The Ready host with the most published room that fits (unpublished hosts last)."""
        klass = meta(sc)["name"]
        best: tuple[int, Decimal, str] | None = None
        sizes = []
        capacities = self.capacities.list()
        for node in self.nodes.list():
            if not _ready(node):
                continue
            name = meta(node).get("name", "")
            limit = binder.published_capacity(capacities, name, klass)
            if limit is not None and want > limit[0]:
                sizes.append(f"{name}: {limit[1]}")
                continue
            rank = (1, limit[0], name) if limit is not None else (0, Decimal(0), name)
            if best is None or rank[:2] > best[:2] or (rank[:2] == best[:2] and name < best[2]):
                best = rank
        if best is not None:
            return best[2]
        what = f"only {', '.join(sorted(sizes))} available" if sizes else "no Ready node"
        self.events.record(claim, WARNING, "ProvisioningFailed",
                           f"failed to provision volume with StorageClass \"{klass}\": requested "
                           f"{self._request_text(claim)} but {what}")
        return None

    async def _create(self, claim: Obj, sc: Obj, node: str,
                      attributes: dict[str, str] | None = None) -> None:
        body = volume_for(claim, sc, node, attributes)
        m = meta(claim)
        self.events.record(claim, NORMAL, "Provisioning", "External provisioner is provisioning "
                                                          f"volume for claim \"{m['namespace']}/"
                                                          f"{m['name']}\"")
        try:
            await self.client.create("/api/v1/persistentvolumes", body)
        except errors.AlreadyExists:
            return
        except errors.Invalid as exc:
            self.events.record(claim, WARNING, "ProvisioningFailed",
                               f"failed to provision volume with StorageClass "
                               f"\"{meta(sc)['name']}\": {exc}")
            return
        self.events.record(claim, NORMAL, "ProvisioningSucceeded",
                           f"Successfully provisioned volume {body['metadata']['name']}")
