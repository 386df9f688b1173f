"""The HPA's arithmetic, as upstream's replica calculator and normalisation do it: utilisation
of requests, the 10% tolerance, unready and missing pods, stabilisation windows, Pods/Percent
policies with selectPolicy, and the min/max clamp."""

from __future__ import annotations

from typing import Any

import pytest

from atoll.api.resources import autoscaling
from atoll.api.timestamps import rfc3339
from atoll.controllers import hpa_behavior as hb
from atoll.controllers import hpa_replicas as hr

NOW = 1_767_225_600.0


def pod(name: str, cpu: str | None = "100m", *, phase: str = "Running", ready: bool = True,
        started: float = NOW - 3600, ready_at: float = NOW - 3500, deleting: bool = False,
        containers: int = 1) -> dict[str, Any]:
    resources = {"requests": {"cpu": cpu, "memory": "64Mi"}} if cpu else {}
    meta: dict[str, Any] = {"name": name, "namespace": "ns"}
    if deleting:
        meta["deletionTimestamp"] = rfc3339(NOW)
    return {"metadata": meta,
            "spec": {"containers": [{"name": f"c{i}", "resources": resources}
                                    for i in range(containers)]},
            "status": {"phase": phase, "startTime": rfc3339(started), "conditions": [
                {"type": "Ready", "status": "True" if ready else "False",
                 "lastTransitionTime": rfc3339(ready_at)}]}}


def usage(**millicores: int) -> dict[str, hr.PodMetric]:
    return {name: hr.PodMetric(v, NOW - 5, 10.0) for name, v in millicores.items()}


def test_utilisation_is_usage_over_requests_and_scales_by_the_ratio() -> None:
    pods = [pod("a"), pod("b")]
    p = hr.resource_replicas(2, 50, "cpu", pods, usage(a=100, b=100), NOW)
    assert (p.replicas, p.utilization, p.raw) == (4, 100, 100)
    p = hr.resource_replicas(2, 50, "cpu", pods, usage(a=10, b=20), NOW)
    assert (p.replicas, p.utilization) == (1, 15)  # ceil(0.3 * 2)


def test_changes_within_the_tolerance_are_no_change() -> None:
    pods = [pod("a"), pod("b")]
    assert hr.resource_replicas(2, 50, "cpu", pods, usage(a=54, b=54), NOW).replicas == 2
    assert hr.resource_replicas(2, 50, "cpu", pods, usage(a=46, b=46), NOW).replicas == 2
    assert hr.resource_replicas(2, 50, "cpu", pods, usage(a=56, b=56), NOW).replicas == 3
    assert hr.resource_replicas(2, 50, "cpu", pods, usage(a=56, b=56), NOW,
                                tolerance=0.2).replicas == 2


def test_missing_requests_and_no_pods_and_no_metrics_are_errors() -> None:
    with pytest.raises(hr.MetricError, match="missing request for cpu in container c0 of Pod a"):
        hr.resource_replicas(1, 50, "cpu", [pod("a", cpu=None)], usage(a=10), NOW)
    with pytest.raises(hr.MetricError, match="no pods returned by selector"):
        hr.resource_replicas(1, 50, "cpu", [], {}, NOW)
    with pytest.raises(hr.MetricError, match="did not receive metrics"):
        hr.resource_replicas(1, 50, "cpu", [pod("a", phase="Pending")], usage(), NOW)


def test_unready_pods_count_as_idle_on_a_scale_up() -> None:
    pods = [pod("a"), pod("b", ready=False, ready_at=NOW - 3590)]
    # b never became ready within the initial readiness delay: its sample is ignored
    p = hr.resource_replicas(2, 50, "cpu", pods, usage(a=100, b=100), NOW)
    assert p.replicas == 2  # b counts as idle: (100 + 0) / 200 is the 50% target, no change
    fresh = pod("c", started=NOW - 20, ready_at=NOW - 8)  # ready, but no full window since
    _, unready, _, _ = hr.group_pods([fresh], usage(c=100), "cpu", NOW)
    assert unready == {"c"}
    # memory has no warm-up: the same pod counts
    _, unready, _, _ = hr.group_pods([fresh], usage(c=100), "memory", NOW)
    assert unready == set()


def test_missing_pods_use_their_request_on_a_scale_down_and_nothing_on_a_scale_up() -> None:
    pods = [pod("a"), pod("b"), pod("c")]
    # scale-down: a and b idle, c missing counts as 100% of its request -> no change
    assert hr.resource_replicas(3, 50, "cpu", pods, usage(a=0, b=0), NOW).replicas == 2
    assert hr.resource_replicas(3, 90, "cpu", pods, usage(a=60, b=60), NOW).replicas == 3
    # scale-up: c counts as idle; 200+200+0 over 300 requested = 133% of a 50% target
    assert hr.resource_replicas(3, 50, "cpu", pods, usage(a=200, b=200), NOW).replicas == 8
    ready, unready, missing, ignored = hr.group_pods(
        [*pods, pod("d", deleting=True), pod("e", phase="Failed")], usage(a=1, b=1), "cpu", NOW)
    assert (ready, missing, ignored) == (2, {"c"}, {"d", "e"})


def test_average_value_targets_divide_usage_by_pods() -> None:
    pods = [pod("a"), pod("b")]
    mi = 1024 * 1024 * 1000  # one MiB in milli-units
    p = hr.raw_resource_replicas(2, 100 * mi, "memory", pods, usage(a=300 * mi, b=100 * mi), NOW)
    assert (p.replicas, p.raw) == (4, 200 * mi)
    assert hr.milli_quantity(p.raw) == "209715200"
    assert [hr.milli_quantity(v) for v in (250, 3000, 12_000_000_000, 0)] == \
        ["250m", "3", "12M", "0"]


def test_pod_metrics_sum_containers_or_pick_one() -> None:
    items = [{"metadata": {"name": "a"}, "timestamp": rfc3339(NOW), "window": "10.5s",
              "containers": [{"name": "x", "usage": {"cpu": "20m", "memory": "1Ki"}},
                             {"name": "y", "usage": {"cpu": "5000000n", "memory": "1Ki"}}]},
             {"metadata": {"name": "b"}, "containers": [{"name": "x", "usage": {}}]}]
    metrics = hr.pod_metrics(items, "cpu")
    assert metrics == {"a": hr.PodMetric(25, NOW, 10.5)}
    assert hr.pod_metrics(items, "cpu", "y")["a"].value == 5
    assert hr.pod_metrics(items, "memory")["a"].value == 2048 * 1000


# -- normalisation ----------------------------------------------------------------------------
def test_scale_down_waits_out_the_stabilisation_window() -> None:
    h = hb.History()
    h.record_initial(5, NOW)
    assert hb.normalize(h, 5, 2, 1, 10, NOW + 15)[0] == 5
    desired, conditions = hb.normalize(h, 5, 2, 1, 10, NOW + 200)
    assert desired == 5 and conditions[0][2] == "ScaleDownStabilized"
    assert hb.normalize(h, 5, 2, 1, 10, NOW + 330)[0] == 2  # the 5 aged out
    assert hb.normalize(hb.History(), 5, 2, 1, 10, NOW, downscale_window=0)[0] == 2


def test_without_behaviour_scale_up_is_capped_and_limits_clamp() -> None:
    h = hb.History()
    desired, conditions = hb.normalize(h, 1, 20, 1, 10, NOW)
    assert desired == 4 and conditions[1] == (
        "ScalingLimited", "True", "ScaleUpLimit",
        "the desired replica count is increasing faster than the maximum scale rate")
    desired, conditions = hb.normalize(hb.History(), 4, 20, 1, 6, NOW)
    assert desired == 6 and conditions[1][2] == "TooManyReplicas"
    desired, conditions = hb.normalize(hb.History(), 4, 0, 2, 6, NOW, downscale_window=0)
    assert desired == 2 and conditions[1][2] == "TooFewReplicas"
    desired, conditions = hb.normalize(hb.History(), 4, 5, 2, 6, NOW)
    assert desired == 5 and conditions == [
        ("AbleToScale", "True", "ReadyForNewScale", "recommended size matches current size"),
        ("ScalingLimited", "False", "DesiredWithinRange",
         "the desired count is within the acceptable range")]


def behavior(**parts: Any) -> dict[str, Any]:
    spec = {"minReplicas": 1, "behavior": parts}
    autoscaling.apply_defaults({"spec": spec})
    return spec["behavior"]


def test_default_behaviour_adds_four_pods_or_doubles_per_fifteen_seconds() -> None:
    b = behavior()
    assert b["scaleUp"]["policies"] == [{"type": "Pods", "value": 4, "periodSeconds": 15},
                                        {"type": "Percent", "value": 100, "periodSeconds": 15}]
    h = hb.History()
    assert hb.normalize_with_behavior(h, b, 1, 20, 1, 100, NOW)[0] == 5   # max(1+4, 2)
    assert hb.normalize_with_behavior(h, b, 10, 40, 1, 100, NOW)[0] == 20  # max(14, 20)
    h = hb.History()
    assert hb.normalize_with_behavior(h, b, 2, 40, 1, 100, NOW)[0] == 6
    h.record_scale(b, 2, 6, NOW)
    # within the period the start was 2: at most 6 (2+4 or 2*2)
    desired, conditions = hb.normalize_with_behavior(h, b, 6, 40, 1, 100, NOW + 5)
    assert desired == 6 and conditions[1][2] == "ScaleUpLimit"
    assert hb.normalize_with_behavior(h, b, 6, 40, 1, 100, NOW + 16)[0] == 12


def test_select_policy_min_and_disabled() -> None:
    b = behavior(scaleUp={"selectPolicy": "Min", "policies": [
        {"type": "Pods", "value": 1, "periodSeconds": 60},
        {"type": "Percent", "value": 50, "periodSeconds": 60}]})
    assert hb.normalize_with_behavior(hb.History(), b, 10, 30, 1, 100, NOW)[0] == 11
    b = behavior(scaleDown={"selectPolicy": "Disabled", "stabilizationWindowSeconds": 0})
    desired, conditions = hb.normalize_with_behavior(hb.History(), b, 10, 2, 1, 100, NOW)
    assert desired == 10 and conditions[1][2] == "ScaleDownLimit"


def test_scale_down_policies_and_windows_with_behaviour() -> None:
    b = behavior(scaleDown={"stabilizationWindowSeconds": 60, "policies": [
        {"type": "Pods", "value": 2, "periodSeconds": 30}]})
    h = hb.History()
    h.record_initial(10, NOW)
    desired, conditions = hb.normalize_with_behavior(h, b, 10, 1, 1, 100, NOW + 10)
    assert desired == 10 and conditions[0][2] == "ScaleDownStabilized"
    desired, conditions = hb.normalize_with_behavior(h, b, 10, 1, 1, 100, NOW + 65)
    assert desired == 8 and conditions[1][2] == "ScaleDownLimit"   # at most 2 pods per 30 s
    h.record_scale(b, 10, 8, NOW + 65)
    assert hb.normalize_with_behavior(h, b, 8, 1, 1, 100, NOW + 80)[0] == 8
    assert hb.normalize_with_behavior(h, b, 8, 1, 1, 100, NOW + 96)[0] == 6
    # no stabilizationWindowSeconds: the controller's 300 s applies
    b = behavior(scaleDown={"policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]})
    h = hb.History()
    h.record_initial(4, NOW)
    assert hb.normalize_with_behavior(h, b, 4, 1, 1, 10, NOW + 100)[0] == 4
    assert hb.normalize_with_behavior(h, b, 4, 1, 1, 10, NOW + 100, downscale_window=50)[0] == 1


def test_scale_up_stabilisation_takes_the_lowest_recent_proposal() -> None:
    b = behavior(scaleUp={"stabilizationWindowSeconds": 60})
    h = hb.History()
    h.record_initial(2, NOW)
    desired, conditions = hb.normalize_with_behavior(h, b, 2, 6, 1, 10, NOW + 10)
    assert desired == 2 and conditions[0][2] == "ScaleUpStabilized"
    assert hb.normalize_with_behavior(h, b, 2, 6, 1, 10, NOW + 75)[0] == 6
