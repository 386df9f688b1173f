"""The snapshot kinds (``snapshot.storage.k8s.io/v1``, served from built-in CRDs,
``atoll.api.snapshots``): the rules upstream states as CEL in its CRDs or in its validation
webhook, which a structural schema cannot state.

- VolumeSnapshot: exactly one of ``spec.source.persistentVolumeClaimName`` /
  ``volumeSnapshotContentName``; the source never changes; a class name is not ``""``.
- VolumeSnapshotContent: exactly one of ``spec.source.volumeHandle`` / ``snapshotHandle``;
  ``volumeSnapshotRef`` names a snapshot and its namespace; the source, the reference's
  name and namespace, and ``sourceVolumeMode`` once set, never change.
- VolumeSnapshotClass: at most one default class per driver (the webhook's rule).
"""

from __future__ import annotations

from typing import Any

from atoll.api import errors, validation
from atoll.api.resources.base import Kind
from atoll.api.snapshots import (VOLUMESNAPSHOTCLASSES, VOLUMESNAPSHOTCONTENTS, VOLUMESNAPSHOTS,
                                 is_default_class)
from atoll.api.strategy import Strategy

Causes = list[errors.Cause]


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _names(value: Any, path: str) -> Causes:
    if value is None:
        return []
    if not isinstance(value, str) or not value:
        return [errors.invalid_value(path, value, "must be a non-empty string")]
    return [errors.invalid_value(path, value, m) for m in validation.is_dns1123_subdomain(value)]


def _one_of(source: dict[str, Any], path: str, a: str, b: str) -> Causes:
    if (source.get(a) is None) == (source.get(b) is None):
        return [errors.invalid_value(path, source, f"exactly one of {b} and {a} must be set")]
    return []


class VolumeSnapshotStrategy(Strategy):
    def validate(self, rt, obj):  # type: ignore[no-untyped-def]
        spec = _d(obj.get("spec"))
        source = _d(spec.get("source"))
        causes = _one_of(source, "spec.source", "persistentVolumeClaimName",
                         "volumeSnapshotContentName")
        for key in ("persistentVolumeClaimName", "volumeSnapshotContentName"):
            causes += _names(source.get(key), f"spec.source.{key}")
        if spec.get("volumeSnapshotClassName") == "":
            causes.append(errors.invalid_value("spec.volumeSnapshotClassName", "",
                                               "volumeSnapshotClassName must not be the empty "
                                               "string when set"))
        else:
            causes += _names(spec.get("volumeSnapshotClassName"), "spec.volumeSnapshotClassName")
        return causes

    def validate_transition(self, rt, old, new):  # type: ignore[no-untyped-def]
        before, after = _d(_d(old.get("spec")).get("source")), _d(_d(new.get("spec"))
                                                                  .get("source"))
        if before != after:
            return [errors.invalid_value("spec.source", after, "source is immutable")]
        return []


class VolumeSnapshotContentStrategy(Strategy):
    def validate(self, rt, obj):  # type: ignore[no-untyped-def]
        spec = _d(obj.get("spec"))
        source = _d(spec.get("source"))
        causes = _one_of(source, "spec.source", "snapshotHandle", "volumeHandle")
        for key in ("snapshotHandle", "volumeHandle"):
            if key in source and (not isinstance(source[key], str) or not source[key]):
                causes.append(errors.invalid_value(f"spec.source.{key}", source[key],
                                                   "must be a non-empty string"))
        ref = _d(spec.get("volumeSnapshotRef"))
        for key in ("name", "namespace"):
            if not ref.get(key):
                causes.append(errors.required(f"spec.volumeSnapshotRef.{key}"))
        return causes

    def validate_transition(self, rt, old, new):  # type: ignore[no-untyped-def]
        o, n = _d(old.get("spec")), _d(new.get("spec"))
        causes: Causes = []
        if _d(o.get("source")) != _d(n.get("source")):
            causes.append(errors.invalid_value("spec.source", n.get("source"),
                                               "source is immutable"))
        if o.get("sourceVolumeMode") and o.get("sourceVolumeMode") != n.get("sourceVolumeMode"):
            causes.append(errors.invalid_value("spec.sourceVolumeMode", n.get("sourceVolumeMode"),
                                               "sourceVolumeMode is immutable"))
        ro, rn = _d(o.get("volumeSnapshotRef")), _d(n.get("volumeSnapshotRef"))
        for key in ("name", "namespace"):
            if ro.get(key) and ro.get(key) != rn.get(key):
                causes.append(errors.invalid_value(f"spec.volumeSnapshotRef.{key}", rn.get(key),
                                                   validation.FIELD_IMMUTABLE))
        if ro.get("uid") and ro.get("uid") != rn.get("uid"):
            causes.append(errors.invalid_value("spec.volumeSnapshotRef.uid", rn.get("uid"),
                                               validation.FIELD_IMMUTABLE))
        return causes


class VolumeSnapshotClassStrategy(Strategy):
    def validate_create(self, svc, rt, obj):  # type: ignore[no-untyped-def]
        super().validate_create(svc, rt, obj)
        self._one_default(svc, rt, obj)

    def validate_update(self, svc, rt, old, new):  # type: ignore[no-untyped-def]
        super().validate_update(svc, rt, old, new)
        if not is_default_class(old):
            self._one_default(svc, rt, new)

    def validate_transition(self, rt, old, new):  # type: ignore[no-untyped-def]
        if old.get("driver") != new.get("driver"):
            return [errors.invalid_value("driver", new.get("driver"), validation.FIELD_IMMUTABLE)]
        return []

    @staticmethod
    def _one_default(svc, rt, obj) -> None:  # type: ignore[no-untyped-def]
        if not is_default_class(obj):
            return
        name = obj["metadata"].get("name", "")
        for other in svc.read_list(rt, ""):
            o = other.obj
            if o["metadata"].get("name") != name and is_default_class(o) and \
                    o.get("driver") == obj.get("driver"):
                raise errors.invalid(rt.kind, name, [errors.forbidden_field(
                    "metadata.annotations[snapshot.storage.kubernetes.io/is-default-class]",
                    f"default snapshot class {o['metadata']['name']} already exists for driver "
                    f"{obj.get('driver')}")], rt.group)


VOLUMESNAPSHOT = Kind(None, VolumeSnapshotStrategy(), key=VOLUMESNAPSHOTS.kind_key)
VOLUMESNAPSHOTCONTENT = Kind(None, VolumeSnapshotContentStrategy(),
                             key=VOLUMESNAPSHOTCONTENTS.kind_key)
VOLUMESNAPSHOTCLASS = Kind(None, VolumeSnapshotClassStrategy(), key=VOLUMESNAPSHOTCLASSES.kind_key)
