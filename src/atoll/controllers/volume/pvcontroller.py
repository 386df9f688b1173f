"""The PersistentVolume controller: claims bound to volumes, phases kept, volumes reclaimed.

As kube-controller-manager's ``persistentvolume-binder``, over one queue holding both kinds
(a claim's key is ``namespace/name``, a volume's is its name: names never hold a ``/``).

- An unbound claim takes the best volume ``binder.find_match`` picks (pre-bound ones
  first).  The bind writes the volume's half first (``spec.claimRef`` with the claim's uid,
  ``pv.kubernetes.io/bound-by-controller``, phase Bound) and then the claim's
  (``spec.volumeName``, ``pv.kubernetes.io/bind-completed``, status Bound with the volume's
  capacity and access modes).  Each step is idempotent, so a crash between them is finished
  by the next sync, and the volume's claimRef, written with a resourceVersion precondition,
  decides a race: a volume is never bound to two claims.
- No volume fits: a claim of a class waits (``WaitForFirstConsumer`` until the scheduler
  records ``volume.kubernetes.io/selected-node``), then is marked for its class's provisioner
  (``volume.kubernetes.io/storage-provisioner``, and the beta twin); a claim without a class
  waits for an administrator's volume.  Each state says so in an Event, worded as upstream.
- A volume whose claim is gone is Released; ``Retain`` keeps it, ``Delete`` deletes the
  object (the host agent removes the data of volumes that no longer exist).
- A bound claim whose volume is gone, or taken by another claim, is Lost.

Nothing polls: claims are re-tried when a volume, a class, or the claim itself changes.
"""

from __future__ import annotations

import logging
from typing import Iterable

from atoll.api import errors
from atoll.api.resources.volumes import default_class, is_default_class
from atoll.api.timestamps import rfc3339
from atoll.client.controller import DONE, Builder, Controller, Result
from atoll.client.events import NORMAL, WARNING
from atoll.controllers.volume import binder
from atoll.controllers.volume.binder import Obj, annotations, meta, spec

log = logging.getLogger(__name__)
CLAIM_REF = "claim-ref"
UNBOUND_BY_CLASS = "unbound-by-class"
EXTERNAL_WAIT = ("Waiting for a volume to be created either by the external provisioner '{}' or "
                 "manually by the system administrator. If volume creation is delayed, please "
                 "verify that the provisioner is running and correctly registered.")


def _claim_ref_key(pv: Obj) -> Iterable[str]:
    ref = spec(pv).get("claimRef")
    if isinstance(ref, dict) and ref.get("name"):
        return [f"{ref.get('namespace') or ''}/{ref['name']}"]
    return []


def _unbound_class(claim: Obj) -> Iterable[str]:
    """Claims still looking for a volume, filed under their class."""
    return [] if spec(claim).get("volumeName") else [binder.claim_class(claim)]


def claim_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}"


def volume_path(name: str) -> str:
    return f"/api/v1/persistentvolumes/{name}"


class PersistentVolumeController(Controller):
    name = "persistentvolume-binder"
    events_component = "persistentvolume-controller"
    default_workers = 2

    def declare(self, b: Builder) -> None:
        self.claims = b.primary("", "v1", "persistentvolumeclaims",
                                indexers={UNBOUND_BY_CLASS: _unbound_class})
        self.volumes = b.primary("", "v1", "persistentvolumes",
                                 indexers={CLAIM_REF: _claim_ref_key})
        b.watches("", "v1", "persistentvolumeclaims", self._volumes_of_claim)
        b.watches("", "v1", "persistentvolumes", self._claims_of_volume)
        self.classes = b.watches("storage.k8s.io", "v1", "storageclasses", self._claims_of_class)
        self.nodes = b.reads("", "v1", "nodes")

    # -- mappers ------------------------------------------------------------------------------
    def _volumes_of_claim(self, kind: str, claim: Obj, old: Obj | None) -> Iterable[str]:
        keys = {v["metadata"]["name"] for v in self.volumes.by_index(CLAIM_REF,
                                                                     binder.claim_key(claim))}
        name = spec(claim).get("volumeName")
        if isinstance(name, str) and name:
            keys.add(name)
        return keys

    def _claims_of_volume(self, kind: str, pv: Obj, old: Obj | None) -> Iterable[str]:
        keys = set(_claim_ref_key(pv))
        if kind != "DELETED" and spec(pv).get("claimRef") is None:
            # an available volume may be what a waiting claim of its class needs
            keys.update(binder.claim_key(c) for c in
                        self.claims.by_index(UNBOUND_BY_CLASS, binder.volume_class(pv)))
        return keys

    def _claims_of_class(self, kind: str, sc: Obj, old: Obj | None) -> Iterable[str]:
        names = [meta(sc).get("name", "")]
        if kind != "DELETED" and is_default_class(sc):
            names.append("")  # claims without a class may now get this one
        return [binder.claim_key(c) for n in names
                for c in self.claims.by_index(UNBOUND_BY_CLASS, n)]

    async def reconcile(self, key: str) -> Result:
        if "/" in key:
            claim = self.claims.get(key)
            if claim is not None:
                await self.sync_claim(claim)
        else:
            volume = self.volumes.get(key)
            if volume is not None:
                await self.sync_volume(volume)
        return DONE

    # -- claims -------------------------------------------------------------------------------
    async def sync_claim(self, claim: Obj) -> None:
        name = spec(claim).get("volumeName") or ""
        if binder.BIND_COMPLETED not in annotations(claim):
            if name:
                await self._sync_prebound_claim(claim, name)
            else:
                await self._sync_unbound_claim(claim)
            return
        volume = self.volumes.get(name) if name else None
        if not name:
            await self._lost(claim, "ClaimLost", "Bound claim has lost reference to "
                                                 "PersistentVolume. Data on the volume is lost!")
        elif volume is None:
            await self._lost(claim, "ClaimLost", "Bound claim has lost its PersistentVolume. "
                                                 "Data on the volume is lost!")
        elif spec(volume).get("claimRef") is None or binder.is_bound_to(volume, claim):
            await self.bind(volume, claim)
        else:
            await self._lost(claim, "ClaimMisbound", "Two claims are bound to the same volume, "
                                                     "this one is bound incorrectly")

    async def _sync_unbound_claim(self, claim: Obj) -> None:
        if spec(claim).get("storageClassName") is None and \
                binder.BETA_CLASS not in annotations(claim):
            # made before any class was the default: it gets the default now (upstream's
            # retroactive default StorageClass assignment)
            name = default_class(self.classes.list())
            if name is not None:
                await self._patch_claim(claim, {"spec": {"storageClassName": name}})
                return  # the change brings the claim back
        klass = binder.claim_class(claim)
        sc = self.classes.get(klass) if klass else None
        delay = sc is not None and sc.get("volumeBindingMode") == binder.WAIT_FOR_FIRST_CONSUMER
        node = annotations(claim).get(binder.SELECTED_NODE) if delay else None
        labels = None
        if node:
            obj = self.nodes.get(node)
            labels = dict(meta(obj).get("labels") or {}) if obj is not None else None
        match = binder.find_match(claim, self.volumes.list(), node=node or None,
                                  node_labels=labels, delay_binding=delay)
        if match is not None:
            await self.bind(match, claim)
            return
        await self._claim_phase(claim, "Pending")
        if not klass:
            self.events.record(claim, NORMAL, "FailedBinding", "no persistent volumes available "
                                                               "for this claim and no storage "
                                                               "class is set")
        elif sc is None:
            self.events.record(claim, WARNING, "ProvisioningFailed",
                               f'storageclass.storage.k8s.io "{klass}" not found')
        elif delay and not node:
            self.events.record(claim, NORMAL, "WaitForFirstConsumer",
                               "waiting for first consumer to be created before binding")
        else:
            await self._provision(claim, sc)

    async def _provision(self, claim: Obj, sc: Obj) -> None:
        """Hand the claim to its class's provisioner (there are no in-tree ones here)."""
        provisioner = sc.get("provisioner") or ""
        if provisioner == binder.NO_PROVISIONER or provisioner.startswith("kubernetes.io/"):
            self.events.record(claim, WARNING, "ProvisioningFailed",
                               f"no volume plugin matched name: {provisioner}")
            return
        ann = annotations(claim)
        if ann.get(binder.STORAGE_PROVISIONER) != provisioner or \
                ann.get(binder.BETA_STORAGE_PROVISIONER) != provisioner:
            await self._patch_claim(claim, {"metadata": {"annotations": {
                binder.STORAGE_PROVISIONER: provisioner,
                binder.BETA_STORAGE_PROVISIONER: provisioner}}})
        self.events.record(claim, NORMAL, "ExternalProvisioning", EXTERNAL_WAIT.format(provisioner))

    async def _sync_prebound_claim(self, claim: Obj, name: str) -> None:
        """The user named the volume (or our first half is written and the claim's is not)."""
        volume = self.volumes.get(name)
        if volume is None:
            await self._claim_phase(claim, "Pending")
            return
        if spec(volume).get("claimRef") is None:
            why = binder.mismatch(volume, claim)
            if why:
                await self._claim_phase(claim, "Pending")
                self.events.record(claim, WARNING, "VolumeMismatch",
                                   f'Cannot bind to requested volume "{name}": {why}')
                return
            await self.bind(volume, claim)
        elif binder.is_bound_to(volume, claim):
            await self.bind(volume, claim)
        else:
            await self._claim_phase(claim, "Pending")
            self.events.record(claim, WARNING, "FailedBinding",
                               f'volume "{name}" already bound to a different claim.')

    async def _lost(self, claim: Obj, reason: str, message: str) -> None:
        if (claim.get("status") or {}).get("phase") != "Lost":
            self.events.record(claim, WARNING, reason, message)
        await self._claim_phase(claim, "Lost")

    # -- the bind, in upstream's order --------------------------------------------------------
    async def bind(self, volume: Obj, claim: Obj) -> None:
        vname = meta(volume)["name"]
        ref = spec(volume).get("claimRef")
        if not isinstance(ref, dict) or ref.get("uid") != meta(claim).get("uid"):
            patch: Obj = {"spec": {"claimRef": binder.claim_ref(claim)}}
            if ref is None:
                patch["metadata"] = {"annotations": {binder.BOUND_BY_CONTROLLER: "yes"}}
            volume = await self._patch_volume(volume, patch)
        await self._volume_phase(volume, "Bound")
        c_ann = annotations(claim)
        if spec(claim).get("volumeName") != vname or binder.BIND_COMPLETED not in c_ann:
            c_patch: Obj = {"spec": {"volumeName": vname},
                            "metadata": {"annotations": {binder.BIND_COMPLETED: "yes"}}}
            if not spec(claim).get("volumeName"):
                c_patch["metadata"]["annotations"][binder.BOUND_BY_CONTROLLER] = "yes"
            claim = await self._patch_claim(claim, c_patch)
        vspec = spec(volume)
        have = claim.get("status") or {}
        status = {"phase": "Bound", "accessModes": vspec.get("accessModes") or []}
        if have.get("phase") != "Bound" or not have.get("capacity"):
            # once Bound, the capacity is the expansion's to change (the host writes it when
            # the data has grown): a volume grown by the resizer is not yet a claim grown
            status["capacity"] = dict(vspec.get("capacity") or {})
        if any(have.get(k) != v for k, v in status.items()):
            await self.client.patch(claim_path(meta(claim)["namespace"], meta(claim)["name"])
                                    + "/status", {"status": status})

    # -- volumes ------------------------------------------------------------------------------
    async def sync_volume(self, volume: Obj) -> None:
        ref = spec(volume).get("claimRef")
        if not isinstance(ref, dict):
            await self._volume_phase(volume, "Available")
            return
        key = f"{ref.get('namespace') or ''}/{ref.get('name') or ''}"
        if not ref.get("uid"):
            await self._volume_phase(volume, "Available")  # pre-bound: the claim's sync binds
            self.queue.add(key)
            return
        claim = await self._current_claim(key, ref["uid"])
        if claim is None:
            await self._released(volume)
            return
        claimed = spec(claim).get("volumeName") or ""
        if not claimed:
            if (volume.get("status") or {}).get("phase") in (None, "Pending"):
                await self._volume_phase(volume, "Available")
            self.queue.add(key)  # the claim's half is not written yet
        elif claimed == meta(volume)["name"]:
            await self._volume_phase(volume, "Bound")
        elif annotations(volume).get(binder.BOUND_BY_CONTROLLER):
            # we bound it, the claim went to another volume: give this one back
            volume = await self._patch_volume(volume, {"spec": {"claimRef": None}, "metadata": {
                "annotations": {binder.BOUND_BY_CONTROLLER: None}}})
            await self._volume_phase(volume, "Available")

    async def _current_claim(self, key: str, uid: str) -> Obj | None:
        """The claim a volume's ref names, if it still exists; the cache may lag behind a
        fresh claim, so its absence is checked with the API before releasing anything."""
        claim = self.claims.get(key)
        if claim is None:
            namespace, name = key.split("/", 1)
            try:
                claim = await self.client.get(claim_path(namespace, name))
            except errors.NotFound:
                return None
        return claim if meta(claim).get("uid") == uid else None

    async def _released(self, volume: Obj) -> None:
        phase = (volume.get("status") or {}).get("phase")
        if phase == "Failed":
            return
        if phase != "Released":
            volume = await self._volume_phase(volume, "Released")
        policy = spec(volume).get("persistentVolumeReclaimPolicy") or "Retain"
        name = meta(volume)["name"]
        if policy == "Delete":
            if meta(volume).get("deletionTimestamp"):
                return
            try:
                await self.client.delete(volume_path(name), {
                    "apiVersion": "v1", "kind": "DeleteOptions",
                    "preconditions": {"uid": meta(volume).get("uid")}})
            except (errors.NotFound, errors.Conflict):
                pass
        elif policy == "Recycle":
            self.events.record(volume, WARNING, "VolumeFailedRecycle",
                               "Recycle is not supported: use a Delete or Retain policy")
            await self._volume_phase(volume, "Failed", "Recycle is not supported")

    # -- writes -------------------------------------------------------------------------------
    async def _patch_claim(self, claim: Obj, patch: Obj) -> Obj:
        m = meta(claim)
        patch.setdefault("metadata", {})["resourceVersion"] = m.get("resourceVersion", "")
        return await self.client.patch(claim_path(m["namespace"], m["name"]), patch)

    async def _patch_volume(self, volume: Obj, patch: Obj) -> Obj:
        patch.setdefault("metadata", {})["resourceVersion"] = meta(volume).get("resourceVersion",
                                                                               "")
        return await self.client.patch(volume_path(meta(volume)["name"]), patch)

    async def _claim_phase(self, claim: Obj, phase: str) -> None:
        if (claim.get("status") or {}).get("phase") == phase:
            return
        m = meta(claim)
        await self.client.patch(claim_path(m["namespace"], m["name"]) + "/status",
                                {"status": {"phase": phase}})

    async def _volume_phase(self, volume: Obj, phase: str, message: str = "") -> Obj:
        if (volume.get("status") or {}).get("phase") == phase:
            return volume
        status: Obj = {"phase": phase, "lastPhaseTransitionTime": rfc3339()}
        if message:
            status["message"] = message
        return await self.client.patch(volume_path(meta(volume)["name"]) + "/status",
                                       {"status": status})
