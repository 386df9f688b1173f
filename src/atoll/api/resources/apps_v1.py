"""apps/v1 workloads: deployments, replica sets, daemon sets, stateful sets, controller
revisions (and the printer and fields core/v1 ReplicationControllers share: ``core_v1_rc``).
"""

from __future__ import annotations

from typing import Any

from atoll.api import errors
from atoll.api.labelselector import format_label_selector
from atoll.api.printing import (_WORKLOAD_WIDE, Cells, _age, _age_col, _containers_cells, _dict,
                                _get, _int, _name, _name_col, _selector_string, _wide, column,
                                format_labels, printer)
from atoll.api.resources.base import Kind, field_int
from atoll.api.resources.core_v1_pods import _validate_containers, default_pod_spec
from atoll.api.resourcetype import SCALE, STATUS, builtin
from atoll.api.strategy import Strategy

DEPLOYMENTS = builtin("apps", "v1", "Deployment", "deployments", True, short_names=("deploy",),
                      categories=("all",), subresources=(STATUS, SCALE))
REPLICASETS = builtin("apps", "v1", "ReplicaSet", "replicasets", True, short_names=("rs",),
                      categories=("all",), subresources=(STATUS, SCALE))
DAEMONSETS = builtin("apps", "v1", "DaemonSet", "daemonsets", True, short_names=("ds",),
                     categories=("all",), subresources=(STATUS,))
STATEFULSETS = builtin("apps", "v1", "StatefulSet", "statefulsets", True, short_names=("sts",),
                       categories=("all",), subresources=(STATUS, SCALE))
CONTROLLERREVISIONS = builtin("apps", "v1", "ControllerRevision", "controllerrevisions", True,
                              generation=False)


#: status fields the Go types serialize even when zero (no ``omitempty``): typed clients read
#: them from a freshly created object, before its controller wrote any status
ALWAYS_SENT_STATUS = {
    "ReplicaSet": ("replicas",),
    "StatefulSet": ("replicas", "availableReplicas"),
    "DaemonSet": ("currentNumberScheduled", "numberMisscheduled", "desiredNumberScheduled",
                  "numberReady"),
}


class WorkloadStrategy(Strategy):
    """Deployment, ReplicaSet, StatefulSet, DaemonSet: defaults and selector checks."""

    def prepare_create(self, svc, rt, obj, opts):  # type: ignore[no-untyped-def]
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return
        if rt.kind != "DaemonSet":
            spec.setdefault("replicas", 1)
        if rt.kind != "ReplicaSet":  # ReplicaSets have no revision history
            spec.setdefault("revisionHistoryLimit", 10)
        if rt.kind == "Deployment":
            spec.setdefault("progressDeadlineSeconds", 600)
            strategy = spec.get("strategy")
            if not isinstance(strategy, dict):
                strategy = spec["strategy"] = {}
            strategy.setdefault("type", "RollingUpdate")
            if strategy["type"] == "RollingUpdate":
                rolling = strategy.setdefault("rollingUpdate", {})
                if isinstance(rolling, dict):
                    rolling.setdefault("maxSurge", "25%")
                    rolling.setdefault("maxUnavailable", "25%")
        if rt.kind == "StatefulSet":
            spec.setdefault("podManagementPolicy", "OrderedReady")
            spec.setdefault("updateStrategy", {"type": "RollingUpdate",
                                               "rollingUpdate": {"partition": 0}})
        if rt.kind == "DaemonSet":
            spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {
                "maxSurge": 0, "maxUnavailable": 1}})
        tmpl = spec.get("template")
        if isinstance(tmpl, dict) and isinstance(tmpl.get("spec"), dict):
            default_pod_spec(tmpl["spec"])
        status = obj.setdefault("status", {})
        for field_ in ALWAYS_SENT_STATUS.get(rt.kind, ()):
            status.setdefault(field_, 0)

    def validate(self, rt, obj):  # type: ignore[no-untyped-def]
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return [errors.required("spec")]
        causes: list[errors.Cause] = []
        sel = spec.get("selector")
        if not isinstance(sel, dict) or not (sel.get("matchLabels") or sel.get("matchExpressions")):
            causes.append(errors.required("spec.selector"))
        tmpl = spec.get("template")
        if not isinstance(tmpl, dict):
            causes.append(errors.required("spec.template"))
            return causes
        labels = (tmpl.get("metadata") or {}).get("labels") or {}
        if isinstance(sel, dict) and isinstance(sel.get("matchLabels"), dict) and \
                isinstance(labels, dict):
            for k, v in sel["matchLabels"].items():
                if labels.get(k) != v:
                    causes.append(errors.invalid_value(
                        "spec.template.metadata.labels", labels,
                        "`selector` does not match template `labels`"))
                    break
        tspec = tmpl.get("spec")
        if not isinstance(tspec, dict):
            causes.append(errors.required("spec.template.spec"))
        else:
            causes += _validate_containers(tspec.get("containers"),
                                           "spec.template.spec.containers", required=True)
        replicas = spec.get("replicas")
        if replicas is not None and (not isinstance(replicas, int) or isinstance(replicas, bool)
                                     or replicas < 0):
            causes.append(errors.invalid_value("spec.replicas", replicas,
                                               "must be greater than or equal to 0"))
        return causes

    def validate_transition(self, rt, old, new):  # type: ignore[no-untyped-def]
        if (old.get("spec") or {}).get("selector") != (new.get("spec") or {}).get("selector"):
            return [errors.invalid_value("spec.selector", (new.get("spec") or {}).get("selector"),
                                         "field is immutable")]
        return []


# -- printers ------------------------------------------------------------------------------------
@printer(columns=[
    _name_col(), column("Ready", description="Number of the pod with ready state"),
    column("Up-to-date", description="Total number of non-terminated pods targeted by this "
                                     "deployment that have the desired template spec."),
    column("Available", description="Total number of available pods (ready for at least "
                                    "minReadySeconds) targeted by this deployment."),
    _age_col(), *_WORKLOAD_WIDE,
    _wide("Selector", "Label selector for pods. Existing ReplicaSets whose pods are selected by "
                      "this will be the ones affected by this deployment."),
])
def _deployment(obj: dict[str, Any], now: float) -> Cells:
    status = _dict(obj.get("status"))
    desired = _int(_get(obj, "spec", "replicas"), 1)
    selector = _selector_string(_get(obj, "spec", "selector"))
    return [_name(obj), f"{_int(status.get('readyReplicas'))}/{desired}",
            _int(status.get("updatedReplicas")), _int(status.get("availableReplicas")),
            _age(obj, now), *_containers_cells(obj), selector]


@printer(columns=[
    _name_col(),
    column("Desired", "integer", "Replicas is the number of desired replicas."),
    column("Current", "integer", "Replicas is the most recently observed number of replicas."),
    column("Ready", "integer", "The number of ready replicas for this replica set."),
    _age_col(), *_WORKLOAD_WIDE,
    _wide("Selector", "Selector is a label query over pods that should match the replica count."),
])
def _replica_set(obj: dict[str, Any], now: float) -> Cells:
    status = _dict(obj.get("status"))
    sel = _get(obj, "spec", "selector")
    if obj.get("kind") == "ReplicationController" or (
            isinstance(sel, dict) and sel and "matchLabels" not in sel
            and "matchExpressions" not in sel):
        selector = format_labels(sel)  # ReplicationControllers select with a plain map
    else:
        selector = format_label_selector(sel)
    return [_name(obj), _int(_get(obj, "spec", "replicas"), 1), _int(status.get("replicas")),
            _int(status.get("readyReplicas")), _age(obj, now), *_containers_cells(obj), selector]


@printer(columns=[
    _name_col(),
    column("Desired", "integer", "The total number of nodes that should be running the daemon pod."),
    column("Current", "integer", "The number of nodes that are running at least 1 daemon pod and "
                                 "are supposed to run the daemon pod."),
    column("Ready", "integer", "numberReady is the number of nodes that should be running the "
                               "daemon pod and have one or more of the daemon pod running with a "
                               "Ready Condition."),
    column("Up-to-date", "integer", "The total number of nodes that are running updated daemon "
                                    "pod"),
    column("Available", "integer", "The number of nodes that should be running the daemon pod and "
                                   "have one or more of the daemon pod running and available."),
    column("Node Selector", description="NodeSelector is a selector which must be true for the pod "
                                        "to fit on a node."),
    _age_col(), *_WORKLOAD_WIDE,
    _wide("Selector", "A label query over pods that are managed by the daemon set."),
])
def _daemon_set(obj: dict[str, Any], now: float) -> Cells:
    status = _dict(obj.get("status"))
    return [_name(obj), _int(status.get("desiredNumberScheduled")),
            _int(status.get("currentNumberScheduled")), _int(status.get("numberReady")),
            _int(status.get("updatedNumberScheduled")), _int(status.get("numberAvailable")),
            format_labels(_get(obj, "spec", "template", "spec", "nodeSelector")), _age(obj, now),
            *_containers_cells(obj), format_label_selector(_get(obj, "spec", "selector"))]


@printer(columns=[
    _name_col(), column("Ready", description="Number of the pod with ready state"), _age_col(),
    *_WORKLOAD_WIDE,
])
def _stateful_set(obj: dict[str, Any], now: float) -> Cells:
    ready = _int(_get(obj, "status", "readyReplicas"))
    return [_name(obj), f"{ready}/{_int(_get(obj, 'spec', 'replicas'), 1)}", _age(obj, now),
            *_containers_cells(obj)]


def _replicas_fields(o: dict[str, Any]) -> dict[str, str]:
    return {"status.replicas": field_int(_get(o, "status", "replicas"))}


_WORKLOADS = WorkloadStrategy()
DEPLOYMENT = Kind(DEPLOYMENTS, _WORKLOADS, _deployment)
REPLICASET = Kind(REPLICASETS, _WORKLOADS, _replica_set, _replicas_fields)
DAEMONSET = Kind(DAEMONSETS, _WORKLOADS, _daemon_set)
STATEFULSET = Kind(STATEFULSETS, _WORKLOADS, _stateful_set)
CONTROLLERREVISION = Kind(CONTROLLERREVISIONS)
