"""core/v1 ReplicationControllers: ReplicaSets' predecessor, still created by the official
clients' examples.

Unlike a ReplicaSet, the selector is a plain label map, defaults to the template's labels
(as do the object's own labels) and may change after creation.  They print like
ReplicaSets (``apps_v1``); the ReplicationController controller keeps their pods.
"""

from __future__ import annotations

from typing import Any

from atoll.api import errors, validation
from atoll.api.resources.apps_v1 import _replica_set, _replicas_fields
from atoll.api.resources.base import Kind
from atoll.api.resources.core_v1_pods import _validate_containers, default_pod_spec
from atoll.api.resourcetype import SCALE, STATUS, builtin
from atoll.api.strategy import Strategy

REPLICATIONCONTROLLERS = builtin("", "v1", "ReplicationController", "replicationcontrollers",
                                 True, short_names=("rc",), categories=("all",),
                                 subresources=(STATUS, SCALE))


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class ReplicationControllerStrategy(Strategy):
    def prepare_create(self, svc, rt, obj, opts):  # type: ignore[no-untyped-def]
        self._defaults(obj)
        obj["status"] = {"replicas": 0}

    def prepare_update(self, rt, old, new, subresource=""):  # type: ignore[no-untyped-def]
        if subresource != "status":
            self._defaults(new)

    @staticmethod
    def _defaults(obj: dict[str, Any]) -> None:
        """SetDefaults_ReplicationController: selector and labels from the template."""
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return
        tmpl = spec.get("template")
        labels = _dict(_dict(tmpl).get("metadata")).get("labels")
        if isinstance(labels, dict) and labels:
            if not spec.get("selector"):
                spec["selector"] = dict(labels)
            if not obj["metadata"].get("labels"):
                obj["metadata"]["labels"] = dict(labels)
        if spec.get("replicas") is None:
            spec["replicas"] = 1
        if isinstance(tmpl, dict) and isinstance(tmpl.get("spec"), dict):
            default_pod_spec(tmpl["spec"])

    def validate(self, rt, obj):  # type: ignore[no-untyped-def]
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return [errors.required("spec")]
        causes: list[errors.Cause] = []
        for field in ("replicas", "minReadySeconds"):
            v = spec.get(field)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                causes.append(errors.invalid_value(f"spec.{field}", v,
                                                   "must be greater than or equal to 0"))
        selector = spec.get("selector")
        if not selector:
            causes.append(errors.required("spec.selector"))
        else:
            causes += validation.validate_labels(selector, "spec.selector")
        tmpl = spec.get("template")
        if not isinstance(tmpl, dict):
            causes.append(errors.required("spec.template"))
            return causes
        labels = _dict(_dict(tmpl.get("metadata")).get("labels"))
        if isinstance(selector, dict) and any(labels.get(k) != v for k, v in selector.items()):
            causes.append(errors.invalid_value("spec.template.metadata.labels", labels,
                                               "`selector` does not match template `labels`"))
        tspec = tmpl.get("spec")
        if not isinstance(tspec, dict):
            causes.append(errors.required("spec.template.spec"))
            return causes
        causes += _validate_containers(tspec.get("containers"), "spec.template.spec.containers",
                                       required=True)
        if tspec.get("restartPolicy") != "Always":
            causes.append(errors.not_supported("spec.template.spec.restartPolicy",
                                               tspec.get("restartPolicy"), ["Always"]))
        return causes


REPLICATIONCONTROLLER = Kind(REPLICATIONCONTROLLERS, ReplicationControllerStrategy(),
                             _replica_set, _replicas_fields)
