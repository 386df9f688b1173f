"""Persistent volumes and claims (core/v1) and storage classes (storage.k8s.io/v1).

Defaults and validation follow upstream's ``pkg/apis/core/validation`` and
``pkg/apis/storage/validation``: a claim needs access modes and a storage request, a volume
exactly one source and a capacity, a class a provisioner; what binding depends on (a claim's
spec, a volume's source, a class's provisioner and parameters) cannot change afterwards, and
a claim's request never shrinks.
"""

from __future__ import annotations

from typing import Any

from atoll.api import errors, quantity, validation
from atoll.api.labelselector import validate_label_selector
from atoll.api.printing import (Cells, _age, _age_col, _deleting, _dict, _get, _list, _name,
                                _name_col, _quantity, _str, _wide, column, printer)
from atoll.api.resources.base import Kind
from atoll.api.resourcetype import STATUS, builtin
from atoll.api.strategy import Strategy

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
    column("VolumeBindingMode", description="volumeBindingMode indicates how "
                                            "PersistentVolumeClaims should be provisioned and "
                                            "bound."),
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


# -- validation -------------------------------------------------------------------------------
ACCESS_MODES = ["ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"]
VOLUME_MODES = ["Block", "Filesystem"]
PV_RECLAIM = ["Delete", "Recycle", "Retain"]
SC_RECLAIM = ["Delete", "Retain"]
BINDING_MODES = ["Immediate", "WaitForFirstConsumer"]
#: the volume sources a PersistentVolume may name (exactly one)
PV_SOURCES = ("awsElasticBlockStore", "azureDisk", "azureFile", "cephfs", "cinder", "csi", "fc",
              "flexVolume", "flocker", "gcePersistentDisk", "glusterfs", "hostPath", "iscsi",
              "local", "nfs", "photonPersistentDisk", "portworxVolume", "quobyte", "rbd",
              "scaleIO", "storageos", "vsphereVolume")
Causes = list[errors.Cause]


def _required(field: str, detail: str = "") -> errors.Cause:
    return errors.Cause("FieldValueRequired", "Required value" + (f": {detail}" if detail else ""),
                        field)


def _access_modes(modes: Any, path: str) -> Causes:
    if not isinstance(modes, list) or not modes:
        return [_required(path, "at least 1 access mode is required")]
    causes = [errors.not_supported(path, m, ACCESS_MODES) for m in modes if m not in ACCESS_MODES]
    if "ReadWriteOncePod" in modes and len(modes) > 1:
        causes.append(errors.forbidden_field(path, "may not use ReadWriteOncePod with other "
                                                   "access modes"))
    return causes


def _positive_quantity(value: Any, path: str) -> Causes:
    try:
        if quantity.parse(value) <= 0:
            return [errors.invalid_value(path, value, "must be greater than zero")]
    except ValueError:
        return [errors.invalid_value(path, value, "must be a quantity")]
    return []


def _class_name(name: Any, path: str) -> Causes:
    if name in (None, ""):
        return []
    if not isinstance(name, str):
        return [errors.invalid_value(path, name, "must be a string")]
    return [errors.invalid_value(path, name, msg) for msg in validation.is_dns1123_subdomain(name)]


def _volume_mode(mode: Any, path: str) -> Causes:
    return [] if mode is None or mode in VOLUME_MODES else \
        [errors.not_supported(path, mode, VOLUME_MODES)]


IS_DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
BETA_IS_DEFAULT_CLASS = "storageclass.beta.kubernetes.io/is-default-class"


def is_default_class(klass: dict[str, Any]) -> bool:
    annotations = _dict(_get(klass, "metadata", "annotations"))
    return "true" in (annotations.get(IS_DEFAULT_CLASS), annotations.get(BETA_IS_DEFAULT_CLASS))


def default_class(classes: list[dict[str, Any]]) -> str | None:
    """The default StorageClass's name: the newest of those marked default, ties by name
    (upstream's DefaultStorageClass admission and the PV controller's retroactive default)."""
    marked = sorted((c for c in classes if is_default_class(c)),
                    key=lambda c: _str(_get(c, "metadata", "name")))
    if not marked:
        return None
    newest = max(marked, key=lambda c: _str(_get(c, "metadata", "creationTimestamp")))
    return _str(_get(newest, "metadata", "name"))


def storage_request(claim: dict[str, Any]) -> Any:
    return _get(claim, "spec", "resources", "requests", "storage")


class PersistentVolumeClaimStrategy(Strategy):
    """ValidatePersistentVolumeClaim(+Update): the spec is fixed once created, but for the
    request growing and ``volumeName`` being set once (binding)."""

    def prepare_create(self, svc, rt, obj, opts):  # type: ignore[no-untyped-def]
        spec = obj.get("spec")
        if isinstance(spec, dict) and "volumeMode" not in spec:
            spec["volumeMode"] = "Filesystem"
        obj["status"] = {"phase": "Pending"}

    def validate(self, rt, obj):  # type: ignore[no-untyped-def]
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return [_required("spec")]
        causes = _access_modes(spec.get("accessModes"), "spec.accessModes")
        causes += validate_label_selector(spec.get("selector"), "spec.selector")
        requests = _get(spec, "resources", "requests")
        if not isinstance(requests, dict) or "storage" not in requests:
            causes.append(_required("spec.resources[storage]"))
        else:
            causes += _positive_quantity(requests["storage"], "spec.resources[storage]")
        causes += _class_name(spec.get("storageClassName"), "spec.storageClassName")
        causes += _volume_mode(spec.get("volumeMode"), "spec.volumeMode")
        return causes

    def validate_transition(self, rt, old, new):  # type: ignore[no-untyped-def]
        o, n = _dict(old.get("spec")), _dict(new.get("spec"))
        causes: Causes = []
        try:
            old_q = quantity.parse(storage_request(old))
            new_q = quantity.parse(storage_request(new))
        except ValueError:
            old_q = new_q = None  # validate() already names a bad request
        if old_q is not None and new_q is not None and new_q < old_q:
            causes.append(errors.forbidden_field("spec.resources.requests.storage",
                                                 "field can not be less than previous value"))
        bound = bool(o.get("volumeName"))
        skip = ["resources", "volumeName", "volumeAttributesClassName"]
        if o.get("storageClassName") is None:
            skip.append("storageClassName")  # a default class given later (retroactively)
        rest_o = {k: v for k, v in o.items() if k not in skip}
        rest_n = {k: v for k, v in n.items() if k not in skip}
        if o.get("volumeName") and o.get("volumeName") != n.get("volumeName"):
            rest_n["volumeName"] = n.get("volumeName")
            rest_o["volumeName"] = o.get("volumeName")
        other_resources = ({k: v for k, v in _dict(o.get("resources")).items() if k != "requests"}
                           != {k: v for k, v in _dict(n.get("resources")).items()
                               if k != "requests"})
        if rest_o != rest_n or other_resources or \
                (not bound and _get(o, "resources", "requests") != _get(n, "resources",
                                                                         "requests")):
            causes.append(errors.forbidden_field(
                "spec", "spec is immutable after creation except resources.requests and "
                        "volumeAttributesClassName for bound claims"))
        return causes


class PersistentVolumeStrategy(Strategy):
    """ValidatePersistentVolume(+Update): one source, a storage capacity; the source, mode and
    node affinity stay as created."""

    def prepare_create(self, svc, rt, obj, opts):  # type: ignore[no-untyped-def]
        spec = obj.get("spec")
        if isinstance(spec, dict):
            spec.setdefault("volumeMode", "Filesystem")
            spec.setdefault("persistentVolumeReclaimPolicy", "Retain")
        obj["status"] = {"phase": "Pending"}

    def validate(self, rt, obj):  # type: ignore[no-untyped-def]
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return [_required("spec")]
        causes = _access_modes(spec.get("accessModes"), "spec.accessModes")
        cap = spec.get("capacity")
        if not isinstance(cap, dict) or not cap:
            causes.append(_required("spec.capacity"))
        elif set(cap) != {"storage"}:
            causes.append(errors.not_supported("spec.capacity", sorted(cap), ["storage"]))
        else:
            causes += _positive_quantity(cap["storage"], "spec.capacity[storage]")
        policy = spec.get("persistentVolumeReclaimPolicy")
        if policy is not None and policy not in PV_RECLAIM:
            causes.append(errors.not_supported("spec.persistentVolumeReclaimPolicy", policy,
                                               PV_RECLAIM))
        causes += _class_name(spec.get("storageClassName"), "spec.storageClassName")
        causes += _volume_mode(spec.get("volumeMode"), "spec.volumeMode")
        sources = [k for k in PV_SOURCES if spec.get(k) is not None]
        if not sources:
            causes.append(_required("spec", "must specify a volume type"))
        for extra in sources[1:]:
            causes.append(errors.forbidden_field(f"spec.{extra}",
                                                 "may not specify more than 1 volume type"))
        for key in ("hostPath", "local"):
            if key in sources and not _str(_get(spec, key, "path")):
                causes.append(_required(f"spec.{key}.path"))
        if "csi" in sources:
            for key in ("driver", "volumeHandle"):
                if not _str(_get(spec, "csi", key)):
                    causes.append(_required(f"spec.csi.{key}"))
        affinity = spec.get("nodeAffinity")
        if affinity is not None and not _get(spec, "nodeAffinity", "required"):
            causes.append(_required("spec.nodeAffinity.required",
                                    "must specify required node constraints"))
        elif "local" in sources and affinity is None:
            causes.append(_required("spec.nodeAffinity", "Local volume requires node affinity"))
        ref = spec.get("claimRef")
        if ref is not None and (not isinstance(ref, dict) or not _str(ref.get("name"))):
            causes.append(_required("spec.claimRef.name"))
        return causes

    def validate_transition(self, rt, old, new):  # type: ignore[no-untyped-def]
        o, n = _dict(old.get("spec")), _dict(new.get("spec"))
        causes: Causes = []
        if {k: o.get(k) for k in PV_SOURCES} != {k: n.get(k) for k in PV_SOURCES}:
            causes.append(errors.forbidden_field("spec.persistentvolumesource",
                                                 "spec.persistentvolumesource is immutable "
                                                 "after creation"))
        # spec.nodeAffinity may change, as with upstream's MutablePVNodeAffinity (KEP-5381,
        # alpha in 1.35, on here): a local volume follows its live-migrated VM to a new host
        for key in ("volumeMode",):
            if o.get(key) != n.get(key):
                causes.append(errors.invalid_value(f"spec.{key}", n.get(key),
                                                   validation.FIELD_IMMUTABLE))
        return causes


class StorageClassStrategy(Strategy):
    """ValidateStorageClass(+Update): a provisioner, known reclaim and binding modes; the
    provisioner, parameters, reclaim policy and binding mode are fixed once created."""

    def prepare_create(self, svc, rt, obj, opts):  # type: ignore[no-untyped-def]
        obj.setdefault("reclaimPolicy", "Delete")
        obj.setdefault("volumeBindingMode", "Immediate")

    def prepare_update(self, rt, old, new, subresource=""):  # type: ignore[no-untyped-def]
        new.setdefault("reclaimPolicy", "Delete")
        new.setdefault("volumeBindingMode", "Immediate")

    def validate(self, rt, obj):  # type: ignore[no-untyped-def]
        causes: Causes = []
        prov = obj.get("provisioner")
        if not prov:
            causes.append(_required("provisioner"))
        elif not isinstance(prov, str):
            causes.append(errors.invalid_value("provisioner", prov, "must be a string"))
        else:
            causes += [errors.invalid_value("provisioner", prov, msg)
                       for msg in validation.is_qualified_name(prov.lower())]
        params = obj.get("parameters")
        if params is not None:
            if not isinstance(params, dict) or any(not k for k in params):
                causes.append(errors.invalid_value("parameters", params,
                                                   "parameters keys must not be empty"))
        if obj.get("reclaimPolicy") not in SC_RECLAIM:
            causes.append(errors.not_supported("reclaimPolicy", obj.get("reclaimPolicy"),
                                               SC_RECLAIM))
        if obj.get("volumeBindingMode") not in BINDING_MODES:
            causes.append(errors.not_supported("volumeBindingMode", obj.get("volumeBindingMode"),
                                               BINDING_MODES))
        return causes

    def validate_transition(self, rt, old, new):  # type: ignore[no-untyped-def]
        causes: Causes = []
        for key in ("parameters", "provisioner", "reclaimPolicy"):
            if old.get(key) != new.get(key):
                causes.append(errors.forbidden_field(key, f"updates to {key} are forbidden."))
        if old.get("volumeBindingMode") != new.get("volumeBindingMode"):
            causes.append(errors.invalid_value("volumeBindingMode", new.get("volumeBindingMode"),
                                               validation.FIELD_IMMUTABLE))
        return causes


PERSISTENTVOLUME = Kind(PERSISTENTVOLUMES, PersistentVolumeStrategy(),
                        printer=_persistent_volume)
PERSISTENTVOLUMECLAIM = Kind(PERSISTENTVOLUMECLAIMS, PersistentVolumeClaimStrategy(),
                             printer=_persistent_volume_claim)
STORAGECLASS = Kind(STORAGECLASSES, StorageClassStrategy(), printer=_storage_class_row)
