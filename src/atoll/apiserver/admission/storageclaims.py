"""Admission for claims: upstream's PersistentVolumeClaimResize, and the StorageClasses
assigned to a namespace.

- Resize: growing ``spec.resources.requests.storage`` is allowed only for a Bound claim
  whose class exists and says ``allowVolumeExpansion: true`` (403 otherwise, worded as
  upstream's plugin); a shrink is already a 422 of the claim's validation.
- Assigned classes: as vSphere assigns storage policies to a Namespace, the annotation
  ``storage.atoll.dev/classes`` (comma-separated class names, written by ``atoll namespace
  create --storage-class``) limits the classes a new claim there may name (after the default
  class is filled in); without the annotation any class may be used.  An admission check
  rather than a quota of 0 per other class: a quota can only name the classes that exist
  when it is written, the check also keeps out every class made later.  A claim with
  ``storageClassName: ""`` provisions nothing (it binds only an administrator's volume)
  and is allowed.
- Data sources: as upstream's claim strategy, ``spec.dataSource`` and ``spec.dataSourceRef``
  are filled from each other when only one is given (so readers may look at either), each
  needs a kind and a name, a source in the core group must be a PersistentVolumeClaim, both
  must agree, and a source in another namespace (``dataSourceRef.namespace``, upstream's
  alpha CrossNamespaceVolumeDataSource) is refused: 422s naming the field.
"""

from __future__ import annotations

from typing import Any

from atoll.api import errors, quantity, tenancy
from atoll.api.resources.core_v1 import NAMESPACES
from atoll.api.resources.volumes import STORAGECLASSES
from atoll.api.resourcetype import ResourceType
from atoll.api.strategy import ObjectReader, WriteOptions
from atoll.apiserver.admission import BasePlugin

#: comma-separated StorageClass names a namespace's claims may use (absent: any class)
STORAGE_CLASSES_ANNOTATION = tenancy.STORAGE_CLASSES_ANNOTATION
BETA_CLASS = "volume.beta.kubernetes.io/storage-class"


def _claims(rt: ResourceType) -> bool:
    return not rt.group and rt.plural == "persistentvolumeclaims"


def _class(claim: dict[str, Any]) -> str | None:
    beta = ((claim.get("metadata") or {}).get("annotations") or {}).get(BETA_CLASS)
    if isinstance(beta, str):
        return beta
    name = (claim.get("spec") or {}).get("storageClassName")
    return name if isinstance(name, str) else None


def _request(claim: dict[str, Any]) -> Any:
    return (((claim.get("spec") or {}).get("resources") or {}).get("requests") or {}) \
        .get("storage")


def _source_causes(claim: dict[str, Any]) -> list[errors.Cause]:
    spec = claim.get("spec") or {}
    causes = []
    for key in ("dataSource", "dataSourceRef"):
        ref = spec.get(key)
        if ref is None:
            continue
        path = f"spec.{key}"
        if not isinstance(ref, dict):
            causes.append(errors.invalid_value(path, ref, "must be an object"))
            continue
        for field in ("kind", "name"):
            if not isinstance(ref.get(field), str) or not ref.get(field):
                causes.append(errors.required(f"{path}.{field}"))
        kind = ref.get("kind")
        if not ref.get("apiGroup") and kind and kind != "PersistentVolumeClaim":
            causes.append(errors.not_supported(f"{path}.kind", kind, ["PersistentVolumeClaim"]))
        namespace = ref.get("namespace")
        if key == "dataSource" and namespace is not None:
            causes.append(errors.forbidden_field(
                "spec.dataSource.namespace", "dataSource names an object of the claim's own "
                "namespace; a source in another namespace needs spec.dataSourceRef"))
        elif namespace not in (None, "", claim["metadata"].get("namespace")):
            causes.append(errors.forbidden_field(
                "spec.dataSourceRef.namespace", "cross-namespace data sources "
                "(CrossNamespaceVolumeDataSource) are not enabled on this server"))
    source, ref = spec.get("dataSource"), spec.get("dataSourceRef")
    if isinstance(source, dict) and isinstance(ref, dict) and not ref.get("namespace") and \
            {k: v for k, v in source.items() if v} != {k: v for k, v in ref.items() if v}:
        causes.append(errors.invalid_value("spec.dataSource", source,
                                           "must match dataSourceRef"))
    return causes


class StorageClaims(BasePlugin):
    def mutate_create(self, svc: ObjectReader, rt: ResourceType, obj: dict[str, Any],
                      opts: WriteOptions) -> None:
        spec = obj.get("spec")
        if not _claims(rt) or not isinstance(spec, dict):
            return
        source, ref = spec.get("dataSource"), spec.get("dataSourceRef")
        if isinstance(source, dict) and ref is None and "namespace" not in source:
            spec["dataSourceRef"] = dict(source)
        elif isinstance(ref, dict) and source is None and not ref.get("namespace"):
            spec["dataSource"] = {k: v for k, v in ref.items() if k != "namespace"}

    def validate_create(self, svc: ObjectReader, rt: ResourceType, obj: dict[str, Any],
                        opts: WriteOptions) -> None:
        if _claims(rt):
            causes = _source_causes(obj)
            if causes:
                raise errors.invalid(rt.kind, obj["metadata"].get("name", ""), causes)
            self._assigned(svc, obj)

    def validate_update(self, svc: ObjectReader, rt: ResourceType, old: dict[str, Any],
                        new: dict[str, Any], opts: WriteOptions, subresource: str) -> None:
        if not _claims(rt) or subresource:
            return
        if _class(new) != _class(old):
            self._assigned(svc, new)  # a default class given later must be assigned too
        try:
            grows = quantity.parse(_request(new)) > quantity.parse(_request(old))
        except (TypeError, ValueError, ArithmeticError):
            return  # validation names a bad quantity
        if grows:
            self._resizable(svc, rt, old)

    @staticmethod
    def _resizable(svc: ObjectReader, rt: ResourceType, old: dict[str, Any]) -> None:
        name = old["metadata"].get("name", "")
        if (old.get("status") or {}).get("phase") != "Bound" or \
                not (old.get("spec") or {}).get("volumeName"):
            raise errors.Forbidden(f'persistentvolumeclaims "{name}" is forbidden: Only bound '
                                   "persistent volume claims can be expanded",
                                   name=name, kind=rt.plural)
        klass = _class(old)
        sc = svc.read(STORAGECLASSES, "", klass) if klass else None
        if sc is None or sc.obj.get("allowVolumeExpansion") is not True:
            raise errors.Forbidden(f'persistentvolumeclaims "{name}" is forbidden: only '
                                   "dynamically provisioned pvc can be resized and the "
                                   "storageclass that provisions the pvc must support resize",
                                   name=name, kind=rt.plural)

    @staticmethod
    def _assigned(svc: ObjectReader, claim: dict[str, Any]) -> None:
        klass = _class(claim)
        if not klass:
            return
        namespace = claim["metadata"].get("namespace", "")
        ns = svc.read(NAMESPACES, "", namespace)
        annotations = ((ns.obj.get("metadata") or {}).get("annotations") or {}) if ns else {}
        allowed = tenancy.allowed_names(annotations, STORAGE_CLASSES_ANNOTATION)
        if allowed is None or klass in allowed:
            return
        name = claim["metadata"].get("name", "")
        raise errors.Forbidden(
            f'persistentvolumeclaims "{name}" is forbidden: storage class "{klass}" is not '
            f'assigned to namespace "{namespace}" (assigned: {", ".join(allowed) or "none"})',
            name=name, kind="persistentvolumeclaims")
