"""Persistent volumes and claims (core/v1) and storage classes (storage.k8s.io/v1)."""

from __future__ import annotations

from typing import Any

from atoll.api.printing import (Cells, _age, _age_col, _deleting, _dict, _get, _list, _name,
                                _name_col, _quantity, _str, _wide, column, printer)
from atoll.api.resources.base import Kind
from atoll.api.resourcetype import STATUS, builtin

PERSISTENTVOLUMES = builtin("", "v1", "PersistentVolume", "persistentvolumes", False,
                            short_names=("pv",), subresources=(STATUS,))
PERSISTENTVOLUMECLAIMS = builtin("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims",
                                 True, short_names=("pvc",), subresources=(STATUS,))
STORAGECLASSES = builtin("storage.k8s.io", "v1", "StorageClass", "storageclasses", False,
                         short_names=("sc",), generation=False)


def access_modes(modes: Any) -> str:
    """``RWO,ROX,RWX,RWOP`` in that fixed order, duplicates dropped."""
    present = set(m for m in _list(modes) if isinstance(m, str))
    order = (("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"),
             ("ReadWriteOncePod", "RWOP"))
    return ",".join(short for mode, short in order if mode in present)


def _storage_class(obj: dict[str, Any]) -> str:
    beta = _get(obj, "metadata", "annotations", "volume.beta.kubernetes.io/storage-class")
    if isinstance(beta, str):
        return beta
    return _str(_get(obj, "spec", "storageClassName"))


@printer(columns=[
    _name_col(),
    column("Capacity", description="capacity is the description of the persistent volume's "
                                   "resources and capacity."),
    column("Access Modes", description="accessModes contains all ways the volume can be mounted."),
    column("Reclaim Policy", description="persistentVolumeReclaimPolicy defines what happens to a "
                                         "persistent volume when released from its claim."),
    column("Status", description="phase indicates if a volume is available, bound to a claim, or "
                                 "released by a claim."),
    column("Claim", description="claimRef is part of a bi-directional binding between "
                                "PersistentVolume and PersistentVolumeClaim."),
    column("StorageClass", description="StorageClass of the pv"),
    column("VolumeAttributesClass", description="VolumeAttributesClass of the pv"),
    column("Reason", description="reason is a brief CamelCase string that describes any failure "
                                 "and is meant for machine parsing and tidy display in the CLI."),
    _age_col(),
    _wide("VolumeMode", "volumeMode defines if a volume is intended to be used with a formatted "
                        "filesystem or to remain in raw block state."),
])
def _persistent_volume(obj: dict[str, Any], now: float) -> Cells:
    spec = _dict(obj.get("spec"))
    claim = ""
    ref = spec.get("claimRef")
    if isinstance(ref, dict):
        claim = f"{_str(ref.get('namespace'))}/{_str(ref.get('name'))}"
    phase = "Terminating" if _deleting(obj) else _str(_get(obj, "status", "phase"))
    vac = spec.get("volumeAttributesClassName")
    return [_name(obj), _quantity(_get(spec, "capacity", "storage")),
            access_modes(spec.get("accessModes")),
            _str(spec.get("persistentVolumeReclaimPolicy")), phase, claim, _storage_class(obj),
            vac if isinstance(vac, str) else "<unset>", _str(_get(obj, "status", "reason")),
            _age(obj, now), _str(spec.get("volumeMode")) or "<unset>"]


@printer(columns=[
    _name_col(),
    column("Status", description="phase represents the current phase of PersistentVolumeClaim."),
    column("Volume", description="volumeName is the binding reference to the PersistentVolume "
                                 "backing this claim."),
    column("Capacity", description="capacity represents the actual resources of the underlying "
                                   "volume."),
    column("Access Modes", description="accessModes contains the actual access modes the volume "
                                       "backing the PVC has."),
    column("StorageClass", description="StorageClass of the pvc"),
    column("VolumeAttributesClass", description="VolumeAttributesClass of the pvc"),
    _age_col(),
    _wide("VolumeMode", "volumeMode defines what type of volume is required by the claim."),
])
def _persistent_volume_claim(obj: dict[str, Any], now: float) -> Cells:
    spec = _dict(obj.get("spec"))
    status = _dict(obj.get("status"))
    phase = "Terminating" if _deleting(obj) else _str(status.get("phase"))
    volume = _str(spec.get("volumeName"))
    capacity = modes = ""
    if volume:
        modes = access_modes(status.get("accessModes"))
        capacity = _quantity(_get(status, "capacity", "storage"))
    vac = spec.get("volumeAttributesClassName")
    return [_name(obj), phase, volume, capacity, modes, _storage_class(obj),
            vac if isinstance(vac, str) else "<unset>", _age(obj, now),
            _str(spec.get("volumeMode")) or "<unset>"]


@printer(columns=[
    _name_col(),
    column("Provisioner", description="provisioner indicates the type of the provisioner."),
    column("ReclaimPolicy", description="reclaimPolicy controls the reclaimPolicy for dynamically "
                                        "provisioned PersistentVolumes of this storage class."),
    column("VolumeBindingMode", description="volumeBindingMode indicates how PersistentVolumeClaims "
                                            "should be provisioned and bound."),
    column("AllowVolumeExpansion", description="allowVolumeExpansion shows whether the storage "
                                               "class allow volume expand."),
    _age_col(),
])
def _storage_class_row(obj: dict[str, Any], now: float) -> Cells:
    annotations = _dict(_get(obj, "metadata", "annotations"))
    default = "true" in (annotations.get("storageclass.kubernetes.io/is-default-class"),
                         annotations.get("storageclass.beta.kubernetes.io/is-default-class"))
    name = _name(obj) + (" (default)" if default else "")
    return [name, _str(obj.get("provisioner")), _str(obj.get("reclaimPolicy")) or "Delete",
            _str(obj.get("volumeBindingMode")) or "Immediate",
            obj.get("allowVolumeExpansion") is True, _age(obj, now)]


PERSISTENTVOLUME = Kind(PERSISTENTVOLUMES, printer=_persistent_volume)
PERSISTENTVOLUMECLAIM = Kind(PERSISTENTVOLUMECLAIMS, printer=_persistent_volume_claim)
STORAGECLASS = Kind(STORAGECLASSES, printer=_storage_class_row)
