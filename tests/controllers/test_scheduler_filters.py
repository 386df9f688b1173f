"""The scheduler's pure parts: quantities, requests, filters, scores, sampling, the queue."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from atoll.api import quantity
from atoll.controllers.capacity import pod_requests
from atoll.controllers.scheduler import filters
from atoll.controllers.scheduler.algorithm import Algorithm, nodes_to_find
from atoll.controllers.scheduler.cache import Cache
from atoll.controllers.scheduler.podinfo import parse_pod
from atoll.controllers.scheduler.queue import SchedulingQueue


def node(name: str, *, cpu: str = "4", memory: str = "8Gi", pods: str = "110",
         labels: dict[str, str] | None = None, taints: list[dict[str, Any]] | None = None,
         ready: str = "True", unschedulable: bool = False, **extra: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                                                  **(labels or {})}},
            "spec": {"taints": taints or [], "unschedulable": unschedulable},
            "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": pods, **extra},
                       "conditions": [{"type": "Ready", "status": ready}]}}


def pod(name: str = "p", *, cpu: str | None = None, memory: str | None = None,
        ns: str = "default", node_name: str = "", labels: dict[str, str] | None = None,
        owner: str = "", **spec: Any) -> dict[str, Any]:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    meta: dict[str, Any] = {"name": name, "namespace": ns, "uid": f"uid-{name}",
                            "resourceVersion": "1", "labels": labels or {}}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner,
                                    "uid": owner, "controller": True}]
    return {"metadata": meta,
            "spec": {"nodeName": node_name,
                     "containers": [{"name": "c", "image": "busybox",
                                     "resources": {"requests": requests}}], **spec}}


def cluster(*nodes: dict[str, Any], pods: tuple[dict[str, Any], ...] = ()) -> Cache:
    cache = Cache()
    for n in nodes:
        cache.set_node(n)
    for p in pods:
        cache.add_pod(parse_pod(p))
    return cache


def no_ns_labels(name: str) -> dict[str, str]:
    return {}


def reasons(cache: Cache, p: dict[str, Any]) -> dict[str, tuple[str, ...] | None]:
    """Each node's filter verdict for the pod."""
    state = filters.prefilter(parse_pod(p), cache, no_ns_labels)
    return {n.name: filters.run_filters(state, n) for n in cache.present_nodes()}


def decide(cache: Cache, p: dict[str, Any], **kw: Any) -> str | None:
    return Algorithm(seed=1, **kw).schedule(parse_pod(p), cache, no_ns_labels).node


# -- quantities and requests ------------------------------------------------------------------
@pytest.mark.parametrize("text, millis, units", [
    ("500m", 500, 1), ("1", 1000, 1), ("0.5", 500, 1), ("1.5Gi", 1610612736000, 1610612736),
    ("2e3", 2_000_000, 2000), ("1k", 1_000_000, 1000), ("100Mi", 104857600000, 104857600),
    ("1n", 1, 1),
])
def test_quantities(text: str, millis: int, units: int) -> None:
    assert quantity.millis(text) == millis
    assert quantity.integer(text) == units


@pytest.mark.parametrize("bad", ["", "abc", "1.2.3", "5mi", "1Zi", [], {}, True, None])
def test_bad_quantities_raise_value_error(bad: Any) -> None:
    with pytest.raises(ValueError):
        quantity.parse(bad)


def test_requests_sum_containers_max_init_plus_overhead() -> None:
    spec = {"containers": [{"resources": {"requests": {"cpu": "100m", "memory": "1Gi"}}},
                           {"resources": {"requests": {"cpu": "200m"}}}],
            "initContainers": [{"resources": {"requests": {"cpu": "1", "memory": "512Mi"}}}],
            "overhead": {"cpu": "10m", "memory": "1Mi"}}
    problems: list[str] = []
    need, nonzero = pod_requests(spec, problems)
    assert problems == []
    assert need.milli_cpu == 1000 + 10  # the init container's 1 cpu beats 300m
    assert need.memory == (1 << 30) + (1 << 20)
    assert need.pods == 1
    assert nonzero.memory == (1 << 30) + 200 * (1 << 20) + (1 << 20)


def test_sidecars_add_to_everything_after_them() -> None:
    spec = {"containers": [{"resources": {"requests": {"cpu": "500m"}}}],
            "initContainers": [{"restartPolicy": "Always",
                                "resources": {"requests": {"cpu": "300m"}}},
                               {"resources": {"requests": {"cpu": "600m"}}}]}
    need, _ = pod_requests(spec, [])
    assert need.milli_cpu == 900  # max(300 + 600, 500 + 300)


def test_limits_stand_in_for_missing_requests() -> None:
    need, _ = pod_requests({"containers": [{"resources": {"limits": {"cpu": "2"},
                                                          "requests": {"memory": "1Mi"}}}]}, [])
    assert need.milli_cpu == 2000 and need.memory == 1 << 20


def test_bad_quantities_are_reported_not_raised() -> None:
    info = parse_pod(pod(cpu="lots"))
    assert info.problems and "cpu" in info.problems[0]
    decision = Algorithm().schedule(info, cluster(node("n1")), no_ns_labels)
    assert decision.node is None and "cannot be scheduled" in decision.message
    # a node with a bad allocatable quantity counts it as zero
    cache = cluster(node("n1", cpu="many"))
    assert reasons(cache, pod(cpu="1")) == {"n1": ("Insufficient cpu",)}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["containers", "resources", "requests", "cpu", "nodeSelector", "affinity",
                         "nodeAffinity", "podAntiAffinity", "podAffinity", "tolerations",
                         "requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms",
                         "matchExpressions", "labelSelector", "topologyKey", "operator", "key",
                         "values", "topologySpreadConstraints", "maxSkew", "whenUnsatisfiable",
                         "ports", "hostPort", "initContainers", "overhead", "weight",
                         "preferredDuringSchedulingIgnoredDuringExecution", "podAffinityTerm",
                         "namespaceSelector", "matchLabelKeys", "matchFields"]),
        children, max_size=4),
    max_leaves=30)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(spec=json_values, labels=json_values, node_labels=json_values, taints=json_values)
def test_hostile_objects_never_raise(spec: Any, labels: Any, node_labels: Any,
                                     taints: Any) -> None:
    obj = {"metadata": {"name": "p", "namespace": "d", "labels": labels}, "spec": spec}
    n = {"metadata": {"name": "n", "labels": node_labels}, "spec": {"taints": taints},
         "status": {"allocatable": spec, "conditions": labels}}
    cache = Cache()
    cache.set_node(n)
    cache.add_pod(parse_pod(dict(obj, metadata={"name": "q", "namespace": "d",
                                                "labels": labels}, spec=spec)))
    Algorithm().schedule(parse_pod(obj), cache, no_ns_labels)


# -- filters ----------------------------------------------------------------------------------
def test_not_ready_and_unschedulable_nodes() -> None:
    cache = cluster(node("a", ready="False"), node("b", unschedulable=True), node("c"))
    assert reasons(cache, pod()) == {"a": (filters.NOT_READY,), "b": (filters.UNSCHEDULABLE,),
                                     "c": None}
    tolerant = pod(tolerations=[{"key": "node.kubernetes.io/unschedulable",
                                 "operator": "Exists", "effect": "NoSchedule"}])
    assert reasons(cache, tolerant)["b"] is None


def test_resources_count_bound_pods() -> None:
    cache = cluster(node("a", cpu="2", memory="1Gi", pods="2"),
                    pods=(pod("x", cpu="1500m", memory="512Mi", node_name="a"),))
    assert reasons(cache, pod(cpu="500m"))["a"] is None
    assert reasons(cache, pod(cpu="600m", memory="600Mi"))["a"] == ("Insufficient cpu",
                                                                    "Insufficient memory")
    cache.add_pod(parse_pod(pod("y", node_name="a")))
    assert reasons(cache, pod())["a"] == ("Too many pods",)
    cache.remove_pod("default/y")
    assert reasons(cache, pod())["a"] is None


def test_extended_resources() -> None:
    cache = cluster(node("a"), node("b", **{"example.com/gpu": "2"}))
    p = pod()
    p["spec"]["containers"][0]["resources"]["limits"] = {"example.com/gpu": "1"}
    assert reasons(cache, p) == {"a": ("Insufficient example.com/gpu",), "b": None}


def test_node_selector_and_affinity_operators() -> None:
    cache = cluster(node("a", labels={"disk": "ssd", "cores": "8"}),
                    node("b", labels={"disk": "hdd", "cores": "2"}), node("c"))
    assert [n for n, r in reasons(cache, pod(nodeSelector={"disk": "ssd"})).items()
            if r is None] == ["a"]

    def fits(*exprs: dict[str, Any], fields: list[dict[str, Any]] | None = None) -> list[str]:
        term: dict[str, Any] = {"matchExpressions": list(exprs)}
        if fields:
            term["matchFields"] = fields
        p = pod(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [term]}}})
        out = reasons(cache, p)
        assert all(r in (None, (filters.NODE_AFFINITY,)) for r in out.values())
        return [n for n, r in out.items() if r is None]

    assert fits({"key": "disk", "operator": "In", "values": ["ssd", "nvme"]}) == ["a"]
    assert fits({"key": "disk", "operator": "NotIn", "values": ["ssd"]}) == ["b", "c"]
    assert fits({"key": "disk", "operator": "Exists"}) == ["a", "b"]
    assert fits({"key": "disk", "operator": "DoesNotExist"}) == ["c"]
    assert fits({"key": "cores", "operator": "Gt", "values": ["4"]}) == ["a"]
    assert fits({"key": "cores", "operator": "Lt", "values": ["4"]}) == ["b"]
    assert fits(fields=[{"key": "metadata.name", "operator": "In", "values": ["c"]}]) == ["c"]
    assert fits() == []  # an empty term matches no node


def test_weird_affinity_is_reported() -> None:
    p = pod(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "Near"}]}]}}})
    info = parse_pod(p)
    assert info.problems and "Near" in info.problems[0]


def test_taints_and_tolerations() -> None:
    cache = cluster(node("a", taints=[{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]),
                    node("b", taints=[{"key": "x", "effect": "NoExecute"}]),
                    node("c", taints=[{"key": "soft", "effect": "PreferNoSchedule"}]))
    assert reasons(cache, pod()) == {"a": ("node(s) had untolerated taint {gpu: yes}",),
                                     "b": ("node(s) had untolerated taint {x: }",), "c": None}
    equal = pod(tolerations=[{"key": "gpu", "operator": "Equal", "value": "yes",
                              "effect": "NoSchedule"}])
    assert reasons(cache, equal)["a"] is None
    wrong_value = pod(tolerations=[{"key": "gpu", "operator": "Equal", "value": "no"}])
    assert reasons(cache, wrong_value)["a"] is not None
    exists = pod(tolerations=[{"key": "x", "operator": "Exists"}])
    assert reasons(cache, exists)["b"] is None
    everything = pod(tolerations=[{"operator": "Exists"}])
    assert set(reasons(cache, everything).values()) == {None}
    # PreferNoSchedule only lowers the score: the untainted-looking choice is a or b
    assert decide(cache, everything) in ("a", "b")


def test_host_ports() -> None:
    used = pod("x", node_name="a", containers=[{"name": "c", "image": "i", "ports": [
        {"containerPort": 80, "hostPort": 8080}]}])
    cache = cluster(node("a"), node("b"), pods=(used,))
    same = pod(containers=[{"name": "c", "image": "i", "ports": [
        {"containerPort": 80, "hostPort": 8080, "hostIP": "10.0.0.1"}]}])
    assert reasons(cache, same) == {"a": (filters.HOST_PORTS,), "b": None}
    udp = pod(containers=[{"name": "c", "image": "i", "ports": [
        {"containerPort": 80, "hostPort": 8080, "protocol": "UDP"}]}])
    assert reasons(cache, udp)["a"] is None


def anti_affinity(app: str, key: str = "kubernetes.io/hostname") -> dict[str, Any]:
    return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]}}


def test_required_pod_anti_affinity_both_ways() -> None:
    nodes = (node("a", labels={"zone": "z1"}), node("b", labels={"zone": "z1"}))
    cache = cluster(*nodes, pods=(pod("w1", node_name="a", labels={"app": "web"}),))
    # the incoming pod's own anti-affinity
    assert reasons(cache, pod(labels={"app": "web"}, affinity=anti_affinity("web"))) == {
        "a": (filters.POD_ANTI_AFFINITY,), "b": None}
    # a zone-wide term excludes both nodes
    assert set(reasons(cache, pod(affinity=anti_affinity("web", "zone"))).values()) == {
        (filters.POD_ANTI_AFFINITY,)}
    # pods in another namespace are not matched by a term without namespaces
    assert reasons(cache, pod(ns="other", affinity=anti_affinity("web")))["a"] is None
    assert reasons(cache, pod(ns="other", affinity={"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "namespaces": ["default"],
             "topologyKey": "kubernetes.io/hostname"}]}}))["a"] == (filters.POD_ANTI_AFFINITY,)
    # an existing pod's anti-affinity keeps matching pods off its node
    cache = cluster(*nodes, pods=(pod("w1", node_name="a", labels={"app": "web"},
                                      affinity=anti_affinity("web")),))
    assert reasons(cache, pod(labels={"app": "web"})) == {
        "a": (filters.EXISTING_ANTI_AFFINITY,), "b": None}
    assert reasons(cache, pod(labels={"app": "db"}))["a"] is None


def test_required_pod_affinity() -> None:
    term = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}]}}
    cache = cluster(node("a", labels={"zone": "z1"}), node("b", labels={"zone": "z2"}),
                    node("c"))
    # no db pod anywhere, and the pod is no db itself: nowhere
    assert set(reasons(cache, pod(affinity=term)).values()) == {(filters.POD_AFFINITY,)}
    # ... but the first pod of a group with affinity to itself may go anywhere with the label
    first = reasons(cache, pod(labels={"app": "db"}, affinity=term))
    assert first == {"a": None, "b": None, "c": (filters.POD_AFFINITY,)}
    cache.add_pod(parse_pod(pod("db", node_name="b", labels={"app": "db"})))
    assert reasons(cache, pod(affinity=term)) == {"a": (filters.POD_AFFINITY,), "b": None,
                                                  "c": (filters.POD_AFFINITY,)}


def test_topology_spread_do_not_schedule() -> None:
    spread = [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
               "labelSelector": {"matchLabels": {"app": "web"}}}]
    cache = cluster(node("a", labels={"zone": "z1"}), node("b", labels={"zone": "z2"}),
                    node("c"), pods=(pod("w1", node_name="a", labels={"app": "web"}),))
    out = reasons(cache, pod(labels={"app": "web"}, topologySpreadConstraints=spread))
    assert out == {"a": (filters.SPREAD,), "b": None, "c": (filters.SPREAD_MISSING_LABEL,)}
    cache.add_pod(parse_pod(pod("w2", node_name="b", labels={"app": "web"})))
    out = reasons(cache, pod(labels={"app": "web"}, topologySpreadConstraints=spread))
    assert out["a"] is None and out["b"] is None


def test_fit_error_message_is_upstreams() -> None:
    cache = cluster(node("a"), node("b", cpu="1", labels={"x": "y"}), node("c"))
    decision = Algorithm().schedule(parse_pod(pod(cpu="2", nodeSelector={"x": "y"})), cache,
                                    no_ns_labels)
    assert decision.node is None
    assert decision.message == ("0/3 nodes are available: 1 Insufficient cpu, "
                                "2 node(s) didn't match Pod's node affinity/selector.")
    assert filters.fit_error(0, Counter()) == "no nodes available to schedule pods"


# -- scoring and sampling ---------------------------------------------------------------------
def test_least_allocated_and_owner_spread() -> None:
    cache = cluster(node("a"), node("b"), pods=(pod("x", cpu="3", node_name="a"),))
    assert decide(cache, pod(cpu="100m")) == "b"
    # pods of one owner spread over the nodes
    cache = cluster(node("a"), node("b"), node("c"))
    algorithm = Algorithm(seed=3)
    placed = []
    for i in range(3):
        info = parse_pod(pod(f"r{i}", owner="rs1"))
        placed.append(algorithm.schedule(info, cache, no_ns_labels).node)
        cache.assume(info, placed[-1] or "")
    assert sorted(placed) == ["a", "b", "c"]  # type: ignore[type-var]
    # ... and over zones: the empty zone wins over the empty node in a used zone
    zone = "topology.kubernetes.io/zone"
    cache = cluster(node("a", labels={zone: "z1"}), node("b", labels={zone: "z1"}),
                    node("c", labels={zone: "z2"}), pods=(pod("r0", owner="rs1", node_name="a"),))
    assert decide(cache, pod("r1", owner="rs1")) == "c"


def test_preferred_node_affinity_and_pod_affinity() -> None:
    cache = cluster(node("a", labels={"disk": "ssd"}), node("b"),
                    pods=(pod("db", node_name="b", labels={"app": "db"}),))
    prefer_ssd = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 50, "preference": {"matchExpressions": [
            {"key": "disk", "operator": "In", "values": ["ssd"]}]}}]}}
    assert decide(cache, pod(affinity=prefer_ssd)) == "a"
    near_db = {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "db"}},
                                            "topologyKey": "kubernetes.io/hostname"}}]}}
    assert decide(cache, pod(affinity=near_db)) == "b"


def test_prefer_no_schedule_taint_lowers_score() -> None:
    cache = cluster(node("a", taints=[{"key": "k", "effect": "PreferNoSchedule"}]), node("b"))
    assert decide(cache, pod()) == "b"


def test_sampling_finds_enough_nodes_and_rotates() -> None:
    assert nodes_to_find(50, 0) == 50
    assert nodes_to_find(1000, 0) == 420  # upstream: 50% - 1000/125 = 42%
    assert nodes_to_find(5000, 0) == 500
    assert nodes_to_find(1000, 10) == 100
    assert nodes_to_find(300, 10) == 100
    cache = cluster(*(node(f"n{i:03d}") for i in range(300)))
    algorithm = Algorithm(percentage_of_nodes_to_score=10, seed=1)
    d1 = algorithm.schedule(parse_pod(pod()), cache, no_ns_labels)
    assert d1.feasible == 100 and d1.evaluated == 100 and algorithm.next_start == 100
    d2 = algorithm.schedule(parse_pod(pod()), cache, no_ns_labels)
    assert d2.evaluated == 100 and algorithm.next_start == 200
    assert d1.node != d2.node


def test_assume_and_forget() -> None:
    cache = cluster(node("a", cpu="1"))
    info = parse_pod(pod("x", cpu="800m"))
    cache.assume(info, "a")
    assert reasons(cache, pod(cpu="500m"))["a"] == ("Insufficient cpu",)
    cache.forget("default/x")
    assert reasons(cache, pod(cpu="500m"))["a"] is None
    # once the informer confirms the binding, forget no longer removes it
    cache.assume(info, "a")
    cache.confirm("default/x")
    cache.forget("default/x")
    assert "default/x" in cache.pods


# -- the queue --------------------------------------------------------------------------------
async def test_queue_priority_backoff_and_moves() -> None:
    q = SchedulingQueue(initial_backoff=0.05, max_backoff=0.2, unschedulable_timeout=60)
    q.add("low", 0)
    q.add("high", 10)
    assert await q.pop() == "high"
    assert await q.pop() == "low"
    q.unschedulable("high")
    q.unschedulable("low")
    assert q.counts()["unschedulable"] == 2
    # nothing is ready until something changes
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(q.pop(), 0.1)
    q.move_all(lambda key: key == "low")
    assert await asyncio.wait_for(q.pop(), 1) == "low"  # its back-off had run out already
    # a change during an attempt sends a failure to back-off, not to the unschedulable set
    q.move_all()
    key = await asyncio.wait_for(q.pop(), 1)
    assert key == "high"
    q.move_all()
    q.unschedulable("high")
    assert q.counts()["backoff"] == 1
    assert await asyncio.wait_for(q.pop(), 1) == "high"
    q.delete("high")
    q.delete("low")
    assert len(q) == 0


def test_vm_reservations_count_against_the_host() -> None:
    from atoll.controllers.capacity import Resources
    from atoll.controllers.scheduler.cache import Cache

    cache = Cache()
    cache.set_node({"metadata": {"name": "h"}, "status": {
        "allocatable": {"cpu": "2", "memory": "4Gi"},
        "conditions": [{"type": "Ready", "status": "True"}]}})
    reserved = Resources(milli_cpu=2000, memory=2 << 30)
    assert cache.set_reservation("ns/vm", "h", reserved)
    assert not cache.set_reservation("ns/vm", "h", Resources(milli_cpu=2000, memory=2 << 30))
    assert cache.nodes["h"].requested.milli_cpu == 2000
    assert cache.set_reservation("ns/vm", "h", None)
    assert cache.nodes["h"].requested.milli_cpu == 0 and not cache.reservations
