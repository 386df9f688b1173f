"""Ranking the feasible nodes: kube-scheduler's default Score plugins, as functions.

Each plugin gives every node 0..100 (normalised over the nodes being scored),
then plugins are summed with upstream's weights.  Plugins that cannot tell the
nodes apart for this pod (no preferences, no taints, no owner) are skipped, so
an ordinary pod costs one integer formula per node.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Callable

from atoll.controllers.scheduler.cache import Cache, NodeInfo
from atoll.controllers.scheduler.podinfo import (PREFER_NO_SCHEDULE, ZONE_LABEL, PodInfo,
                                                 PodTerm, Toleration, tolerated)

MAX_SCORE = 100
#: upstream's default plugin weights
LEAST_ALLOCATED_WEIGHT = 1
NODE_AFFINITY_WEIGHT = 2
INTER_POD_AFFINITY_WEIGHT = 2
SPREAD_WEIGHT = 2
TAINT_WEIGHT = 3
#: the weight a required affinity term of an existing pod adds for pods it matches
HARD_POD_AFFINITY_WEIGHT = 1
#: how much the zone counts against the node when spreading an owner's pods
ZONE_WEIGHTING = 2.0 / 3.0

NamespaceLabels = Callable[[str], dict[str, str]]


def least_allocated(pod: PodInfo, nodes: list[NodeInfo]) -> list[float]:
    """Favour emptier nodes: the mean free share of cpu and memory after placing the pod
    (requests counted with upstream's non-zero defaults).  Inlined: it runs for every
    scored node of every pod."""
    cpu, memory = pod.nonzero.milli_cpu, pod.nonzero.memory
    out = []
    for n in nodes:
        alloc = n.allocatable
        c, m = alloc.milli_cpu, alloc.memory
        rc, rm = n.nonzero_cpu + cpu, n.nonzero_memory + memory
        score = ((c - rc) * MAX_SCORE // c if 0 < c and rc <= c else 0) + \
            ((m - rm) * MAX_SCORE // m if 0 < m and rm <= m else 0)
        out.append(float(LEAST_ALLOCATED_WEIGHT * (score // 2)))
    return out


def _normalise(raw: list[float], reverse: bool = False) -> list[float]:
    """Scale so the best node gets MAX_SCORE (``reverse``: the one with the least)."""
    top = max(raw) if raw else 0
    if top <= 0:
        return [float(MAX_SCORE) if reverse else 0.0] * len(raw)
    if reverse:
        return [MAX_SCORE - r * MAX_SCORE / top for r in raw]
    return [r * MAX_SCORE / top for r in raw]


def preferred_node_affinity(pod: PodInfo, nodes: list[NodeInfo]) -> list[float]:
    raw = [float(sum(weight for weight, term in pod.preferred_node_terms
                     if term.matches(n.name, n.labels))) for n in nodes]
    return _normalise(raw)


def _prefer_no_schedule_tolerations(pod: PodInfo) -> tuple[Toleration, ...]:
    return tuple(t for t in pod.tolerations if t.effect in ("", PREFER_NO_SCHEDULE))


def taint_toleration(pod: PodInfo, nodes: list[NodeInfo]) -> list[float]:
    """Fewer untolerated PreferNoSchedule taints is better."""
    tolerations = _prefer_no_schedule_tolerations(pod)
    raw = [float(sum(1 for t in n.soft_taints if not tolerated(tolerations, t))) for n in nodes]
    return _normalise(raw, reverse=True)


def owner_spread(pod: PodInfo, nodes: list[NodeInfo]) -> list[float] | None:
    """Fewer pods of the same owner, on the node and in its zone, is better; None when
    no node holds one yet (the plugin cannot tell the nodes apart)."""
    owner = pod.owner_uid
    counts = [n.owners.get(owner, 0) for n in nodes]
    top = max(counts)
    if top == 0:
        return None
    scores = [MAX_SCORE * (top - c) / top for c in counts]
    zones = [n.labels.get(ZONE_LABEL) for n in nodes]
    per_zone: dict[str, int] = {}
    for zone, c in zip(zones, counts):
        if zone:
            per_zone[zone] = per_zone.get(zone, 0) + c
    top_zone = max(per_zone.values(), default=0)
    if top_zone == 0:
        return scores
    for i, zone in enumerate(zones):
        if zone:
            zone_score = MAX_SCORE * (top_zone - per_zone[zone]) / top_zone
            scores[i] = scores[i] * (1 - ZONE_WEIGHTING) + zone_score * ZONE_WEIGHTING
    return scores


def _add_terms(domain: Counter[tuple[str, str]], labels: dict[str, str],
               terms: tuple[PodTerm, ...], sign: int, target: PodInfo,
               ns_labels: NamespaceLabels, weight: int = 0) -> None:
    """Credit (or debit) the domain of ``labels`` for each term that ``target`` matches."""
    for t in terms:
        value = labels.get(t.topology_key)
        if value is not None and t.matches(target, ns_labels):
            domain[(t.topology_key, value)] += sign * (weight or t.weight)


def inter_pod_affinity(pod: PodInfo, nodes: list[NodeInfo], cache: Cache,
                       ns_labels: NamespaceLabels) -> list[float] | None:
    """Preferred pod (anti-)affinity both ways, summed per topology domain; None if moot."""
    has_own = bool(pod.preferred_affinity or pod.preferred_anti_affinity)
    others = cache.pods.values() if has_own else cache.with_affinity.values()
    domain: Counter[tuple[str, str]] = Counter()
    for other in others:
        node = cache.nodes.get(other.node_name)
        if node is None or other.key == pod.key:
            continue
        labels = node.labels
        _add_terms(domain, labels, pod.preferred_affinity, 1, other, ns_labels)
        _add_terms(domain, labels, pod.preferred_anti_affinity, -1, other, ns_labels)
        if other.has_pod_affinity:
            _add_terms(domain, labels, other.preferred_affinity, 1, pod, ns_labels)
            _add_terms(domain, labels, other.affinity, 1, pod, ns_labels,
                       HARD_POD_AFFINITY_WEIGHT)
            _add_terms(domain, labels, other.preferred_anti_affinity, -1, pod, ns_labels)
    if not domain:
        return None
    raw = [float(sum(domain.get((k, v), 0) for k, v in n.labels.items())) for n in nodes]
    low, high = min(raw), max(raw)
    if high == low:
        return None
    return [MAX_SCORE * (r - low) / (high - low) for r in raw]


def score(pod: PodInfo, nodes: list[NodeInfo], cache: Cache,
          ns_labels: NamespaceLabels) -> list[float]:
    """The weighted total of every applicable plugin, per node (same order as ``nodes``)."""
    total = least_allocated(pod, nodes)

    def add(scores: list[float] | None, weight: int) -> None:
        if scores is not None:
            for i, s in enumerate(scores):
                total[i] += weight * s

    if pod.preferred_node_terms:
        add(preferred_node_affinity(pod, nodes), NODE_AFFINITY_WEIGHT)
    if any(n.soft_taints for n in nodes):
        add(taint_toleration(pod, nodes), TAINT_WEIGHT)
    if pod.owner_uid:
        add(owner_spread(pod, nodes), SPREAD_WEIGHT)
    if pod.preferred_affinity or pod.preferred_anti_affinity or cache.with_affinity:
        add(inter_pod_affinity(pod, nodes, cache, ns_labels), INTER_POD_AFFINITY_WEIGHT)
    return total


def select_host(nodes: list[NodeInfo], scores: list[float], rng: random.Random) -> NodeInfo:
    """The best-scoring node; ties broken at random so equal nodes share the load."""
    best = max(scores)
    ties = [n for n, s in zip(nodes, scores) if s == best]
    return ties[0] if len(ties) == 1 else rng.choice(ties)
