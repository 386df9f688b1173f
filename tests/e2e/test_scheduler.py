"""The scheduler places pending pods on simulated nodes (Node objects with no agent).

Every test labels its own nodes and gives its pods a matching nodeSelector, so the test
platform's real host (and other tests' nodes) never take them; pods are removed at once
(grace 0) afterwards, since no agent would ever finish a graceful deletion.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Callable

import pytest
from kubernetes.client.rest import ApiException


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


class Sim:
    """Simulated nodes and pods of one test, labelled ``sched-test=<id>``, cleaned up after."""

    def __init__(self, client: Any, api: Any, namespace: str) -> None:
        self.v1 = client.CoreV1Api(api)
        self.ns = namespace
        self.id = uuid.uuid4().hex[:6]
        self.nodes: list[str] = []
        self.pods: list[str] = []

    def node(self, name: str, *, cpu: str = "4", memory: str = "8Gi", pods: str = "110",
             labels: dict[str, str] | None = None,
             taints: list[dict[str, str]] | None = None) -> str:
        full = f"sim-{self.id}-{name}"
        resources = {"cpu": cpu, "memory": memory, "pods": pods}
        self.v1.create_node({
            "metadata": {"name": full, "labels": {"kubernetes.io/hostname": full,
                                                  "sched-test": self.id, **(labels or {})}},
            "spec": {"taints": taints or []},
            "status": {"capacity": resources, "allocatable": resources,
                       "conditions": [{"type": "Ready", "status": "True",
                                       "reason": "KubeletReady", "message": "simulated"}]}})
        self.nodes.append(full)
        return full

    def pod(self, name: str, *, cpu: str = "100m", labels: dict[str, str] | None = None,
            selector: dict[str, str] | None = None, **spec: Any) -> str:
        self.v1.create_namespaced_pod(self.ns, {
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {"nodeSelector": {"sched-test": self.id, **(selector or {})},
                     "containers": [{"name": "c", "image": "busybox",
                                     "resources": {"requests": {"cpu": cpu}}}], **spec}})
        self.pods.append(name)
        return name

    def read(self, name: str) -> Any:
        return self.v1.read_namespaced_pod(name, self.ns)

    def wait_bound(self, name: str, timeout: float = 30.0) -> str:
        return wait_for(lambda: self.read(name).spec.node_name, timeout, f"{name} bound")

    def wait_unschedulable(self, name: str, saying: str, timeout: float = 30.0) -> Any:
        """PodScheduled=False with a message containing ``saying`` (the scheduler may first
        have tried the pod before it saw the test's nodes: the message then differs)."""
        def check() -> Any:
            for c in self.read(name).status.conditions or []:
                if c.type == "PodScheduled" and c.status == "False" and saying in c.message:
                    return c
            return None
        return wait_for(check, timeout, f"{name} PodScheduled=False, {saying!r}")

    def events(self, name: str, reason: str) -> list[Any]:
        return [e for e in self.v1.list_namespaced_event(self.ns).items
                if e.involved_object.name == name and e.reason == reason]

    def cleanup(self) -> None:
        for name in self.pods:
            try:
                self.v1.delete_namespaced_pod(name, self.ns, grace_period_seconds=0)
            except ApiException:
                pass
        for name in self.nodes:
            try:
                self.v1.delete_node(name)
            except ApiException:
                pass


@pytest.fixture
def sim(k8s, namespace: str):  # type: ignore[no-untyped-def]
    client, api = k8s
    s = Sim(client, api, namespace)
    yield s
    s.cleanup()


def reason_counts(message: str) -> tuple[int, dict[str, int]]:
    """``0/5 nodes are available: 3 Insufficient cpu, 2 node(s) ...`` → (5, {reason: n})."""
    m = re.fullmatch(r"0/(\d+) nodes are available: (.+)\.", message)
    assert m, message
    counts = {}
    for part in m.group(2).split(", "):
        n, reason = part.split(" ", 1)
        counts[reason] = int(n)
    return int(m.group(1)), counts


def test_binds_to_the_node_that_fits(sim: Sim) -> None:
    sim.node("small", cpu="1")
    big = sim.node("big", cpu="8")
    sim.pod("p", cpu="2")
    assert sim.wait_bound("p") == big
    pod = sim.read("p")
    scheduled = [c for c in pod.status.conditions if c.type == "PodScheduled"]
    assert scheduled and scheduled[0].status == "True"
    event = wait_for(lambda: sim.events("p", "Scheduled"), what="Scheduled event")[0]
    assert event.type == "Normal"
    assert event.message == f"Successfully assigned {sim.ns}/p to {big}"
    assert event.source.component == "default-scheduler"


def test_insufficient_cpu_is_reported(sim: Sim) -> None:
    for i in range(3):
        sim.node(f"n{i}", cpu="1")
    sim.pod("hungry", cpu="4")
    cond = sim.wait_unschedulable("hungry", "3 Insufficient cpu")
    assert cond.reason == "Unschedulable"
    total, counts = reason_counts(cond.message)
    assert counts["Insufficient cpu"] == 3
    # every other node in the cluster fails the nodeSelector
    assert counts.get("node(s) didn't match Pod's node affinity/selector", 0) == total - 3
    assert sum(counts.values()) == total
    events = wait_for(lambda: [e for e in sim.events("hungry", "FailedScheduling")
                               if e.message == cond.message], what="FailedScheduling event")
    event = events[0]
    assert event.type == "Warning"
    assert event.involved_object.kind == "Pod"
    assert event.involved_object.uid == sim.read("hungry").metadata.uid
    assert event.count >= 1 and event.first_timestamp and event.last_timestamp
    assert sim.read("hungry").spec.node_name is None


def test_node_selector(sim: Sim) -> None:
    sim.node("hdd", labels={"disk": "hdd"})
    ssd = sim.node("ssd", labels={"disk": "ssd"})
    for i in range(3):
        sim.pod(f"p{i}", selector={"disk": "ssd"})
    for i in range(3):
        assert sim.wait_bound(f"p{i}") == ssd


def test_taints_and_tolerations(sim: Sim) -> None:
    gpu = sim.node("gpu", taints=[{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}])
    sim.pod("plain")
    sim.wait_unschedulable("plain", "1 node(s) had untolerated taint {dedicated: gpu}")
    sim.pod("tolerant", tolerations=[{"key": "dedicated", "operator": "Equal", "value": "gpu",
                                      "effect": "NoSchedule"}])
    assert sim.wait_bound("tolerant") == gpu
    sim.pod("tolerates-all", tolerations=[{"operator": "Exists"}])
    assert sim.wait_bound("tolerates-all") == gpu
    assert sim.read("plain").spec.node_name is None


def test_required_anti_affinity_spreads_pods(sim: Sim) -> None:
    nodes = {sim.node("a"), sim.node("b")}
    anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
        "labelSelector": {"matchLabels": {"app": "solo"}},
        "topologyKey": "kubernetes.io/hostname"}]}}
    for i in range(3):  # created back to back: each decision must see the previous ones
        sim.pod(f"s{i}", labels={"app": "solo"}, affinity=anti)

    def bound() -> dict[str, str]:
        return {name: node for name in ("s0", "s1", "s2")
                if (node := sim.read(name).spec.node_name)}
    placed = wait_for(lambda: len(bound()) == 2 and bound(), what="two pods bound")
    assert set(placed.values()) == nodes
    [left] = {"s0", "s1", "s2"} - set(placed)
    sim.wait_unschedulable(left, "2 node(s) didn't satisfy existing pods anti-affinity rules")
    assert len(bound()) == 2


def test_pending_pod_is_scheduled_when_a_node_fits(sim: Sim) -> None:
    sim.node("tiny", cpu="500m")
    sim.pod("waiting", cpu="2")
    sim.wait_unschedulable("waiting", "1 Insufficient cpu")
    roomy = sim.node("roomy", cpu="4")
    assert sim.wait_bound("waiting") == roomy


def test_other_schedulers_pods_are_left_alone(sim: Sim) -> None:
    node = sim.node("n")
    sim.pod("theirs", schedulerName="someone-else")
    sim.pod("ours")
    assert sim.wait_bound("ours") == node
    pod = sim.read("theirs")
    assert pod.spec.node_name is None and not pod.status.conditions


def test_odd_pods_are_reported_and_the_scheduler_goes_on(sim: Sim) -> None:
    node = sim.node("n")
    odd = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "x", "operator": "Near",
                                                     "values": ["y"]}]}]}}}
    sim.pod("odd", affinity=odd)
    # a quantity that does not parse never reaches the scheduler: the API server refuses it
    with pytest.raises(ApiException) as refused:
        sim.v1.create_namespaced_pod(sim.ns, {"metadata": {"name": "greedy"}, "spec": {
            "nodeSelector": {"sched-test": sim.id},
            "containers": [{"name": "c", "image": "busybox",
                            "resources": {"requests": {"cpu": "lots"}}}]}})
    assert refused.value.status == 422
    assert "spec.containers[0].resources.requests[cpu]" in refused.value.body
    sim.wait_unschedulable("odd", '"Near" is not a valid node selector operator')
    sim.pod("fine")
    assert sim.wait_bound("fine") == node
