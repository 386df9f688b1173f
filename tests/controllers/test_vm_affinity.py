"""VM affinity and anti-affinity as host rules, and placement honouring them."""

from __future__ import annotations

from typing import Any

from atoll.api.vmoperator import names as n
from atoll.controllers.capacity import Resources
from atoll.controllers.vmoperator import placement, vmaffinity


def node(name: str, zone: str = "a") -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}},
            "spec": {},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                       "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                       "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}}


def vm(name: str, labels: dict[str, str], host: str = "", **affinity: Any) -> dict[str, Any]:
    meta = {"name": name, "namespace": "ns", "uid": f"uid-{name}",
            "labels": dict(labels, **({n.HOST_LABEL: host} if host else {}))}
    return {"metadata": meta, "spec": {"groupName": "g", "affinity": affinity} if affinity
            else {"groupName": "g"}}


def term(app: str, key: str = vmaffinity.HOSTNAME) -> list[dict[str, Any]]:
    return [{"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]


NODES = {x["metadata"]["name"]: x for x in (node("h1", "a"), node("h2", "a"), node("h3", "b"))}


def allowed(subject: dict[str, Any], peers: list[dict[str, Any]]) -> list[str]:
    rule = vmaffinity.rule(subject, peers, NODES.get)
    assert rule is not None
    return [name for name, nd in NODES.items() if not rule(nd)]


def test_anti_affinity_keeps_away_from_hosts_and_zones() -> None:
    peers = [vm("db-1", {"app": "db"}, host="h1")]
    spread = vm("db-2", {"app": "db"},
                vmAntiAffinity={"requiredDuringSchedulingPreferredDuringExecution": term("db")})
    assert allowed(spread, peers) == ["h2", "h3"]
    zonal = vm("db-2", {"app": "db"}, vmAntiAffinity={
        "requiredDuringSchedulingPreferredDuringExecution": term(
            "db", "topology.kubernetes.io/zone")})
    assert allowed(zonal, peers) == ["h3"]


def test_affinity_follows_its_peers_and_the_first_goes_anywhere() -> None:
    near = {"requiredDuringSchedulingPreferredDuringExecution": term(
        "cache", "topology.kubernetes.io/zone")}
    web = vm("web", {"app": "web"}, vmAffinity=near)
    assert allowed(web, [vm("cache-1", {"app": "cache"}, host="h3")]) == ["h3"]
    assert allowed(web, []) == []  # nothing to be near: nowhere
    first = vm("cache-1", {"app": "cache"}, vmAffinity=near)
    assert allowed(first, []) == ["h1", "h2", "h3"]  # matches its own term


def test_no_terms_no_rule_and_unreadable_selectors_match_nothing() -> None:
    assert vmaffinity.rule(vm("plain", {"app": "x"}), [], NODES.get) is None
    odd = vm("odd", {"app": "x"}, vmAntiAffinity={
        "requiredDuringSchedulingPreferredDuringExecution": [
            {"labelSelector": {"matchExpressions": [{"key": "app", "operator": "Near"}]}}]})
    assert allowed(odd, [vm("x-1", {"app": "x"}, host="h1")]) == ["h1", "h2", "h3"]


def test_placement_says_the_rules_left_no_host() -> None:
    peers = [vm(f"db-{i}", {"app": "db"}, host=h) for i, h in enumerate(NODES)]
    spread = vm("db-9", {"app": "db"},
                vmAntiAffinity={"requiredDuringSchedulingPreferredDuringExecution": term("db")})
    decision = placement.place(placement.Demand(1, 1 << 30), list(NODES.values()),
                               lambda _h: Resources(), rule=vmaffinity.rule(
                                   spread, peers, NODES.get))
    assert decision.host is None and decision.reason == placement.AFFINITY
    assert "anti-affinity" in decision.message
