"""DefaultStorageClass admission: a claim that names no class gets the default one.

As upstream's plugin: a PersistentVolumeClaim created without ``spec.storageClassName``
(and without the old beta annotation) gets the class annotated
``storageclass.kubernetes.io/is-default-class: "true"``; if several are, the newest wins
(then the first by name).  An explicit ``""`` means "no class, only pre-made volumes" and is
left alone, as is every claim when no class is the default.
"""

from __future__ import annotations

from typing import Any

from atoll.api.resources.volumes import STORAGECLASSES, default_class
from atoll.api.resourcetype import ResourceType
from atoll.api.strategy import ObjectReader, WriteOptions
from atoll.apiserver.admission import BasePlugin

BETA_CLASS = "volume.beta.kubernetes.io/storage-class"


class DefaultStorageClass(BasePlugin):
    def mutate_create(self, svc: ObjectReader, rt: ResourceType, obj: dict[str, Any],
                      opts: WriteOptions) -> None:
        if rt.group or rt.plural != "persistentvolumeclaims":
            return
        spec = obj.get("spec")
        annotations = obj["metadata"].get("annotations")
        if not isinstance(spec, dict) or spec.get("storageClassName") is not None or \
                (isinstance(annotations, dict) and BETA_CLASS in annotations):
            return
        name = default_class([s.obj for s in svc.read_list(STORAGECLASSES)])
        if name is not None:
            spec["storageClassName"] = name
