"""autoscaling: HorizontalPodAutoscalers, served as v2 (stored) and v1 (converted).

Defaults, checks and the printed columns are upstream's: a default CPU target of 80% when
no metric is named, behaviour rules filled in when a behaviour is given, ``minReplicas``
at least 1 (scale-to-zero is an alpha feature upstream, off by default), policies within
upstream's bounds.  Conversion lives in ``autoscaling_convert``.
"""

from __future__ import annotations

from typing import Any

from atoll.api import errors, quantity, validation
from atoll.api.printing import (Cells, _age, _age_col, _dict, _int, _list, _name, _name_col,
                                _str, column, printer)
from atoll.api.resources.autoscaling_convert import (DEFAULT_CPU_UTILIZATION, V1, convert,
                                                     cpu_utilization_metric, to_v2)
from atoll.api.resources.base import Kind
from atoll.api.resourcetype import STATUS, builtin
from atoll.api.strategy import Strategy

HPAS_V2 = builtin("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers",
                  True, short_names=("hpa",), categories=("all",), subresources=(STATUS,),
                  name_rule="path-segment")
HPAS_V1 = builtin("autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers",
                  True, short_names=("hpa",), categories=("all",), subresources=(STATUS,),
                  name_rule="path-segment", storage_version="v2")

METRIC_TYPES = ["ContainerResource", "External", "Object", "Pods", "Resource"]
TARGET_TYPES = ("Utilization", "Value", "AverageValue")
SELECT_POLICIES = ["Disabled", "Max", "Min"]
POLICY_TYPES = ["Percent", "Pods"]
MAX_STABILIZATION_SECONDS = 3600
MAX_PERIOD_SECONDS = 1800


def default_scale_up() -> dict[str, Any]:
    return {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
        {"type": "Pods", "value": 4, "periodSeconds": 15},
        {"type": "Percent", "value": 100, "periodSeconds": 15}]}


def default_scale_down() -> dict[str, Any]:
    # no stabilizationWindowSeconds: the controller's --horizontal-pod-autoscaler-downscale-
    # stabilization (300 s) applies, as upstream
    return {"selectPolicy": "Max", "policies": [
        {"type": "Percent", "value": 100, "periodSeconds": 15}]}


def _fill_rules(given: Any, defaults: dict[str, Any]) -> Any:
    if given is None:
        return defaults
    if not isinstance(given, dict):
        return given
    out = dict(defaults)
    for k in ("selectPolicy", "stabilizationWindowSeconds", "policies", "tolerance"):
        if given.get(k) is not None:
            out[k] = given[k]
    return out


def apply_defaults(obj: dict[str, Any]) -> None:
    """autoscaling/v2's SetDefaults_HorizontalPodAutoscaler."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    if spec.get("minReplicas") is None:
        spec["minReplicas"] = 1
    if not spec.get("metrics"):
        spec["metrics"] = [cpu_utilization_metric(DEFAULT_CPU_UTILIZATION)]
    behavior = spec.get("behavior")
    if isinstance(behavior, dict):
        behavior["scaleUp"] = _fill_rules(behavior.get("scaleUp"), default_scale_up())
        behavior["scaleDown"] = _fill_rules(behavior.get("scaleDown"), default_scale_down())


class HorizontalPodAutoscalerStrategy(Strategy):
    def prepare_create(self, svc, rt, obj, opts):  # type: ignore[no-untyped-def]
        apply_defaults(obj)
        obj["status"] = {"desiredReplicas": 0}  # the controller owns status, as upstream

    def prepare_update(self, rt, old, new, subresource=""):  # type: ignore[no-untyped-def]
        if subresource != "status":
            apply_defaults(new)

    def validate(self, rt, obj):  # type: ignore[no-untyped-def]
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return [errors.required("spec")]
        return validate_spec(spec, "spec")


# -- validation ------------------------------------------------------------------------------------
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate_spec(spec: dict[str, Any], path: str) -> list[errors.Cause]:
    causes = _cross_version_ref(spec.get("scaleTargetRef"), f"{path}.scaleTargetRef")
    low = spec.get("minReplicas")
    if low is not None and (not _is_int(low) or low < 1):
        causes.append(errors.invalid_value(f"{path}.minReplicas", low,
                                           "must be greater than or equal to 1"))
    high = spec.get("maxReplicas")
    if not _is_int(high) or high < 1:
        causes.append(errors.invalid_value(f"{path}.maxReplicas", high if high is not None else 0,
                                           "must be greater than 0"))
    elif _is_int(low) and high < low:
        causes.append(errors.invalid_value(f"{path}.maxReplicas", high,
                                           "must be greater than or equal to `minReplicas`"))
    metrics = spec.get("metrics")
    if metrics is not None:
        if not isinstance(metrics, list):
            causes.append(errors.invalid_value(f"{path}.metrics", metrics, "must be a list"))
        else:
            for i, m in enumerate(metrics):
                causes += _metric_spec(m, f"{path}.metrics[{i}]")
    behavior = spec.get("behavior")
    if isinstance(behavior, dict):
        for direction in ("scaleUp", "scaleDown"):
            causes += _scaling_rules(behavior.get(direction), f"{path}.behavior.{direction}")
    return causes


def _cross_version_ref(ref: Any, path: str) -> list[errors.Cause]:
    ref = ref if isinstance(ref, dict) else {}
    causes = []
    for field in ("kind", "name"):
        value = ref.get(field)
        if not isinstance(value, str) or not value:
            causes.append(errors.required(f"{path}.{field}"))
        else:
            causes += [errors.invalid_value(f"{path}.{field}", value, msg)
                       for msg in validation.is_valid_path_segment_name(value)]
    return causes


def _metric_spec(m: Any, path: str) -> list[errors.Cause]:
    if not isinstance(m, dict):
        return [errors.invalid_value(path, m, "must be an object")]
    causes: list[errors.Cause] = []
    kind = m.get("type")
    if not kind:
        causes.append(errors.Cause("FieldValueRequired",
                                   "Required value: must specify a metric source type",
                                   f"{path}.type"))
    if kind not in METRIC_TYPES:
        causes.append(errors.not_supported(f"{path}.type", kind if kind is not None else "",
                                           METRIC_TYPES))
        return causes
    expected = kind[0].lower() + kind[1:]
    present = [f for f in ("object", "pods", "resource", "containerResource", "external")
               if m.get(f) is not None]
    src = m.get(expected)
    if src is None:
        causes.append(errors.Cause("FieldValueRequired", "Required value: must populate "
                                   "information for the given metric source",
                                   f"{path}.{expected}"))
    elif not isinstance(src, dict):
        causes.append(errors.invalid_value(f"{path}.{expected}", src, "must be an object"))
    else:
        causes += _SOURCES[kind](src, f"{path}.{expected}")
    for f in present:
        if f != expected:
            causes.append(errors.forbidden_field(f"{path}.{f}",
                                                 "must populate the given metric source only"))
    return causes


def _resource_source(src: dict[str, Any], path: str, container: bool) -> list[errors.Cause]:
    causes = []
    if not src.get("name"):
        causes.append(errors.Cause("FieldValueRequired",
                                   "Required value: must specify a resource name", f"{path}.name"))
    if container:
        c = src.get("container")
        if not c:
            causes.append(errors.Cause("FieldValueRequired",
                                       "Required value: must specify a container",
                                       f"{path}.container"))
        elif isinstance(c, str):
            causes += [errors.invalid_value(f"{path}.container", c, msg)
                       for msg in validation.is_dns1123_label(c)]
    target = src.get("target") if isinstance(src.get("target"), dict) else {}
    causes += _metric_target(target, f"{path}.target")
    if target.get("averageUtilization") is None and target.get("averageValue") is None:
        causes.append(errors.Cause("FieldValueRequired", "Required value: must set either a "
                                   "target raw value or a target utilization",
                                   f"{path}.target.averageUtilization"))
    if target.get("averageUtilization") is not None and target.get("averageValue") is not None:
        causes.append(errors.forbidden_field(f"{path}.target.averageValue", "may not set both a "
                                             "target raw value and a target utilization"))
    return causes


def _metric_identifier(metric: Any, path: str) -> list[errors.Cause]:
    name = _dict(metric).get("name")
    if not name:
        return [errors.Cause("FieldValueRequired", "Required value: must specify a metric name",
                             f"{path}.name")]
    if not isinstance(name, str):
        return [errors.invalid_value(f"{path}.name", name, "must be a string")]
    return [errors.invalid_value(f"{path}.name", name, msg)
            for msg in validation.is_valid_path_segment_name(name)]


def _pods_source(src: dict[str, Any], path: str) -> list[errors.Cause]:
    causes = _metric_identifier(src.get("metric"), f"{path}.metric")
    target = _dict(src.get("target"))
    causes += _metric_target(target, f"{path}.target")
    if target.get("averageValue") is None:
        causes.append(errors.Cause("FieldValueRequired", "Required value: must specify a "
                                   "positive target averageValue",
                                   f"{path}.target.averageValue"))
    return causes


def _value_source(src: dict[str, Any], path: str, described: bool) -> list[errors.Cause]:
    causes = []
    if described:
        causes += _cross_version_ref(src.get("describedObject"), f"{path}.describedObject")
    causes += _metric_identifier(src.get("metric"), f"{path}.metric")
    target = _dict(src.get("target"))
    causes += _metric_target(target, f"{path}.target")
    if target.get("value") is None and target.get("averageValue") is None:
        causes.append(errors.Cause("FieldValueRequired", "Required value: must set either a "
                                   "target value or averageValue", f"{path}.target.value"))
    return causes


def _metric_target(t: dict[str, Any], path: str) -> list[errors.Cause]:
    causes = []
    kind = t.get("type")
    if not kind:
        causes.append(errors.Cause("FieldValueRequired",
                                   "Required value: must specify a metric target type",
                                   f"{path}.type"))
    if kind not in TARGET_TYPES:
        causes.append(errors.invalid_value(f"{path}.type", kind if kind is not None else "",
                                           "must be either Utilization, Value, or AverageValue"))
    for f in ("value", "averageValue"):
        if t.get(f) is None:
            continue
        try:
            positive = quantity.parse(t[f]) > 0
        except ValueError as exc:
            causes.append(errors.invalid_value(f"{path}.{f}", t[f], str(exc)))
            continue
        if not positive:
            causes.append(errors.invalid_value(f"{path}.{f}", t[f], "must be positive"))
    util = t.get("averageUtilization")
    if util is not None and (not _is_int(util) or util < 1):
        causes.append(errors.invalid_value(f"{path}.averageUtilization", util,
                                           "must be greater than 0"))
    return causes


_SOURCES = {
    "Resource": lambda s, p: _resource_source(s, p, False),
    "ContainerResource": lambda s, p: _resource_source(s, p, True),
    "Pods": _pods_source,
    "Object": lambda s, p: _value_source(s, p, True),
    "External": lambda s, p: _value_source(s, p, False),
}


def _scaling_rules(rules: Any, path: str) -> list[errors.Cause]:
    if rules is None:
        return []
    if not isinstance(rules, dict):
        return [errors.invalid_value(path, rules, "must be an object")]
    causes = []
    window = rules.get("stabilizationWindowSeconds")
    if window is not None:
        if not _is_int(window) or window < 0:
            causes.append(errors.invalid_value(f"{path}.stabilizationWindowSeconds", window,
                                               "must be greater than or equal to zero"))
        elif window > MAX_STABILIZATION_SECONDS:
            causes.append(errors.invalid_value(
                f"{path}.stabilizationWindowSeconds", window,
                f"must be less than or equal to {MAX_STABILIZATION_SECONDS}"))
    select = rules.get("selectPolicy")
    if select is not None and select not in SELECT_POLICIES:
        causes.append(errors.not_supported(f"{path}.selectPolicy", select, SELECT_POLICIES))
    policies = rules.get("policies")
    if not policies or not isinstance(policies, list):
        causes.append(errors.Cause("FieldValueRequired",
                                   "Required value: must specify at least one Policy",
                                   f"{path}.policies"))
        return causes
    for i, p in enumerate(policies):
        p_path = f"{path}.policies[{i}]"
        p = _dict(p)
        if p.get("type") not in POLICY_TYPES:
            causes.append(errors.not_supported(f"{p_path}.type", p.get("type") or "",
                                               POLICY_TYPES))
        value = p.get("value")
        if not _is_int(value) or value <= 0:
            causes.append(errors.invalid_value(f"{p_path}.value", value if value is not None
                                               else 0, "must be greater than zero"))
        period = p.get("periodSeconds")
        if not _is_int(period) or period <= 0:
            causes.append(errors.invalid_value(f"{p_path}.periodSeconds", period
                                               if period is not None else 0,
                                               "must be greater than zero"))
        elif period > MAX_PERIOD_SECONDS:
            causes.append(errors.invalid_value(f"{p_path}.periodSeconds", period,
                                               f"must be less than or equal to "
                                               f"{MAX_PERIOD_SECONDS}"))
    return causes


# -- printing --------------------------------------------------------------------------------------
_REF_DESC = ("scaleTargetRef points to the target resource to scale, and is used to the pods for "
             "which metrics should be collected, as well as to actually change the replica count.")
_METRICS_DESC = ("metrics contains the specifications for which to use to calculate the desired "
                 "replica count (the maximum replica count across all metrics will be used).  The "
                 "desired replica count is calculated multiplying the ratio between the target "
                 "value and the current value by the current number of pods.  Ergo, metrics used "
                 "must decrease as the pod count is increased, and vice-versa.  See the individual "
                 "metric source types for more information about how each type of metric must "
                 "respond.")
_MIN_DESC = ("minReplicas is the lower limit for the number of replicas to which the autoscaler "
             "can scale down.  It defaults to 1 pod.  minReplicas is allowed to be 0 if the alpha "
             "feature gate HPAScaleToZero is enabled and at least one Object or External metric "
             "is configured.  Scaling is active as long as at least one metric value is "
             "available.")
_MAX_DESC = ("maxReplicas is the upper limit for the number of replicas to which the autoscaler "
             "can scale up. It cannot be less that minReplicas.")
_CURRENT_DESC = ("currentReplicas is current number of replicas of pods managed by this "
                 "autoscaler, as last seen by the autoscaler.")


def format_metrics(specs: list[Any], statuses: list[Any]) -> str:
    """Upstream's formatHPAMetrics: ``cpu: 12%/50%``, at most two, then ``+ N more...``."""
    if not specs:
        return "<none>"
    out = []
    for i, spec in enumerate(specs):
        spec = _dict(spec)
        status = _dict(statuses[i]) if i < len(statuses) else {}
        kind = spec.get("type")
        field = kind[0].lower() + kind[1:] if isinstance(kind, str) and kind else ""
        src, cur = _dict(spec.get(field)), _dict(_dict(status.get(field)).get("current"))
        target = _dict(src.get("target"))
        if kind in ("External", "Object"):
            if target.get("averageValue") is not None:
                current = _str(cur.get("averageValue")) or "<unknown>"
                out.append(f"{current}/{target['averageValue']} (avg)")
            else:
                current = _str(cur.get("value")) or ("0" if status.get(field) else "<unknown>")
                out.append(f"{current}/{target.get('value') or '0'}")
        elif kind == "Pods":
            current = _str(cur.get("averageValue")) or ("0" if status.get(field) else "<unknown>")
            out.append(f"{current}/{target.get('averageValue') or '0'}")
        elif kind in ("Resource", "ContainerResource"):
            name = _str(src.get("name"))
            if target.get("averageValue") is not None:
                current = _str(cur.get("averageValue")) or (
                    "0" if status.get(field) else "<unknown>")
                out.append(f"{name}: {current}/{target['averageValue']}")
            else:
                util = cur.get("averageUtilization")
                current = f"{util}%" if status.get(field) and util is not None else "<unknown>"
                want = target.get("averageUtilization")
                out.append(f"{name}: {current}/{want}%" if want is not None
                           else f"{name}: {current}/<auto>")
        else:
            out.append("<unknown type>")
    if len(out) > 2:
        return f"{', '.join(out[:2])} + {len(out) - 2} more..."
    return ", ".join(out)


@printer(columns=[
    _name_col(), column("Reference", description=_REF_DESC),
    column("Targets", description=_METRICS_DESC), column("MinPods", description=_MIN_DESC),
    column("MaxPods", description=_MAX_DESC), column("Replicas", description=_CURRENT_DESC),
    _age_col(),
])
def _hpa(obj: dict[str, Any], now: float) -> Cells:
    if obj.get("apiVersion") == V1:
        obj = to_v2(obj)
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    ref = _dict(spec.get("scaleTargetRef"))
    low = spec.get("minReplicas")
    return [_name(obj), f"{_str(ref.get('kind'))}/{_str(ref.get('name'))}",
            format_metrics(_list(spec.get("metrics")), _list(status.get("currentMetrics"))),
            str(low) if _is_int(low) else "<unset>", _int(spec.get("maxReplicas")),
            _int(status.get("currentReplicas")), _age(obj, now)]

HPA = Kind(HPAS_V2, HorizontalPodAutoscalerStrategy(), _hpa, other_versions=(HPAS_V1,),
           convert=convert)

__all__ = ["HPA", "HPAS_V1", "HPAS_V2", "apply_defaults", "format_metrics"]
