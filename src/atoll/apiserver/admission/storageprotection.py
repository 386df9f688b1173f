"""StorageObjectInUseProtection admission: every new claim and volume carries its protection
finalizer, so deleting one that is in use only marks it; the volume controller's protection
loop (``controllers/volume/protection.py``) removes the finalizer once nothing uses it."""

from __future__ import annotations

from typing import Any

from atoll.api.resourcetype import ResourceType
from atoll.api.strategy import ObjectReader, WriteOptions
from atoll.apiserver.admission import BasePlugin

PVC_PROTECTION = "kubernetes.io/pvc-protection"
PV_PROTECTION = "kubernetes.io/pv-protection"


class StorageObjectInUseProtection(BasePlugin):
    def mutate_create(self, svc: ObjectReader, rt: ResourceType, obj: dict[str, Any],
                      opts: WriteOptions) -> None:
        if rt.group:
            return
        finalizer = {"persistentvolumeclaims": PVC_PROTECTION,
                     "persistentvolumes": PV_PROTECTION}.get(rt.plural)
        if finalizer is None:
            return
        meta = obj["metadata"]
        finalizers = meta.get("finalizers")
        if finalizers is None:
            meta["finalizers"] = [finalizer]
        elif isinstance(finalizers, list) and finalizer not in finalizers:
            finalizers.append(finalizer)
