"""PodDisruptionBudgets: the disruption controller's status and the eviction subresource.

Pods here are ordinary runc pods of a Deployment; evictions go through the real
``pods/eviction`` endpoint (as ``kubectl drain`` sends them) and through kubectl drain.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.conftest import Platform, wait_until

DEPLOY = """apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{{name: c, image: busybox, command: [sleep, "3600"]}}]
"""

PDB = """apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: {name}, namespace: {ns}}}
spec:
  {rule}
  selector: {{matchLabels: {{app: {app}}}}}
"""


def get(platform: Platform, *what: str, ns: str) -> dict[str, Any]:
    return json.loads(platform.kubectl("-n", ns, "get", *what, "-o", "json").stdout)


def running_pods(platform: Platform, ns: str, app: str) -> list[str]:
    pods = get(platform, "pods", "-l", f"app={app}", ns=ns)["items"]
    return [p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True"
                    for c in p["status"].get("conditions") or [])]


def evict(platform: Platform, ns: str, pod: str, dry_run: bool = False) -> tuple[int, dict]:
    body = {"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": pod, "namespace": ns}}
    if dry_run:
        body["deleteOptions"] = {"dryRun": ["All"]}
    req = urllib.request.Request(f"{platform.url}/api/v1/namespaces/{ns}/pods/{pod}/eviction",
                                 data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=platform.ssl_context()) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def budget_status(platform: Platform, ns: str, name: str) -> dict[str, Any]:
    return get(platform, "pdb", name, ns=ns).get("status") or {}


@pytest.fixture(scope="module")
def ns(platform: Platform) -> str:
    name = "pdb-e2e"
    platform.kubectl("create", "namespace", name, check=False)
    platform.kubectl("apply", "-f", "-", input=DEPLOY.format(name="web", ns=name, replicas=2))
    wait_until("2 ready pods", lambda: len(running_pods(platform, name, "web")) == 2,
               timeout=120, interval=0.5)
    return name


def test_controller_computes_the_budget(platform: Platform, ns: str) -> None:
    platform.kubectl("apply", "-f", "-", input=PDB.format(name="all", ns=ns, app="web",
                                                          rule="minAvailable: 2"))
    status = wait_until("the budget computed", lambda: (
        s := budget_status(platform, ns, "all")).get("observedGeneration") and s, timeout=30)
    assert status["expectedPods"] == 2 and status["currentHealthy"] == 2
    assert status["desiredHealthy"] == 2 and status["disruptionsAllowed"] == 0
    cond = next(c for c in status["conditions"] if c["type"] == "DisruptionAllowed")
    assert (cond["status"], cond["reason"]) == ("False", "InsufficientPods")


def test_an_eviction_that_breaks_the_budget_is_429(platform: Platform, ns: str) -> None:
    pod = running_pods(platform, ns, "web")[0]
    code, body = evict(platform, ns, pod)
    assert code == 429, body
    assert body["reason"] == "TooManyRequests"
    assert body["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    assert body["details"]["causes"] == [{
        "reason": "DisruptionBudget",
        "message": "The disruption budget all needs 2 healthy pods and has 2 currently"}]
    assert pod in running_pods(platform, ns, "web")


def test_an_allowed_eviction_spends_the_budget_once(platform: Platform, ns: str) -> None:
    platform.kubectl("-n", ns, "patch", "pdb", "all", "--type=merge", "-p",
                     '{"spec": {"minAvailable": null, "maxUnavailable": 1}}')
    wait_until("one disruption allowed", lambda: budget_status(platform, ns, "all").get(
        "disruptionsAllowed") == 1 and budget_status(platform, ns, "all").get(
        "observedGeneration") == 2, timeout=30)
    first, second = running_pods(platform, ns, "web")[:2]
    assert evict(platform, ns, first, dry_run=True)[0] == 201
    assert budget_status(platform, ns, "all")["disruptionsAllowed"] == 1  # dry run: no spend
    assert evict(platform, ns, first)[0] == 201
    code, body = evict(platform, ns, second)  # the budget is spent until a replacement is Ready
    assert code == 429, body
    # the replacement comes up and the budget allows one again
    wait_until("the budget restored", lambda: budget_status(platform, ns, "all").get(
        "disruptionsAllowed") == 1, timeout=120, interval=0.5)
    assert not budget_status(platform, ns, "all").get("disruptedPods")


def test_two_budgets_over_one_pod_refuse_eviction(platform: Platform, ns: str) -> None:
    platform.kubectl("apply", "-f", "-", input=PDB.format(name="second", ns=ns, app="web",
                                                          rule="maxUnavailable: 1"))
    pod = running_pods(platform, ns, "web")[0]
    code, body = evict(platform, ns, pod)
    assert code == 500
    assert "more than one PodDisruptionBudget" in body["message"]
    platform.kubectl("-n", ns, "delete", "pdb", "second")


def test_drain_waits_for_the_budget(platform: Platform, ns: str) -> None:
    """kubectl drain retries 429s; with maxUnavailable 1 it empties the host one pod at a time
    (each replacement stays Pending on the cordoned single host, so the second eviction
    keeps being refused and drain times out: the budget held)."""
    node = platform.kubectl("get", "nodes", "-o", "jsonpath={.items[0].metadata.name}").stdout
    try:
        out = platform.kubectl("drain", node, "--pod-selector=app=web", "--timeout=8s",
                               "--ignore-daemonsets", check=False, timeout=60)
        assert out.returncode != 0
        assert "Cannot evict pod as it would violate the pod's disruption budget" in out.stderr
        assert len(running_pods(platform, ns, "web")) == 1
    finally:
        platform.kubectl("uncordon", node)
    wait_until("2 ready pods again", lambda: len(running_pods(platform, ns, "web")) == 2,
               timeout=120, interval=0.5)


def test_pdb_validation(platform: Platform, ns: str) -> None:
    out = platform.kubectl("apply", "-f", "-", check=False, input=PDB.format(
        name="bad", ns=ns, app="web", rule="minAvailable: 1\n  maxUnavailable: 1"))
    assert out.returncode != 0 and "spec" in out.stderr
    out = platform.kubectl("apply", "-f", "-", check=False, input=PDB.format(
        name="bad", ns=ns, app="web", rule="maxUnavailable: 120%"))
    assert out.returncode != 0 and "spec.maxUnavailable" in out.stderr
