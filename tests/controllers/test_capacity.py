"""The capacity model the pod scheduler and VM placement share: one set of numbers."""

from __future__ import annotations

from typing import Any

from atoll.controllers import capacity
from atoll.controllers.capacity import Resources
from atoll.controllers.scheduler import filters
from atoll.controllers.scheduler.cache import Cache
from atoll.controllers.scheduler.podinfo import parse_pod
from atoll.controllers.vmoperator import placement

GI = 1 << 30


def node(name: str = "n", *, status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name},
            "status": status if status is not None else {
                "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "capacity": {"cpu": "4", "memory": "16Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}]}}


def container(cpu: str, memory: str, **extra: Any) -> dict[str, Any]:
    return {"name": "c", "resources": {"requests": {"cpu": cpu, "memory": memory}}, **extra}


def pod(name: str, node_name: str = "n", phase: str = "Running", **spec: Any) -> dict[str, Any]:
    spec.setdefault("containers", [container("500m", "1Gi")])
    return {"metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}",
                         "resourceVersion": "1"},
            "spec": {"nodeName": node_name, **spec}, "status": {"phase": phase}}


def test_allocatable_defaults_to_capacity_as_the_api_does() -> None:
    assert capacity.node_allocatable(node()).memory == 8 * GI
    assert capacity.node_capacity(node()).memory == 16 * GI
    only_capacity = node(status={"capacity": {"cpu": "2", "memory": "1Gi", "pods": "10"}})
    got = capacity.node_allocatable(only_capacity)
    assert (got.milli_cpu, got.memory, got.pods) == (2000, GI, 10)
    problems: list[str] = []
    bad = capacity.node_allocatable(node(status={"allocatable": {"cpu": "lots"}}), problems)
    assert bad.milli_cpu == 0 and problems


def test_pod_requests_as_upstreams_compute_pod_resource_request() -> None:
    # containers sum to 1500m/3Gi; a sidecar (restartable init container) started first keeps
    # running beside the later init container and the containers; overhead on top
    spec = {"containers": [container("1", "1Gi"), container("500m", "2Gi")],
            "initContainers": [container("100m", "128Mi", restartPolicy="Always"),
                               container("2", "512Mi")],
            "overhead": {"cpu": "250m", "memory": "64Mi"}}
    need = capacity.pod_usage(pod("p", **spec))
    # cpu: max(1500 + 100 sidecar, 100 + 2000 init) = 2100, + 250 overhead
    assert need.milli_cpu == 2350
    # memory: max(3Gi + 128Mi, 128Mi + 512Mi) + 64Mi
    assert need.memory == 3 * GI + (128 << 20) + (64 << 20)
    assert need.pods == 1
    # a sidecar started after an init container does not overlap it
    spec["initContainers"].reverse()
    assert capacity.pod_usage(pod("p", **spec)).milli_cpu == 2000 + 250


def test_only_bound_unfinished_pods_occupy_a_node() -> None:
    pods = [pod("run"), pod("done", phase="Succeeded"), pod("failed", phase="Failed"),
            pod("pending", node_name=""), pod("elsewhere", node_name="m")]
    terminating = pod("stopping")
    terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    pods.append(terminating)
    assert [capacity.occupies(p) for p in pods] == ["n", "", "", "", "m", "n"]
    used = capacity.requested_by(pods, "n")
    assert (used.milli_cpu, used.memory, used.pods) == (1000, 2 * GI, 2)


def test_class_reservation_only_for_classes_that_reserve() -> None:
    guaranteed = {"spec": {"hardware": {"cpus": 2, "memory": "4Gi"}, "policies": {
        "resources": {"requests": {"cpu": "2", "memory": "4Gi"}}}}}
    got = capacity.class_reservation(guaranteed)
    assert got is not None and (got.milli_cpu, got.memory, got.pods) == (2000, 4 * GI, 0)
    assert capacity.class_reservation({"spec": {"hardware": {"cpus": 2}}}) is None
    assert capacity.class_reservation(None) is None
    vm = {"metadata": {"namespace": "ns", "labels": {"vmoperator.atoll.dev/host": "h"}},
          "spec": {"className": "guaranteed-small"}}
    assert list(capacity.by_vm_host(vm)) == ["h"]
    assert list(capacity.by_vm_class(vm)) == ["ns/guaranteed-small"]
    assert list(capacity.by_vm_host({"metadata": {}})) == [""]


def test_shortfalls_in_upstreams_order() -> None:
    alloc = Resources(milli_cpu=1000, memory=GI, pods=1, scalar={"example.com/gpu": 1})
    used = Resources(milli_cpu=500, memory=GI // 2, pods=1)
    need = Resources(milli_cpu=600, memory=GI, pods=1, scalar={"example.com/gpu": 2})
    assert capacity.shortfalls(need, alloc, used) == ["pods", "cpu", "memory", "example.com/gpu"]
    # a VM reservation is not a pod: the pod count does not apply
    assert capacity.shortfalls(Resources(milli_cpu=500), alloc, used, new_pod=False) == []
    # an amount not asked for fits even on an overcommitted node
    assert capacity.shortfalls(Resources(memory=1), alloc, Resources(milli_cpu=9000)) == []
    left = capacity.free(alloc, used)
    assert (left.milli_cpu, left.memory) == (500, GI // 2)


def test_scheduler_and_vm_placement_see_the_same_numbers() -> None:
    """What the scheduler's cache counts on a node is what placement counts, and a
    reservation that placement refuses is one the scheduler would call insufficient."""
    pods = [pod("a", containers=[container("1", "2Gi")], overhead={"memory": "1Gi"}),
            pod("b", initContainers=[container("2", "1Gi")]),
            pod("gone", phase="Succeeded")]
    cache = Cache()
    cache.set_node(node())
    for p in pods:
        if capacity.occupies(p):
            cache.add_pod(parse_pod(p))
    info = cache.nodes["n"]
    mine = capacity.requested_by(pods, "n")
    assert info.requested == mine
    assert info.allocatable == capacity.node_allocatable(node())

    # 8Gi allocatable, 3Gi + 1Gi requested: a 4Gi reservation fits, a 5Gi one does not
    def requested(host: str) -> Resources:
        return placement.requested_on(host, pods, [])

    def klass(memory: str) -> dict[str, Any]:
        return {"spec": {"hardware": {"cpus": 1, "memory": memory}, "policies": {
            "resources": {"requests": {"cpu": "100m", "memory": memory}}}}}

    assert placement.place(placement.demand(klass("4Gi")), [node()], requested).host == "n"
    refused = placement.place(placement.demand(klass("5Gi")), [node()], requested)
    assert refused.host is None and refused.reason == placement.INSUFFICIENT
    # the scheduler says the same of a pod asking for those 5Gi
    big = parse_pod(pod("big", node_name="", containers=[container("100m", "5Gi")]))
    state = filters.prefilter(big, cache, lambda ns: {})
    assert filters.check_resources(state, info) == (filters.insufficient("memory"),)
    fits = parse_pod(pod("fits", node_name="", containers=[container("100m", "4Gi")]))
    assert filters.check_resources(filters.prefilter(fits, cache, lambda ns: {}), info) is None
