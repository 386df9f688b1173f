"""`kubectl top` through the resource metrics API, answered from the host agents."""

from __future__ import annotations

import json

from tests.conftest import TEST_NODE, Platform, wait_until


def top(platform: Platform, *args: str) -> dict[str, list[str]]:
    out = platform.kubectl("top", *args, "--no-headers", check=False)
    return {line.split()[0]: line.split()[1:] for line in out.stdout.splitlines() if line.strip()}


def millicores(text: str) -> int:
    return int(text[:-1]) if text.endswith("m") else int(text) * 1000


def test_top_pods_and_nodes(platform: Platform, namespace: str) -> None:
    platform.kubectl("-n", namespace, "run", "burn", "--image=busybox", "--",
                     "sh", "-c", "while :; do :; done")
    platform.kubectl("-n", namespace, "run", "idle", "--image=busybox", "--", "sleep", "3600")
    rows = wait_until("both pods in kubectl top", lambda: (r := top(
        platform, "pod", "-n", namespace)) and {"burn", "idle"} <= set(r) and r, 60, 1.0)
    assert millicores(rows["burn"][0]) > 300, rows
    assert millicores(rows["idle"][0]) < 100, rows
    assert rows["burn"][1].endswith(("Mi", "Ki"))
    containers = platform.kubectl("top", "pod", "-n", namespace, "--containers", "--no-headers",
                                  "-l", "run=burn").stdout.split()
    assert containers[:2] == ["burn", "burn"]
    nodes = wait_until("the node in kubectl top", lambda: (r := top(platform, "node"))
                       and TEST_NODE in r and r, 30, 1.0)
    assert millicores(nodes[TEST_NODE][0]) > 300
    raw = json.loads(platform.kubectl("get", "--raw", f"/apis/metrics.k8s.io/v1beta1/namespaces/"
                                      f"{namespace}/pods/burn").stdout)
    assert raw["kind"] == "PodMetrics" and raw["containers"][0]["usage"]["cpu"].endswith("n")


def test_bad_metrics_requests(platform: Platform, namespace: str) -> None:
    out = platform.kubectl("get", "--raw", f"/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}"
                           "/pods/nope", check=False)
    assert "NotFound" in out.stderr or "not found" in out.stderr
    out = platform.kubectl("get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes?labelSelector="
                           "a%20in%20(", check=False)
    assert out.returncode != 0 and ("BadRequest" in out.stderr or "unable to parse" in out.stderr)
    groups = json.loads(platform.kubectl("get", "--raw", "/apis").stdout)["groups"]
    assert "metrics.k8s.io" in [g["name"] for g in groups]
