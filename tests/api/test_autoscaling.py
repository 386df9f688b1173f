"""HorizontalPodAutoscaler data rules: v1 <-> v2 conversion as upstream (round trips lose
nothing), defaults, validation field paths and the TARGETS column."""

from __future__ import annotations

import copy
import json

from atoll.api.resources import autoscaling
from atoll.api.resources.autoscaling_convert import BEHAVIOR, METRIC_SPECS, convert

V2 = {
    "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
    "metadata": {"name": "web", "namespace": "ns", "annotations": {"keep": "me"}},
    "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
             "minReplicas": 2, "maxReplicas": 9,
             "metrics": [
                 {"type": "Pods", "pods": {"metric": {"name": "qps"},
                                           "target": {"type": "AverageValue",
                                                      "averageValue": "10"}}},
                 {"type": "Resource", "resource": {"name": "cpu", "target": {
                     "type": "Utilization", "averageUtilization": 70}}},
                 {"type": "ContainerResource", "containerResource": {
                     "name": "memory", "container": "app",
                     "target": {"type": "AverageValue", "averageValue": "1Gi"}}}],
             "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                                      "policies": [{"type": "Pods", "value": 4,
                                                    "periodSeconds": 15}]},
                          "scaleDown": {"selectPolicy": "Min", "policies": [
                              {"type": "Percent", "value": 10, "periodSeconds": 60}]}}},
    "status": {"currentReplicas": 3, "desiredReplicas": 4,
               "currentMetrics": [{"type": "Resource", "resource": {
                   "name": "cpu", "current": {"averageUtilization": 91,
                                              "averageValue": "91m"}}}],
               "conditions": [{"type": "AbleToScale", "status": "True",
                               "lastTransitionTime": "2026-01-01T00:00:00Z",
                               "reason": "SucceededRescale", "message": "ok"}]},
}


def test_v2_to_v1_keeps_the_rest_in_upstreams_annotations_and_back() -> None:
    v1 = convert(copy.deepcopy(V2), "autoscaling/v1")
    assert v1["apiVersion"] == "autoscaling/v1"
    assert v1["spec"] == {"scaleTargetRef": V2["spec"]["scaleTargetRef"], "minReplicas": 2,
                          "maxReplicas": 9, "targetCPUUtilizationPercentage": 70}
    assert v1["status"] == {"currentReplicas": 3, "desiredReplicas": 4,
                            "currentCPUUtilizationPercentage": 91}
    notes = v1["metadata"]["annotations"]
    assert notes["keep"] == "me"
    assert json.loads(notes[METRIC_SPECS]) == [
        {"type": "Pods", "pods": {"metricName": "qps", "targetAverageValue": "10"}},
        {"type": "ContainerResource", "containerResource": {
            "name": "memory", "container": "app", "targetAverageValue": "1Gi"}}]
    assert json.loads(notes[BEHAVIOR])["ScaleDown"] == {
        "StabilizationWindowSeconds": None, "SelectPolicy": "Min",
        "Policies": [{"Type": "Percent", "Value": 10, "PeriodSeconds": 60}]}
    back = convert(v1, "autoscaling/v2")
    assert back["metadata"]["annotations"] == {"keep": "me"}
    m = V2["spec"]["metrics"]
    # as upstream: the CPU target v1 carries itself comes back after the annotation's metrics
    assert back["spec"] == {**V2["spec"], "metrics": [m[0], m[2], m[1]]}
    assert back["status"] == V2["status"]


def test_a_bare_v1_gets_the_default_cpu_target() -> None:
    v2 = convert({"apiVersion": "autoscaling/v1", "metadata": {"name": "x"},
                  "spec": {"maxReplicas": 3}, "status": {"currentCPUUtilizationPercentage": 5}},
                 "autoscaling/v2")
    assert v2["spec"]["metrics"] == [{"type": "Resource", "resource": {"name": "cpu", "target": {
        "type": "Utilization", "averageUtilization": 80}}}]
    assert v2["status"]["currentMetrics"][0]["resource"]["current"] == {"averageUtilization": 5}
    assert "annotations" not in v2["metadata"]


def test_defaults_and_validation_paths() -> None:
    obj = {"spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 2,
                    "behavior": {"scaleDown": {"stabilizationWindowSeconds": 30}}}}
    autoscaling.apply_defaults(obj)
    spec = obj["spec"]
    assert spec["minReplicas"] == 1 and spec["metrics"][0]["resource"]["name"] == "cpu"
    assert spec["behavior"]["scaleDown"] == {"selectPolicy": "Max", "stabilizationWindowSeconds": 30,
                                             "policies": [{"type": "Percent", "value": 100,
                                                           "periodSeconds": 15}]}
    assert autoscaling.validate_spec(spec, "spec") == []
    spec["behavior"]["scaleUp"]["policies"][1]["periodSeconds"] = 0
    spec["metrics"].append({"type": "Resource", "pods": {}})
    fields = [c.field for c in autoscaling.validate_spec(spec, "spec")]
    assert fields == ["spec.metrics[1].resource", "spec.metrics[1].pods",
                      "spec.behavior.scaleUp.policies[1].periodSeconds"]


def test_targets_column_as_upstream() -> None:
    specs, statuses = V2["spec"]["metrics"], [
        {"type": "Pods", "pods": {"current": {"averageValue": "12"}}},
        {"type": "Resource", "resource": {"current": {"averageUtilization": 91}}}]
    assert autoscaling.format_metrics(specs, statuses) == "12/10, cpu: 91%/70% + 1 more..."
    assert autoscaling.format_metrics(specs[1:2], []) == "cpu: <unknown>/70%"
    assert autoscaling.format_metrics([], []) == "<none>"
