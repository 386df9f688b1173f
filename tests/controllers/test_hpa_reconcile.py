"""The HPA controller's reconcile against a fake client and clock: the target's scale, the
metrics API and discovery are objects of the fake, the writes are read back."""

from __future__ import annotations

import copy
from typing import Any

from atoll.api.timestamps import rfc3339
from atoll.client.controller import DONE, requeue_after
from atoll.client.factory import InformerFactory
from atoll.controllers.hpa import HorizontalPodAutoscalerController
from atoll.settings import ReconcileSettings
from tests.client.fakes import FakeClient, FakeClock, feed

SCALE = "/apis/apps/v1/namespaces/ns/deployments/web/scale"
METRICS = "/apis/metrics.k8s.io/v1beta1/namespaces/ns/pods"
STATUS = "/apis/autoscaling/v2/namespaces/ns/horizontalpodautoscalers/web/status"


class Client(FakeClient):
    """Keeps every PATCH body; a PATCH of a scale changes the scale it serves."""

    def __init__(self) -> None:
        super().__init__()
        self.patches: list[tuple[str, Any]] = []

    async def patch(self, path: str, body: Any, **params: Any) -> Any:
        self._check("PATCH", path)
        self.patches.append((path, copy.deepcopy(body)))
        if path.endswith("/scale") and path in self.objects:
            self.objects[path]["spec"]["replicas"] = body["spec"]["replicas"]
        return body

    def patched(self, path: str) -> list[Any]:
        return [b for p, b in self.patches if p == path]


def build(clock: FakeClock, replicas: int = 1, **settings: Any
          ) -> tuple[HorizontalPodAutoscalerController, Client]:
    client = Client()
    client.objects["/apis/apps/v1"] = {"resources": [
        {"name": "deployments", "kind": "Deployment"},
        {"name": "deployments/scale", "kind": "Scale"}]}
    client.objects[SCALE] = {"kind": "Scale", "spec": {"replicas": replicas},
                             "status": {"replicas": replicas, "selector": "app=web"}}
    ctrl = HorizontalPodAutoscalerController(
        client, InformerFactory(client),  # type: ignore[arg-type]
        settings=ReconcileSettings(**settings), clock=clock)
    return ctrl, client


def hpa(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "ns", "uid": "uid-hpa",
                         "resourceVersion": "1", "generation": 1},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": "web"},
                     "minReplicas": 1, "maxReplicas": 3,
                     "metrics": [{"type": "Resource", "resource": {
                         "name": "cpu", "target": {"type": "Utilization",
                                                   "averageUtilization": 50}}}], **spec},
            "status": {"desiredReplicas": 0}}


def pod(name: str, now: float, cpu: str | None = "100m", app: str = "web") -> dict[str, Any]:
    resources = {"requests": {"cpu": cpu}} if cpu else {}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}",
                         "resourceVersion": "1", "labels": {"app": app}},
            "spec": {"containers": [{"name": "c", "resources": resources}]},
            "status": {"phase": "Running", "startTime": rfc3339(now - 3600), "conditions": [
                {"type": "Ready", "status": "True",
                 "lastTransitionTime": rfc3339(now - 3500)}]}}


def metrics(client: Client, now: float, **millicores: int) -> None:
    client.objects[METRICS] = {"items": [
        {"metadata": {"name": n, "namespace": "ns"}, "timestamp": rfc3339(now - 5),
         "window": "10s", "containers": [{"name": "c", "usage": {"cpu": f"{v}m"}}]}
        for n, v in millicores.items()]}


def events(ctrl: HorizontalPodAutoscalerController) -> list[tuple[str, str, str]]:
    return [(e.type, e.reason, e.message) for e in ctrl.events.queue._queue]  # type: ignore[attr-defined]


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


async def test_busy_pods_scale_the_target_up_to_the_maximum() -> None:
    clock = FakeClock()
    ctrl, client = build(clock)
    assert ctrl.name == "horizontal-pod-autoscaler"
    feed(ctrl.hpas, hpa())
    feed(ctrl.pods, pod("web-1", clock.now))
    feed(ctrl.pods, pod("other", clock.now, app="other"))
    metrics(client, clock.now, **{"web-1": 200})
    assert await ctrl.reconcile("ns/web") == requeue_after(15)
    assert client.patched(SCALE) == [{"spec": {"replicas": 3}}]
    [body] = client.patched(STATUS)
    status = body["status"]
    assert (status["currentReplicas"], status["desiredReplicas"]) == (1, 3)
    assert status["lastScaleTime"] == rfc3339(clock.now)
    assert status["currentMetrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "current": {"averageUtilization": 200, "averageValue": "200m"}}}]
    assert conditions(status) == {"AbleToScale": ("True", "SucceededRescale"),
                                  "ScalingActive": ("True", "ValidMetricFound"),
                                  "ScalingLimited": ("True", "TooManyReplicas")}
    assert events(ctrl) == [("Normal", "SuccessfulRescale", "New size: 3; reason: cpu resource "
                             "utilization (percentage of request) above target")]


async def test_no_metrics_is_a_condition_and_two_events_and_no_rescale() -> None:
    clock = FakeClock()
    ctrl, client = build(clock)
    feed(ctrl.hpas, hpa())
    feed(ctrl.pods, pod("web-1", clock.now))
    client.objects[METRICS] = {"items": []}
    assert await ctrl.reconcile("ns/web") == requeue_after(15)
    assert client.patched(SCALE) == []
    status = client.patched(STATUS)[0]["status"]
    assert conditions(status)["ScalingActive"] == ("False", "FailedGetResourceMetric")
    assert status["currentMetrics"] == [{"type": ""}]
    msg = ("failed to get cpu utilization: unable to get metrics for resource cpu: no metrics "
           "returned from resource metrics API")
    assert events(ctrl) == [
        ("Warning", "FailedGetResourceMetric", msg),
        ("Warning", "FailedComputeMetricsReplicas",
         f"invalid metrics (1 invalid out of 1), first error is: {msg}")]


async def test_pods_without_requests_cannot_be_measured_by_utilisation() -> None:
    clock = FakeClock()
    ctrl, client = build(clock)
    feed(ctrl.hpas, hpa())
    feed(ctrl.pods, pod("web-1", clock.now, cpu=None))
    metrics(client, clock.now, **{"web-1": 200})
    await ctrl.reconcile("ns/web")
    [cond] = [c for c in client.patched(STATUS)[0]["status"]["conditions"]
              if c["type"] == "ScalingActive"]
    assert cond["status"] == "False" and "missing request for cpu in container c of Pod web-1" \
        in cond["message"]


async def test_scale_down_waits_for_the_stabilisation_window_on_the_clock() -> None:
    clock = FakeClock()
    ctrl, client = build(clock, replicas=3)
    feed(ctrl.hpas, hpa())
    for i in range(3):
        feed(ctrl.pods, pod(f"web-{i}", clock.now))
    metrics(client, clock.now, **{f"web-{i}": 5 for i in range(3)})
    await ctrl.reconcile("ns/web")
    assert client.patched(SCALE) == []
    assert conditions(client.patched(STATUS)[-1]["status"])["AbleToScale"] == \
        ("True", "ScaleDownStabilized")
    clock.advance(301)
    metrics(client, clock.now, **{f"web-{i}": 5 for i in range(3)})
    await ctrl.reconcile("ns/web")
    assert client.patched(SCALE) == [{"spec": {"replicas": 1}}]
    assert events(ctrl)[-1] == ("Normal", "SuccessfulRescale",
                                "New size: 1; reason: All metrics below target")


async def test_a_zero_window_behaviour_scales_down_at_once() -> None:
    clock = FakeClock()
    ctrl, client = build(clock, replicas=3)
    feed(ctrl.hpas, hpa(behavior={"scaleDown": {"stabilizationWindowSeconds": 0, "policies": [
        {"type": "Pods", "value": 1, "periodSeconds": 60}]}, "scaleUp": {
            "stabilizationWindowSeconds": 0, "selectPolicy": "Max",
            "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}}))
    for i in range(3):
        feed(ctrl.pods, pod(f"web-{i}", clock.now))
    metrics(client, clock.now, **{f"web-{i}": 5 for i in range(3)})
    await ctrl.reconcile("ns/web")
    assert client.patched(SCALE) == [{"spec": {"replicas": 2}}]  # one pod per minute
    clock.advance(20)
    await ctrl.reconcile("ns/web")
    assert len(client.patched(SCALE)) == 1
    assert conditions(client.patched(STATUS)[-1]["status"])["ScalingLimited"] == \
        ("True", "ScaleDownLimit")


async def test_targets_that_cannot_be_read_or_are_at_zero() -> None:
    clock = FakeClock()
    ctrl, client = build(clock)
    feed(ctrl.hpas, hpa(scaleTargetRef={"apiVersion": "apps/v1", "kind": "Gizmo",
                                        "name": "web"}))
    await ctrl.reconcile("ns/web")
    status = client.patched(STATUS)[0]["status"]
    assert conditions(status)["AbleToScale"] == ("False", "FailedGetScale")
    assert events(ctrl) == [("Warning", "FailedGetScale",
                             'no matches for kind "Gizmo" in group "apps"')]

    ctrl, client = build(clock, replicas=0)
    feed(ctrl.hpas, hpa())
    await ctrl.reconcile("ns/web")
    status = client.patched(STATUS)[0]["status"]
    assert conditions(status)["ScalingActive"] == ("False", "ScalingDisabled")
    assert client.patched(SCALE) == [] and status["desiredReplicas"] == 0


async def test_replicas_outside_the_limits_are_brought_in_and_deleted_hpas_forgotten() -> None:
    clock = FakeClock()
    ctrl, client = build(clock, replicas=7)
    feed(ctrl.hpas, hpa())
    await ctrl.reconcile("ns/web")
    assert client.patched(SCALE) == [{"spec": {"replicas": 3}}]
    assert events(ctrl) == [("Normal", "SuccessfulRescale", "New size: 3; reason: Current "
                             "number of replicas above Spec.MaxReplicas")]
    assert "ns/web" in ctrl.histories
    feed(ctrl.hpas, hpa(), kind="DELETED")
    assert await ctrl.reconcile("ns/web") == DONE
    assert "ns/web" not in ctrl.histories


async def test_the_sync_period_is_a_setting() -> None:
    clock = FakeClock()
    ctrl, client = build(clock, hpa_sync_period_seconds=5.0)
    feed(ctrl.hpas, hpa())
    client.objects[METRICS] = {"items": []}
    assert await ctrl.reconcile("ns/web") == requeue_after(5)


async def test_two_hpas_over_the_same_pods_are_ambiguous() -> None:
    clock = FakeClock()
    ctrl, client = build(clock)
    feed(ctrl.hpas, hpa())
    other = hpa()
    other["metadata"].update(name="twin", uid="uid-twin")
    feed(ctrl.hpas, other)
    feed(ctrl.pods, pod("web-1", clock.now))
    metrics(client, clock.now, **{"web-1": 200})
    await ctrl.reconcile("ns/twin")
    await ctrl.reconcile("ns/web")
    assert client.patched(SCALE) == [{"spec": {"replicas": 3}}]  # twin went first, alone
    status = client.patched(STATUS)[-1]["status"]
    assert conditions(status)["ScalingActive"] == ("False", "AmbiguousSelector")
    assert events(ctrl)[-1] == ("Warning", "FailedComputeMetricsReplicas",
                                "pods by selector app=web are controlled by multiple HPAs: "
                                "[web,twin]")


async def test_any_kind_with_a_scale_is_a_target() -> None:
    clock = FakeClock()
    ctrl, client = build(clock)
    client.objects["/api/v1"] = {"resources": [
        {"name": "replicationcontrollers", "kind": "ReplicationController"},
        {"name": "replicationcontrollers/scale", "kind": "Scale"}]}
    client.objects["/apis/example.com/v1alpha1"] = {"resources": [
        {"name": "virtualmachinereplicasets", "kind": "VirtualMachineReplicaSet"}]}
    assert await ctrl.scale_path("ns", {"apiVersion": "v1", "kind": "ReplicationController",
                                        "name": "rc"}) == \
        "/api/v1/namespaces/ns/replicationcontrollers/rc/scale"
    assert await ctrl.scale_path("ns", {"apiVersion": "example.com/v1alpha1",
                                        "kind": "VirtualMachineReplicaSet", "name": "vms"}) == \
        "/apis/example.com/v1alpha1/namespaces/ns/virtualmachinereplicasets/vms/scale"
    assert await ctrl.scale_path("ns", {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": "web"}) == SCALE
    lookups = [p for v, p in client.calls if v == "GET"]
    assert lookups == ["/api/v1", "/apis/example.com/v1alpha1", "/apis/apps/v1"]
    await ctrl.scale_path("ns", {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"})
    assert len([p for v, p in client.calls if v == "GET"]) == 3  # discovery is remembered
