"""EndpointSlices, Endpoints and mirrored slices on a real platform: runc pods of a Deployment
behind a Service with a named target port, readiness from real probes, kubectl as the client.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Platform, wait_until

MANAGED_BY = "endpointslice.kubernetes.io/managed-by"

DEPLOY = """apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox
        command: [sleep, "3600"]
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe: {{exec: {{command: ["true"]}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {ns}, labels: {{tier: front}}}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"""

LAME = """apiVersion: v1
kind: Pod
metadata: {{name: lame, namespace: {ns}, labels: {{app: lame}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: [sleep, "3600"]
    ports: [{{name: http, containerPort: 9090}}]
    readinessProbe: {{exec: {{command: ["false"]}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: lame, namespace: {ns}}}
spec:
  selector: {{app: lame}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Service
metadata: {{name: lax, namespace: {ns}}}
spec:
  selector: {{app: lame}}
  publishNotReadyAddresses: true
  ports: [{{name: http, port: 80, targetPort: http}}]
"""

EXTERNAL = """apiVersion: v1
kind: Service
metadata: {{name: ext, namespace: {ns}}}
spec:
  ports: [{{name: pg, port: 5432}}]
---
apiVersion: v1
kind: Endpoints
metadata: {{name: ext, namespace: {ns}, labels: {{source: hand}}}}
subsets:
- addresses: [{{ip: 192.0.2.10}}]
  notReadyAddresses: [{{ip: 192.0.2.11}}]
  ports: [{{name: pg, port: 5432}}]
"""


def get(platform: Platform, *what: str, ns: str) -> dict[str, Any]:
    return json.loads(platform.kubectl("-n", ns, "get", *what, "-o", "json").stdout)


def slices_of(platform: Platform, ns: str, service: str) -> list[dict[str, Any]]:
    return get(platform, "endpointslices", "-l", f"kubernetes.io/service-name={service}",
               ns=ns)["items"]


def endpoints_of(platform: Platform, ns: str, service: str) -> list[dict[str, Any]]:
    return [ep for s in slices_of(platform, ns, service) for ep in s.get("endpoints") or []]


def pod_ips(platform: Platform, ns: str, app: str) -> set[str]:
    return {p["status"].get("podIP") for p in get(platform, "pods", "-l", f"app={app}",
                                                 ns=ns)["items"]
            if not p["metadata"].get("deletionTimestamp")}


def ready_count(platform: Platform, ns: str, service: str) -> int:
    return sum(1 for ep in endpoints_of(platform, ns, service) if ep["conditions"].get("ready"))


@pytest.fixture(scope="module")
def ns(platform: Platform) -> str:
    name = "endpoints-e2e"
    platform.kubectl("create", "namespace", name, check=False)
    platform.kubectl("apply", "-f", "-", input=DEPLOY.format(ns=name))
    wait_until("2 ready endpoints", lambda: ready_count(platform, name, "web") == 2,
               timeout=120, interval=0.5)
    return name


def test_one_slice_with_both_pods_and_the_named_port_resolved(platform: Platform,
                                                              ns: str) -> None:
    (s,) = slices_of(platform, ns, "web")
    meta = s["metadata"]
    assert meta["name"].startswith("web-") and len(meta["name"]) == len("web-") + 5
    assert meta["labels"][MANAGED_BY] == "endpointslice-controller.k8s.io"
    assert meta["labels"]["tier"] == "front"
    owner = meta["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("Service", "web", True)
    assert s["addressType"] == "IPv4"
    assert s["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    eps = s["endpoints"]
    assert {ep["addresses"][0] for ep in eps} == pod_ips(platform, ns, "web")
    for ep in eps:
        assert ep["conditions"] == {"ready": True, "serving": True, "terminating": False}
        assert ep["targetRef"]["kind"] == "Pod" and ep["nodeName"]


def test_kubectl_get_endpoints_shows_both_ips(platform: Platform, ns: str) -> None:
    ips = pod_ips(platform, ns, "web")
    out = wait_until("the Endpoints", lambda: (o := platform.kubectl(
        "-n", ns, "get", "endpoints", "web", check=False).stdout) and
        all(f"{ip}:8080" in o for ip in ips) and o, timeout=30)
    assert "web" in out
    ep = get(platform, "endpoints", "web", ns=ns)
    assert ep["metadata"]["labels"] == {"tier": "front"}
    assert {a["ip"] for a in ep["subsets"][0]["addresses"]} == ips


def test_scaling_to_three_gives_three_endpoints(platform: Platform, ns: str) -> None:
    platform.kubectl("-n", ns, "scale", "deployment", "web", "--replicas=3")
    wait_until("3 ready endpoints", lambda: ready_count(platform, ns, "web") == 3,
               timeout=120, interval=0.5)
    assert len(slices_of(platform, ns, "web")) == 1


def test_a_pod_failing_its_readiness_probe_is_not_ready(platform: Platform, ns: str) -> None:
    platform.kubectl("apply", "-f", "-", input=LAME.format(ns=ns))
    eps = wait_until("the lame pod's endpoint", lambda: endpoints_of(platform, ns, "lame"),
                     timeout=120, interval=0.5)
    assert eps[0]["conditions"]["ready"] is False
    assert eps[0]["conditions"]["serving"] is False
    assert slices_of(platform, ns, "lame")[0]["ports"][0]["port"] == 9090
    ep = wait_until("legacy Endpoints", lambda: get(platform, "endpoints", "lame", ns=ns).get(
        "subsets"), timeout=30)
    assert ep[0]["notReadyAddresses"][0]["targetRef"]["name"] == "lame"
    assert "addresses" not in ep[0]


def test_publish_not_ready_addresses_marks_it_ready(platform: Platform, ns: str) -> None:
    eps = wait_until("the lax endpoint", lambda: endpoints_of(platform, ns, "lax"),
                     timeout=60, interval=0.5)
    assert eps[0]["conditions"]["ready"] is True
    subsets = wait_until("legacy Endpoints", lambda: get(platform, "endpoints", "lax",
                                                         ns=ns).get("subsets"), timeout=30)
    assert subsets[0]["addresses"][0]["targetRef"]["name"] == "lame"


def test_selectorless_service_endpoints_are_mirrored(platform: Platform, ns: str) -> None:
    platform.kubectl("apply", "-f", "-", input=EXTERNAL.format(ns=ns))
    (s,) = wait_until("a mirrored slice", lambda: slices_of(platform, ns, "ext"), timeout=30)
    assert s["metadata"]["labels"][MANAGED_BY] == "endpointslicemirroring-controller.k8s.io"
    assert s["metadata"]["labels"]["source"] == "hand"
    assert s["metadata"]["ownerReferences"][0]["kind"] == "Endpoints"
    assert s["ports"] == [{"name": "pg", "port": 5432, "protocol": "TCP"}]
    assert sorted((e["addresses"][0], e["conditions"]["ready"]) for e in s["endpoints"]) == [
        ("192.0.2.10", True), ("192.0.2.11", False)]
    # the hand-written Endpoints stay as written
    ep = get(platform, "endpoints", "ext", ns=ns)
    assert [a["ip"] for a in ep["subsets"][0]["addresses"]] == ["192.0.2.10"]
    # an edit is mirrored
    platform.kubectl("-n", ns, "patch", "endpoints", "ext", "--type=merge", "-p", json.dumps(
        {"subsets": [{"addresses": [{"ip": "192.0.2.12"}], "ports": [{"name": "pg",
                                                                       "port": 5432}]}]}))
    wait_until("the edit mirrored", lambda: [e["addresses"][0] for e in endpoints_of(
        platform, ns, "ext")] == ["192.0.2.12"], timeout=30)


def test_deleting_the_service_removes_its_slices_and_endpoints(platform: Platform,
                                                               ns: str) -> None:
    assert slices_of(platform, ns, "web")
    platform.kubectl("-n", ns, "delete", "service", "web")
    wait_until("slices gone", lambda: not slices_of(platform, ns, "web"), timeout=60)
    wait_until("Endpoints gone", lambda: platform.kubectl(
        "-n", ns, "get", "endpoints", "web", check=False).returncode != 0, timeout=30)
