"""autoscaling/v1 <-> autoscaling/v2 HorizontalPodAutoscalers, as upstream converts them.

Objects are stored as v2.  v1 has only ``targetCPUUtilizationPercentage`` and
``currentCPUUtilizationPercentage``; everything else v2 holds (other metrics, their
statuses, conditions, behaviour) rides along in the annotations upstream uses for the
round trip, so reading an HPA as v1 and writing it back loses nothing.  Bodies that arrive
as v1 may be malformed: conversion never raises, it carries odd values over for the v2
checks to report.
"""

from __future__ import annotations

import copy
import json
from typing import Any

V1, V2 = "autoscaling/v1", "autoscaling/v2"
METRIC_SPECS = "autoscaling.alpha.kubernetes.io/metrics"
METRIC_STATUSES = "autoscaling.alpha.kubernetes.io/current-metrics"
CONDITIONS = "autoscaling.alpha.kubernetes.io/conditions"
BEHAVIOR = "autoscaling.alpha.kubernetes.io/behavior"
ROUND_TRIP = (METRIC_SPECS, METRIC_STATUSES, CONDITIONS, BEHAVIOR)
#: the CPU target v1 implies when it names none (upstream's DefaultCPUUtilization)
DEFAULT_CPU_UTILIZATION = 80


def convert(obj: dict[str, Any], api_version: str) -> dict[str, Any]:
    """``obj`` (either version) as ``api_version``."""
    have = obj.get("apiVersion")
    if have == api_version:
        return obj
    if api_version == V1:
        return to_v1(obj if have == V2 else to_v2(obj))
    if api_version == V2 and have == V1:
        return to_v2(obj)
    out = dict(obj)
    out["apiVersion"] = api_version
    return out


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _prune(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def cpu_utilization_metric(percent: Any) -> dict[str, Any]:
    return {"type": "Resource", "resource": {"name": "cpu", "target": {
        "type": "Utilization", "averageUtilization": percent}}}


# -- v2 -> v1 --------------------------------------------------------------------------------------
def to_v1(obj: dict[str, Any]) -> dict[str, Any]:
    out = {k: copy.deepcopy(v) for k, v in obj.items() if k not in ("spec", "status")}
    out["apiVersion"] = V1
    meta = out.setdefault("metadata", {})
    annotations = {k: v for k, v in _d(meta.get("annotations")).items() if k not in ROUND_TRIP}
    spec2, status2 = obj.get("spec"), obj.get("status")
    if isinstance(spec2, dict):
        spec1 = {k: copy.deepcopy(v) for k, v in spec2.items() if k not in ("metrics", "behavior")}
        others = []
        for m in spec2.get("metrics") or []:
            res = _d(_d(m).get("resource"))
            target = _d(res.get("target"))
            if _d(m).get("type") == "Resource" and res.get("name") == "cpu" and \
                    target.get("type") == "Utilization":
                if target.get("averageUtilization") is not None:
                    spec1["targetCPUUtilizationPercentage"] = target["averageUtilization"]
                continue
            others.append(_metric_spec_v1(_d(m)))
        if others:
            annotations[METRIC_SPECS] = _dumps(others)
        if isinstance(spec2.get("behavior"), dict):
            annotations[BEHAVIOR] = _dumps(_behavior_go(spec2["behavior"]))
        out["spec"] = spec1
    elif spec2 is not None:
        out["spec"] = spec2
    if isinstance(status2, dict):
        status1 = {k: copy.deepcopy(v) for k, v in status2.items()
                   if k not in ("currentMetrics", "conditions")}
        current = [m for m in status2.get("currentMetrics") or [] if isinstance(m, dict)]
        for m in current:
            res = _d(m.get("resource"))
            util = _d(res.get("current")).get("averageUtilization")
            if m.get("type") == "Resource" and res.get("name") == "cpu" and util is not None:
                status1["currentCPUUtilizationPercentage"] = util
        if current:
            annotations[METRIC_STATUSES] = _dumps([_metric_status_v1(m) for m in current])
        conditions = [c for c in status2.get("conditions") or [] if isinstance(c, dict)]
        if conditions:
            annotations[CONDITIONS] = _dumps([_prune({
                "type": c.get("type"), "status": c.get("status"),
                "lastTransitionTime": c.get("lastTransitionTime"), "reason": c.get("reason"),
                "message": c.get("message")}) for c in conditions])
        status1.setdefault("currentReplicas", 0)
        status1.setdefault("desiredReplicas", 0)
        out["status"] = status1
    elif status2 is not None:
        out["status"] = status2
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    return out


def _metric_spec_v1(m: dict[str, Any]) -> dict[str, Any]:
    kind = m.get("type")
    out: dict[str, Any] = {"type": kind}
    if kind == "Resource" or kind == "ContainerResource":
        field = "resource" if kind == "Resource" else "containerResource"
        src = _d(m.get(field))
        target = _d(src.get("target"))
        out[field] = _prune({"name": src.get("name"), "container": src.get("container"),
                             "targetAverageUtilization": target.get("averageUtilization"),
                             "targetAverageValue": target.get("averageValue")})
    elif kind == "Pods":
        src = _d(m.get("pods"))
        metric = _d(src.get("metric"))
        out["pods"] = _prune({"metricName": metric.get("name"),
                              "targetAverageValue": _d(src.get("target")).get("averageValue"),
                              "selector": metric.get("selector")})
    elif kind == "Object":
        src = _d(m.get("object"))
        metric, target = _d(src.get("metric")), _d(src.get("target"))
        out["object"] = _prune({"target": src.get("describedObject"),
                                "metricName": metric.get("name"),
                                "targetValue": target.get("value"),
                                "selector": metric.get("selector"),
                                "averageValue": target.get("averageValue")})
    elif kind == "External":
        src = _d(m.get("external"))
        metric, target = _d(src.get("metric")), _d(src.get("target"))
        out["external"] = _prune({"metricName": metric.get("name"),
                                  "metricSelector": metric.get("selector"),
                                  "targetValue": target.get("value"),
                                  "targetAverageValue": target.get("averageValue")})
    return out


def _metric_status_v1(m: dict[str, Any]) -> dict[str, Any]:
    kind = m.get("type")
    out: dict[str, Any] = {"type": kind}
    if kind == "Resource" or kind == "ContainerResource":
        field = "resource" if kind == "Resource" else "containerResource"
        src = _d(m.get(field))
        cur = _d(src.get("current"))
        out[field] = _prune({"name": src.get("name"), "container": src.get("container"),
                             "currentAverageUtilization": cur.get("averageUtilization"),
                             "currentAverageValue": cur.get("averageValue") or "0"})
    elif kind == "Pods":
        src = _d(m.get("pods"))
        metric = _d(src.get("metric"))
        out["pods"] = _prune({"metricName": metric.get("name"),
                              "currentAverageValue": _d(src.get("current")).get("averageValue")
                              or "0", "selector": metric.get("selector")})
    elif kind == "Object":
        src = _d(m.get("object"))
        metric, cur = _d(src.get("metric")), _d(src.get("current"))
        out["object"] = _prune({"target": src.get("describedObject"),
                                "metricName": metric.get("name"),
                                "currentValue": cur.get("value") or "0",
                                "selector": metric.get("selector"),
                                "averageValue": cur.get("averageValue")})
    elif kind == "External":
        src = _d(m.get("external"))
        metric, cur = _d(src.get("metric")), _d(src.get("current"))
        out["external"] = _prune({"metricName": metric.get("name"),
                                  "metricSelector": metric.get("selector"),
                                  "currentValue": cur.get("value") or "0",
                                  "currentAverageValue": cur.get("averageValue")})
    return out


def _behavior_go(b: dict[str, Any]) -> dict[str, Any]:
    """The behaviour as upstream writes it: its internal type, Go field names, nil as null."""
    def rules(r: Any) -> Any:
        if not isinstance(r, dict):
            return None
        policies = r.get("policies")
        return {"StabilizationWindowSeconds": r.get("stabilizationWindowSeconds"),
                "SelectPolicy": r.get("selectPolicy"),
                "Policies": None if not isinstance(policies, list) else [
                    {"Type": _d(p).get("type"), "Value": _d(p).get("value"),
                     "PeriodSeconds": _d(p).get("periodSeconds")} for p in policies]}
    return {"ScaleUp": rules(b.get("scaleUp")), "ScaleDown": rules(b.get("scaleDown"))}


# -- v1 -> v2 --------------------------------------------------------------------------------------
def to_v2(obj: dict[str, Any]) -> dict[str, Any]:
    out = {k: copy.deepcopy(v) for k, v in obj.items() if k not in ("spec", "status")}
    out["apiVersion"] = V2
    meta = out.get("metadata")
    annotations = _d(meta.get("annotations")) if isinstance(meta, dict) else {}
    spec1, status1 = obj.get("spec"), obj.get("status")
    if isinstance(spec1, dict):
        spec2 = {k: copy.deepcopy(v) for k, v in spec1.items()
                 if k != "targetCPUUtilizationPercentage"}
        metrics = [_metric_spec_v2(_d(m)) for m in _load_list(annotations.get(METRIC_SPECS))]
        if spec1.get("targetCPUUtilizationPercentage") is not None:
            metrics.append(cpu_utilization_metric(spec1["targetCPUUtilizationPercentage"]))
        spec2["metrics"] = metrics or [cpu_utilization_metric(DEFAULT_CPU_UTILIZATION)]
        behavior = _load(annotations.get(BEHAVIOR))
        if isinstance(behavior, dict):
            spec2["behavior"] = _behavior_v2(behavior)
        out["spec"] = spec2
    elif spec1 is not None:
        out["spec"] = spec1
    if isinstance(status1, dict):
        status2 = {k: copy.deepcopy(v) for k, v in status1.items()
                   if k != "currentCPUUtilizationPercentage"}
        current = [_metric_status_v2(_d(m))
                   for m in _load_list(annotations.get(METRIC_STATUSES))]
        if not current and status1.get("currentCPUUtilizationPercentage") is not None:
            current = [{"type": "Resource", "resource": {"name": "cpu", "current": {
                "averageUtilization": status1["currentCPUUtilizationPercentage"]}}}]
        if current:
            status2["currentMetrics"] = current
        conditions = [c for c in _load_list(annotations.get(CONDITIONS)) if isinstance(c, dict)]
        if conditions:
            status2["conditions"] = conditions
        out["status"] = status2
    elif status1 is not None:
        out["status"] = status1
    if isinstance(meta, dict) and isinstance(meta.get("annotations"), dict):
        kept = {k: v for k, v in meta["annotations"].items() if k not in ROUND_TRIP}
        if kept:
            meta["annotations"] = kept
        else:
            meta.pop("annotations")
    return out


def _load(text: Any) -> Any:
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None  # upstream ignores an annotation it cannot decode


def _load_list(text: Any) -> list[Any]:
    value = _load(text)
    return value if isinstance(value, list) else []


def _target(**fields: Any) -> dict[str, Any]:
    return _prune(fields)


def _metric_spec_v2(m: dict[str, Any]) -> dict[str, Any]:
    kind = m.get("type")
    out: dict[str, Any] = {"type": kind}
    if kind == "Resource" or kind == "ContainerResource":
        field = "resource" if kind == "Resource" else "containerResource"
        src = _d(m.get(field))
        util = src.get("targetAverageUtilization")
        out[field] = _prune({"name": src.get("name"), "container": src.get("container"),
                             "target": _target(
                                 type="AverageValue" if util is None else "Utilization",
                                 averageUtilization=util,
                                 averageValue=src.get("targetAverageValue"))})
    elif kind == "Pods":
        src = _d(m.get("pods"))
        out["pods"] = {"metric": _prune({"name": src.get("metricName"),
                                         "selector": src.get("selector")}),
                       "target": _target(type="AverageValue",
                                         averageValue=src.get("targetAverageValue"))}
    elif kind == "Object":
        src = _d(m.get("object"))
        avg = src.get("averageValue")
        out["object"] = {"describedObject": src.get("target"),
                         "metric": _prune({"name": src.get("metricName"),
                                           "selector": src.get("selector")}),
                         "target": _target(type="Value" if avg is None else "AverageValue",
                                           value=src.get("targetValue"), averageValue=avg)}
    elif kind == "External":
        src = _d(m.get("external"))
        value = src.get("targetValue")
        out["external"] = {"metric": _prune({"name": src.get("metricName"),
                                             "selector": src.get("metricSelector")}),
                           "target": _target(type="AverageValue" if value is None else "Value",
                                             value=value,
                                             averageValue=src.get("targetAverageValue"))}
    return out


def _metric_status_v2(m: dict[str, Any]) -> dict[str, Any]:
    kind = m.get("type")
    out: dict[str, Any] = {"type": kind}
    if kind == "Resource" or kind == "ContainerResource":
        field = "resource" if kind == "Resource" else "containerResource"
        src = _d(m.get(field))
        out[field] = _prune({"name": src.get("name"), "container": src.get("container"),
                             "current": _prune({
                                 "averageUtilization": src.get("currentAverageUtilization"),
                                 "averageValue": src.get("currentAverageValue")})})
    elif kind == "Pods":
        src = _d(m.get("pods"))
        out["pods"] = {"metric": _prune({"name": src.get("metricName"),
                                         "selector": src.get("selector")}),
                       "current": _prune({"averageValue": src.get("currentAverageValue")})}
    elif kind == "Object":
        src = _d(m.get("object"))
        out["object"] = {"describedObject": src.get("target"),
                         "metric": _prune({"name": src.get("metricName"),
                                           "selector": src.get("selector")}),
                         "current": _prune({"value": src.get("currentValue"),
                                            "averageValue": src.get("averageValue")})}
    elif kind == "External":
        src = _d(m.get("external"))
        out["external"] = {"metric": _prune({"name": src.get("metricName"),
                                             "selector": src.get("metricSelector")}),
                           "current": _prune({"value": src.get("currentValue"),
                                              "averageValue": src.get("currentAverageValue")})}
    return out


def _behavior_v2(b: dict[str, Any]) -> dict[str, Any]:
    """Read the Go-named annotation back (Go's decoder matches field names in any case)."""
    def get(d: dict[str, Any], name: str) -> Any:
        for k, v in d.items():
            if isinstance(k, str) and k.lower() == name.lower():
                return v
        return None

    def rules(r: Any) -> dict[str, Any] | None:
        if not isinstance(r, dict):
            return None
        policies = get(r, "policies")
        return _prune({
            "stabilizationWindowSeconds": get(r, "stabilizationWindowSeconds"),
            "selectPolicy": get(r, "selectPolicy"),
            "policies": None if not isinstance(policies, list) else [
                _prune({"type": get(_d(p), "type"), "value": get(_d(p), "value"),
                        "periodSeconds": get(_d(p), "periodSeconds")}) for p in policies]})
    return _prune({"scaleUp": rules(get(b, "scaleUp")), "scaleDown": rules(get(b, "scaleDown"))})
