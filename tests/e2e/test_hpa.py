"""HorizontalPodAutoscalers and ReplicationControllers end to end, on the real platform.

A Deployment whose container burns CPU (throttled to 100m against a 50m request: 200% of
request) is scaled up to its maximum by `kubectl autoscale`; once its pods sleep instead it
comes back down (the test sets a zero scale-down window so it need not wait five minutes).
Bad specs are 422s naming the field; autoscaling/v1 and v2 read the same object and a v1
round trip keeps what only v2 can say.  A ReplicationController made by kubectl keeps its
pods and scales.
"""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import Platform, wait_until

BURN = "while :; do :; done"


def _json(platform: Platform, *args: str) -> Any:
    return json.loads(platform.kubectl(*args, "-o", "json").stdout)


def _replicas(platform: Platform, namespace: str, kind: str, name: str) -> int:
    return int(_json(platform, "-n", namespace, "get", kind, name)["spec"].get("replicas", 0))


def test_a_cpu_burning_deployment_scales_up_and_back_down(platform: Platform,
                                                          namespace: str) -> None:
    ns = ("-n", namespace)
    platform.kubectl(*ns, "create", "deployment", "burn", "--image=busybox", "--", "sh", "-c",
                     BURN)
    platform.kubectl(*ns, "set", "resources", "deployment", "burn", "--requests=cpu=50m",
                     "--limits=cpu=100m")
    platform.kubectl(*ns, "rollout", "status", "deployment/burn", "--timeout=120s", timeout=130)
    platform.kubectl(*ns, "autoscale", "deployment", "burn", "--min=1", "--max=3",
                     "--cpu-percent=50")
    platform.kubectl(*ns, "patch", "hpa", "burn", "--type=merge", "-p", json.dumps(
        {"spec": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}}))
    hpa = _json(platform, *ns, "get", "hpa", "burn")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]
    assert hpa["spec"]["behavior"]["scaleUp"]["policies"][0] == {
        "type": "Pods", "value": 4, "periodSeconds": 15}  # upstream's defaults filled in

    wait_until("the HPA scaling the Deployment to 3", lambda: _replicas(
        platform, namespace, "deployment", "burn") == 3, timeout=150, interval=2)
    status = wait_until("current utilisation in the HPA's status", lambda: (s := _json(
        platform, *ns, "get", "hpa", "burn").get("status") or {}).get("currentMetrics") and
        s["currentMetrics"][0].get("resource") and s, timeout=60, interval=2)
    assert isinstance(status["currentMetrics"][0]["resource"]["current"]["averageUtilization"], int)
    assert status["desiredReplicas"] >= 1 and status["lastScaleTime"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert set(conditions) == {"AbleToScale", "ScalingActive", "ScalingLimited"}
    assert conditions["ScalingActive"]["reason"] == "ValidMetricFound"
    table = platform.kubectl(*ns, "get", "hpa").stdout.splitlines()
    assert table[0].split() == ["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS",
                                "AGE"], table
    row = table[1].split()
    assert row[:3] == ["burn", "Deployment/burn", "cpu:"] and row[3].endswith("%/50%"), row
    events = _json(platform, *ns, "get", "events", "--field-selector",
                   "involvedObject.kind=HorizontalPodAutoscaler")["items"]
    assert any(e["reason"] == "SuccessfulRescale" and e["message"] ==
               "New size: 3; reason: cpu resource utilization (percentage of request) above "
               "target" for e in events), [(e["reason"], e["message"]) for e in events]
    described = platform.kubectl(*ns, "describe", "hpa", "burn").stdout
    assert "Deployment/burn" in described and "SuccessfulRescale" in described, described

    platform.kubectl(*ns, "patch", "deployment", "burn", "--type=json", "-p", json.dumps([
        {"op": "replace", "path": "/spec/template/spec/containers/0/command",
         "value": ["sh", "-c", "sleep 3600"]}]))
    wait_until("the HPA scaling the idle Deployment back to 1", lambda: _replicas(
        platform, namespace, "deployment", "burn") == 1, timeout=240, interval=2)
    events = _json(platform, *ns, "get", "events", "--field-selector",
                   "involvedObject.kind=HorizontalPodAutoscaler")["items"]
    assert any(e["reason"] == "SuccessfulRescale" and e["message"] ==
               "New size: 1; reason: All metrics below target" for e in events)


def _hpa(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    body = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 1, "maxReplicas": 3, **spec}
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "namespace": namespace}, "spec": body}


def test_bad_autoscalers_are_422s_naming_the_field(platform: Platform, namespace: str) -> None:
    cases = [
        (_hpa("low", namespace, minReplicas=0), "spec.minReplicas"),
        (_hpa("inverted", namespace, minReplicas=3, maxReplicas=2), "spec.maxReplicas"),
        (_hpa("noref", namespace, scaleTargetRef={"apiVersion": "apps/v1", "kind": "Deployment"}),
         "spec.scaleTargetRef.name"),
        (_hpa("metric", namespace, metrics=[{"type": "Bogus"}]), "spec.metrics[0].type"),
        (_hpa("target", namespace, metrics=[{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 0}}}]),
         "spec.metrics[0].resource.target.averageUtilization"),
        (_hpa("period", namespace, behavior={"scaleUp": {"policies": [
            {"type": "Pods", "value": 1, "periodSeconds": 1801}]}}),
         "spec.behavior.scaleUp.policies[0].periodSeconds"),
        (_hpa("window", namespace, behavior={"scaleDown": {"stabilizationWindowSeconds": -1}}),
         "spec.behavior.scaleDown.stabilizationWindowSeconds"),
        (_hpa("select", namespace, behavior={"scaleDown": {"selectPolicy": "Most"}}),
         "spec.behavior.scaleDown.selectPolicy"),
    ]
    for body, field in cases:
        out = platform.kubectl("create", "-f", "-", input=json.dumps(body), check=False)
        assert out.returncode != 0 and "is invalid" in out.stderr and field in out.stderr, \
            (field, out.stderr)
    out = platform.kubectl("create", "--raw", f"/apis/autoscaling/v1/namespaces/{namespace}/"
                           "horizontalpodautoscalers", "-f", "-", input=json.dumps({
                               "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
                               "metadata": {"name": "v1bad"},
                               "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"},
                                        "maxReplicas": 0}}), check=False)
    assert out.returncode != 0 and "spec.maxReplicas" in out.stderr, out.stderr


def test_v1_and_v2_read_and_write_the_same_autoscaler(platform: Platform, namespace: str) -> None:
    ns = ("-n", namespace)
    body = _hpa("both", namespace, metrics=[
        {"type": "Resource", "resource": {"name": "memory", "target": {
            "type": "AverageValue", "averageValue": "100Mi"}}},
        {"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": 60}}}],
        behavior={"scaleDown": {"stabilizationWindowSeconds": 30}})
    platform.kubectl("create", "-f", "-", input=json.dumps(body))
    v1 = _json(platform, *ns, "get", "horizontalpodautoscalers.v1.autoscaling", "both")
    assert v1["apiVersion"] == "autoscaling/v1"
    assert v1["spec"]["targetCPUUtilizationPercentage"] == 60 and "metrics" not in v1["spec"]
    notes = v1["metadata"]["annotations"]
    assert json.loads(notes["autoscaling.alpha.kubernetes.io/metrics"]) == [
        {"type": "Resource", "resource": {"name": "memory", "targetAverageValue": "100Mi"}}]
    assert json.loads(notes["autoscaling.alpha.kubernetes.io/behavior"])["ScaleDown"][
        "StabilizationWindowSeconds"] == 30

    # a v1 client writes it back (with a new maximum): v2 keeps the memory metric and behaviour
    v1["spec"]["maxReplicas"] = 5
    for k in ("resourceVersion", "managedFields"):
        v1["metadata"].pop(k, None)
    platform.kubectl("replace", "-f", "-", input=json.dumps(v1))
    v2 = _json(platform, *ns, "get", "hpa", "both")
    assert v2["spec"]["maxReplicas"] == 5
    assert [m["resource"]["name"] for m in v2["spec"]["metrics"]] == ["memory", "cpu"]
    assert v2["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 30
    assert not any(k.startswith("autoscaling.alpha") for k in
                   (v2["metadata"].get("annotations") or {}))

    # a v1 HPA with no target gets upstream's 80% CPU default; v1 clients list both
    platform.kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "old", "namespace": namespace},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                    "name": "web"}, "maxReplicas": 2}}))
    v2 = _json(platform, *ns, "get", "hpa", "old")
    assert v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 80
    assert v2["spec"]["minReplicas"] == 1
    listed = _json(platform, *ns, "get", "horizontalpodautoscalers.v1.autoscaling")
    assert {i["apiVersion"] for i in listed["items"]} == {"autoscaling/v1"}
    assert {i["metadata"]["name"] for i in listed["items"]} == {"both", "old"}


def test_a_replication_controller_keeps_and_scales_its_pods(platform: Platform,
                                                            namespace: str) -> None:
    ns = ("-n", namespace)
    platform.kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "ReplicationController",
        "metadata": {"name": "legacy", "namespace": namespace},
        "spec": {"replicas": 2, "template": {
            "metadata": {"labels": {"app": "legacy"}},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                                     "command": ["sleep", "3600"]}]}}}}))
    rc = _json(platform, *ns, "get", "rc", "legacy")
    assert rc["spec"]["selector"] == {"app": "legacy"}  # defaulted from the template
    assert rc["metadata"]["labels"] == {"app": "legacy"}

    def ready() -> int:
        return int((_json(platform, *ns, "get", "rc", "legacy").get("status") or {}).get(
            "readyReplicas") or 0)
    wait_until("two ready pods", lambda: ready() == 2, timeout=120, interval=1)
    pods = _json(platform, *ns, "get", "pods", "-l", "app=legacy")["items"]
    assert [p["metadata"]["ownerReferences"][0]["kind"] for p in pods] == \
        ["ReplicationController"] * 2
    platform.kubectl(*ns, "scale", "rc", "legacy", "--replicas=1")
    wait_until("one pod left", lambda: len([p for p in _json(
        platform, *ns, "get", "pods", "-l", "app=legacy")["items"]
        if not p["metadata"].get("deletionTimestamp")]) == 1, timeout=60, interval=1)
    scale = json.loads(platform.kubectl("get", "--raw", f"/api/v1/namespaces/{namespace}/"
                                        "replicationcontrollers/legacy/scale").stdout)
    assert scale["spec"]["replicas"] == 1 and scale["status"]["selector"] == "app=legacy"
    table = platform.kubectl(*ns, "get", "rc").stdout.splitlines()
    assert table[0].split() == ["NAME", "DESIRED", "CURRENT", "READY", "AGE"], table
    reasons = {e["reason"] for e in _json(platform, *ns, "get", "events", "--field-selector",
                                          "involvedObject.kind=ReplicationController")["items"]}
    assert {"SuccessfulCreate", "SuccessfulDelete"} <= reasons, reasons
    out = platform.kubectl("create", "-f", "-", check=False, input=json.dumps({
        "apiVersion": "v1", "kind": "ReplicationController",
        "metadata": {"name": "mismatch", "namespace": namespace},
        "spec": {"selector": {"app": "x"}, "template": {
            "metadata": {"labels": {"app": "y"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}))
    assert out.returncode != 0 and "spec.template.metadata.labels" in out.stderr, out.stderr


def test_an_idle_deployment_reports_its_utilisation(platform: Platform, namespace: str) -> None:
    """The acceptance check: `kubectl autoscale` of a quiet server gives an integer utilisation
    within 90 s; discovery and `kubectl explain` know both kinds."""
    ns = ("-n", namespace)
    platform.kubectl(*ns, "create", "deployment", "web", "--image=busybox", "--", "sh", "-c",
                     "mkdir -p /w; echo hi > /w/index.html; httpd -f -p 8080 -h /w")
    platform.kubectl(*ns, "set", "resources", "deployment", "web", "--requests=cpu=50m")
    platform.kubectl(*ns, "rollout", "status", "deployment/web", "--timeout=120s", timeout=130)
    platform.kubectl(*ns, "autoscale", "deployment", "web", "--min=1", "--max=3",
                     "--cpu-percent=50")
    value = wait_until("an integer utilisation", lambda: platform.kubectl(
        *ns, "get", "hpa", "web", "-o",
        "jsonpath={.status.currentMetrics[0].resource.current.averageUtilization}",
        check=False).stdout.strip().isdigit(), timeout=90, interval=1)
    assert value
    assert _replicas(platform, namespace, "deployment", "web") == 1
    resources = platform.kubectl("api-resources").stdout
    assert any(line.split()[:2] == ["horizontalpodautoscalers", "hpa"] and "autoscaling/v2" in line
               for line in resources.splitlines()), resources
    assert any(line.split()[:2] == ["replicationcontrollers", "rc"]
               for line in resources.splitlines()), resources
    assert "autoscaling/v1" in platform.kubectl("api-versions").stdout
    explained = platform.kubectl("explain", "hpa.spec.behavior").stdout
    assert "scaleDown" in explained, explained


def test_hostile_autoscaler_bodies_are_4xx_never_500(platform: Platform, namespace: str) -> None:
    import urllib.error
    import urllib.request

    ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}
    bodies = {
        "v2": [{"spec": "x"}, {"spec": {"scaleTargetRef": "x", "maxReplicas": 1}},
               {"spec": {"scaleTargetRef": ref, "maxReplicas": "3"}},
               {"spec": {"scaleTargetRef": ref, "maxReplicas": 3, "metrics": "cpu"}},
               {"spec": {"scaleTargetRef": ref, "maxReplicas": 3, "metrics": [1, None]}},
               {"spec": {"scaleTargetRef": ref, "maxReplicas": 3, "behavior": "fast"}},
               {"spec": {"scaleTargetRef": ref, "maxReplicas": 3, "behavior": {
                   "scaleUp": {"policies": [{"type": "Pods"}]}, "scaleDown": 7}}},
               {"spec": {"scaleTargetRef": ref, "maxReplicas": 3, "metrics": [{
                   "type": "Resource", "resource": {"name": "memory", "target": {
                       "type": "AverageValue", "averageValue": "lots"}}}]}},
               {"spec": {"scaleTargetRef": ref, "maxReplicas": 3, "metrics": [{
                   "type": "Pods", "resource": {"name": "cpu"}}]}}],
        "v1": [{"spec": 5}, {"spec": {"scaleTargetRef": ref, "maxReplicas": 3,
                                      "targetCPUUtilizationPercentage": "half"}},
               {"metadata": {"annotations": {
                   "autoscaling.alpha.kubernetes.io/metrics": "[{not json",
                   "autoscaling.alpha.kubernetes.io/behavior": "[1,2]"}},
                "spec": {"scaleTargetRef": ref, "maxReplicas": 3}},
               {"metadata": {"annotations": {
                   "autoscaling.alpha.kubernetes.io/metrics": '[{"type":"Pods","pods":7}]',
                   "autoscaling.alpha.kubernetes.io/conditions": '{"a":1}'}},
                "spec": {"scaleTargetRef": ref, "maxReplicas": 3}}],
    }
    for version, cases in bodies.items():
        for i, body in enumerate(cases):
            meta = {"name": f"h{version}-{i}", **body.pop("metadata", {})}
            doc = {"apiVersion": f"autoscaling/{version}", "kind": "HorizontalPodAutoscaler",
                   "metadata": meta, **body}
            req = urllib.request.Request(
                f"{platform.url}/apis/autoscaling/{version}/namespaces/{namespace}/"
                "horizontalpodautoscalers", data=json.dumps(doc).encode(), method="POST",
                headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, context=platform.ssl_context()) as resp:
                    code = resp.status
            except urllib.error.HTTPError as exc:
                code = exc.code
                assert json.loads(exc.read())["kind"] == "Status"
            assert code in (201, 400, 422), (version, i, code)
    # whatever was stored reads back in both versions
    for version in ("v1", "v2"):
        listed = _json(platform, "-n", namespace, "get",
                       f"horizontalpodautoscalers.{version}.autoscaling")
        assert all(i["apiVersion"] == f"autoscaling/{version}" for i in listed["items"])
    platform.kubectl("-n", namespace, "get", "hpa")
