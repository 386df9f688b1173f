"""Placement of VMs on hosts: hardware fit, reservations, readiness, the best host."""

from __future__ import annotations

from typing import Any

from atoll.controllers.capacity import Resources
from atoll.controllers.vmoperator import placement


def node(name: str, cpu: str = "4", memory: str = "16Gi", ready: bool = True,
         **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": spec,
            "status": {"capacity": {"cpu": cpu, "memory": memory},
                       "allocatable": {"cpu": cpu, "memory": memory},
                       "conditions": [{"type": "Ready", "status": "True" if ready else "Unknown"}]}}


def klass(cpus: int, memory: str, guaranteed: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"hardware": {"cpus": cpus, "memory": memory}}
    if guaranteed:
        spec["policies"] = {"resources": {"requests": {"cpu": str(cpus), "memory": memory}}}
    return {"spec": spec}


def pod(node_name: str, cpu: str, memory: str) -> dict[str, Any]:
    return {"spec": {"nodeName": node_name, "containers": [
        {"resources": {"requests": {"cpu": cpu, "memory": memory}}}]},
        "status": {"phase": "Running"}}


def taken(pods: list[dict[str, Any]] | None = None,
          reservations: list[tuple[str, Resources]] | None = None) -> placement.Requested:
    """What placement reads per host: the host's pods' requests and its VMs' reservations."""
    return lambda host: placement.requested_on(
        host, [p for p in pods or [] if p["spec"]["nodeName"] == host],
        [r for h, r in reservations or [] if h == host])


def test_most_unreserved_memory_wins() -> None:
    nodes = [node("a"), node("b")]
    d = placement.place(placement.demand(klass(2, "2Gi")), nodes, taken([pod("a", "1", "4Gi")]))
    assert (d.host, d.reason) == ("b", placement.SATISFIED)


def test_class_larger_than_any_host_is_insufficient() -> None:
    d = placement.place(placement.demand(klass(2, "32Gi")), [node("a")], taken())
    assert d.host is None and d.reason == placement.INSUFFICIENT and "32768 MiB" in d.message
    # more vCPUs than host CPUs is overcommit, not a misfit (without a reservation)
    assert placement.place(placement.demand(klass(8, "2Gi")), [node("a")], taken()).host == "a"


def test_guaranteed_reservations_count_pods_and_other_vms() -> None:
    want = placement.demand(klass(2, "8Gi", guaranteed=True))
    reserved = placement.demand(klass(2, "8Gi", guaranteed=True)).reserved
    d = placement.place(want, [node("a")], taken([pod("a", "100m", "1Gi")], [("a", reserved)]))
    assert d.host is None and d.reason == placement.INSUFFICIENT
    best_effort = placement.demand(klass(2, "8Gi"))
    assert placement.place(best_effort, [node("a")],
                           taken([pod("a", "100m", "1Gi")], [("a", reserved)])).host == "a"


def test_no_ready_or_schedulable_host() -> None:
    nodes = [node("a", ready=False), node("b", unschedulable=True),
             node("c", taints=[{"key": "k", "effect": "NoSchedule"}])]
    d = placement.place(placement.demand(klass(1, "1Gi")), nodes, taken())
    assert d.host is None and d.reason == placement.NO_HOSTS
    assert placement.place(placement.demand(klass(1, "1Gi")), [], taken()).reason == \
        placement.NO_HOSTS


def local_pv(name: str, host: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"nodeAffinity": {"required": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [host]}]}]}}}}


def test_a_vm_whose_claim_is_bound_on_a_host_goes_there_or_nowhere() -> None:
    want = placement.demand(klass(2, "2Gi"))
    nodes = [node("a"), node("b")]
    busy = taken([pod("a", "1", "8Gi")])  # b has more room, but the data is on a
    d = placement.place(want, nodes, busy, [("data", local_pv("pvc-1", "a"))])
    assert (d.host, d.reason) == ("a", placement.SATISFIED)
    # a host that is not Ready keeps the VM off it: it is not moved away from its data
    d = placement.place(want, [node("a", ready=False), node("b")], busy,
                        [("data", local_pv("pvc-1", "a"))])
    assert d.host is None and d.reason == placement.INSUFFICIENT
    assert "a: not Ready" in d.message
    # a host that is gone (or two claims on two hosts): no host has the volumes
    d = placement.place(want, [node("b")], busy, [("data", local_pv("pvc-1", "a"))])
    assert d.host is None and d.reason == placement.VOLUME_CONFLICT
    assert "claim data's volume pvc-1 is on a" in d.message
    d = placement.place(want, nodes, busy, [("x", local_pv("pvc-1", "a")),
                                            ("y", local_pv("pvc-2", "b"))])
    assert d.host is None and d.reason == placement.VOLUME_CONFLICT
    # a volume without node affinity (shared storage) pins nothing
    shared = {"metadata": {"name": "nfs"}, "spec": {}}
    assert placement.place(want, nodes, busy, [("s", shared)]).host == "b"
