"""CRDs every Atoll server serves from the start: the VM Operator's kinds and the volume
snapshot kinds (``snapshot.storage.k8s.io``, with their default class).

They are ordinary CustomResourceDefinition objects in the store (so `kubectl get
crd` shows them and clients discover them as usual), created at start-up when
missing and brought up to date when this version of Atoll defines them
differently.  Several servers starting at once race harmlessly: a create that
finds the CRD there compares and updates instead.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from atoll.api import crdschema, errors, migration, network, snapshots, vmoperator
from atoll.apiserver import conversion, drsbootstrap, snapshotbootstrap
from atoll.apiserver.crds import CRD_PREFIX
from atoll.apiserver.objects import ObjectService, WriteOptions
from atoll.apiserver.registry import Registry

log = logging.getLogger(__name__)
MANAGER = "atoll-apiserver"


def definitions() -> list[dict[str, Any]]:
    return vmoperator.definitions() + snapshots.definitions() + migration.definitions() + \
        network.definitions()


async def ensure(svc: ObjectService, registry: Registry, timeout: float = 10.0) -> None:
    crd_type = registry.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    assert crd_type is not None
    opts = WriteOptions(field_manager=MANAGER)
    for crd in definitions():
        name = crd["metadata"]["name"]
        for _ in range(3):
            try:
                current = svc.get(crd_type, "", name).obj
            except errors.NotFound:
                try:
                    await svc.create(crd_type, "", crd, opts)
                    log.info("installed CRD %s", name)
                    break
                except errors.AlreadyExists:
                    continue
            # compare as stored: the server adds apiextensions' defaults (conversion, ...)
            if current.get("spec") == crdschema.default_crd(crd)["spec"] and all(
                    (current["metadata"].get("labels") or {}).get(k) == v
                    for k, v in crd["metadata"]["labels"].items()):
                break

            def mutate(obj: dict[str, Any], crd: dict[str, Any] = crd) -> dict[str, Any]:
                obj["spec"] = crd["spec"]
                obj["metadata"].setdefault("labels", {}).update(crd["metadata"]["labels"])
                return obj

            await svc.guaranteed_update(crd_type, "", name, mutate, opts)
            log.info("updated CRD %s", name)
            break
    # serve them before saying ready: the registry follows the CRDs through the watch cache
    deadline = asyncio.get_running_loop().time() + timeout
    for crd in definitions():
        spec = crd["spec"]
        while registry.lookup(spec["group"], spec["versions"][0]["name"],
                              spec["names"]["plural"]) is None:
            if asyncio.get_running_loop().time() > deadline:
                log.warning("CRD %s is not served yet", crd["metadata"]["name"])
                break
            await asyncio.sleep(0.02)
    # objects written before the storage version changed (v1alpha3 until Atoll stored
    # v1alpha6) are read through the converter; rewrite them now, as a storage version
    # migrator would, so that storedVersions can say only the storage version is left
    for crd in definitions():
        try:
            moved = await conversion.migrate(svc, registry, crd_type, crd["metadata"]["name"])
        except errors.ApiError:
            log.exception("cannot migrate the objects of %s", crd["metadata"]["name"])
            continue
        if moved:
            log.info("rewrote %d %s in the storage version", moved, crd["metadata"]["name"])
    await snapshotbootstrap.ensure(svc, registry)
    await drsbootstrap.ensure(svc, registry)


class Keeper:
    """Puts a built-in CRD back when someone deletes it, as kube-apiserver's autoregister
    controller does for the APIServices of built-in groups: VMs are part of the platform,
    not an add-on that an administrator uninstalls by deleting its CRDs."""

    def __init__(self, svc: ObjectService, registry: Registry, cacher: Any) -> None:
        self.svc = svc
        self.registry = registry
        self.names = {crd["metadata"]["name"] for crd in definitions()}
        self._pending: asyncio.Task[None] | None = None
        cacher.listeners.append(self._on_event)

    def _on_event(self, ev: Any) -> None:
        if ev.type != "DELETED" or not ev.key.startswith(CRD_PREFIX):
            return
        if ev.key[len(CRD_PREFIX):] in self.names and (self._pending is None or
                                                       self._pending.done()):
            self._pending = asyncio.get_running_loop().create_task(self._restore())

    async def _restore(self) -> None:
        try:
            await ensure(self.svc, self.registry)
        except Exception:
            log.exception("cannot restore the built-in CRDs")
