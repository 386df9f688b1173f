"""Predicates: can this pod go on this node?  kube-scheduler's Filter plugins, as functions.

``prefilter`` looks at the pod once per attempt: it computes what needs the whole
cluster (pods matching affinity terms per topology domain, spread counts) and
picks the checks that apply to this pod, cheapest first, so that checking a node
is a few dict lookups and integer comparisons.  Each check returns None when the
node fits, or the reasons it does not, worded as upstream words them (users grep
for those texts).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from atoll.controllers.capacity import PODS, shortfalls
from atoll.controllers.scheduler.cache import Cache, NodeInfo
from atoll.controllers.scheduler.podinfo import PodInfo, tolerated
from atoll.controllers.scheduler.volumes import PodVolumes

NOT_READY = "node(s) were not ready"
UNSCHEDULABLE = "node(s) were unschedulable"
NODE_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
HOST_PORTS = "node(s) didn't have free ports for the requested pod ports"
TOO_MANY_PODS = "Too many pods"
EXISTING_ANTI_AFFINITY = "node(s) didn't satisfy existing pods anti-affinity rules"
POD_AFFINITY = "node(s) didn't match pod affinity rules"
POD_ANTI_AFFINITY = "node(s) didn't match pod anti-affinity rules"
SPREAD = "node(s) didn't match pod topology spread constraints"
SPREAD_MISSING_LABEL = ("node(s) didn't match pod topology spread constraints "
                        "(missing required label)")
NO_NODES = "no nodes available to schedule pods"

Reasons = tuple[str, ...]
NamespaceLabels = Callable[[str], dict[str, str]]
Pair = tuple[str, str]
Check = Callable[["CycleState", NodeInfo], "Reasons | None"]


def untolerated_taint(key: str, value: str) -> str:
    return f"node(s) had untolerated taint {{{key}: {value}}}"


def insufficient(resource: str) -> str:
    return f"Insufficient {resource}"


@dataclass(slots=True)
class CycleState:
    """What ``prefilter`` computed for one scheduling attempt of one pod."""

    pod: PodInfo
    #: the checks this pod needs beyond node state, taints and resources, before and after
    #: the resources check (upstream's plugin order decides which reason a node reports)
    before_resources: list[Check] = field(default_factory=list)
    after_resources: list[Check] = field(default_factory=list)
    tolerates_unschedulable: bool = False
    #: topology pairs where an existing pod's required anti-affinity forbids this pod
    existing_anti: Counter[Pair] = field(default_factory=Counter)
    #: pairs holding pods that match all of this pod's required affinity terms
    affinity_counts: Counter[Pair] = field(default_factory=Counter)
    #: pairs holding pods that match one of this pod's required anti-affinity terms
    anti_counts: Counter[Pair] = field(default_factory=Counter)
    #: the pod matches its own affinity terms (it may then start a group anywhere)
    self_affinity: bool = False
    #: per DoNotSchedule constraint: matching pods per domain, the minimum, and self-match
    spread_counts: list[dict[str, int]] = field(default_factory=list)
    spread_min: list[int] = field(default_factory=list)
    spread_self: list[int] = field(default_factory=list)


# -- checks -----------------------------------------------------------------------------------
def check_node_state(state: CycleState, node: NodeInfo) -> Reasons | None:
    if not node.ready:
        return (NOT_READY,)
    if node.unschedulable and not state.tolerates_unschedulable:
        return (UNSCHEDULABLE,)
    return None


def check_taints(state: CycleState, node: NodeInfo) -> Reasons | None:
    for taint in node.hard_taints:
        if not tolerated(state.pod.tolerations, taint):
            return (untolerated_taint(taint.key, taint.value),)
    return None


def node_matches_pod_affinity(pod: PodInfo, node: NodeInfo) -> bool:
    """``nodeSelector`` and required node affinity (any one of the terms)."""
    labels = node.labels
    for key, value in pod.node_selector.items():
        if labels.get(key) != value:
            return False
    terms = pod.required_node_terms
    if terms is not None:
        for term in terms:
            if term.matches(node.name, labels):
                return True
        return False
    return True


def check_node_affinity(state: CycleState, node: NodeInfo) -> Reasons | None:
    return None if node_matches_pod_affinity(state.pod, node) else (NODE_AFFINITY,)


def ports_conflict(wanted: tuple[str, str, int], used: tuple[str, str, int]) -> bool:
    """Same protocol and port, and the same address or either one the wildcard."""
    ip, proto, port = wanted
    uip, uproto, uport = used
    return port == uport and proto == uproto and (ip == uip or ip == "0.0.0.0" or
                                                  uip == "0.0.0.0")


def check_host_ports(state: CycleState, node: NodeInfo) -> Reasons | None:
    if not node.ports:
        return None
    for wanted in state.pod.host_ports:
        for used in node.ports:
            if ports_conflict(wanted, used):
                return (HOST_PORTS,)
    return None


def check_resources(state: CycleState, node: NodeInfo) -> Reasons | None:
    """Requests against allocatable minus what bound and assumed pods (and VMs) take."""
    short = shortfalls(state.pod.requests, node.allocatable, node.requested)
    if not short:
        return None
    return tuple(TOO_MANY_PODS if name == PODS else insufficient(name) for name in short)


def check_spread(state: CycleState, node: NodeInfo) -> Reasons | None:
    for i, c in enumerate(state.pod.spread):
        value = node.labels.get(c.topology_key)
        if value is None:
            return (SPREAD_MISSING_LABEL,)
        skew = state.spread_counts[i].get(value, 0) + state.spread_self[i] - state.spread_min[i]
        if skew > c.max_skew:
            return (SPREAD,)
    return None


def check_inter_pod_affinity(state: CycleState, node: NodeInfo) -> Reasons | None:
    labels = node.labels
    for (key, value), count in state.existing_anti.items():
        if count > 0 and labels.get(key) == value:
            return (EXISTING_ANTI_AFFINITY,)
    pod = state.pod
    if pod.affinity:
        pods_exist = True
        for term in pod.affinity:
            value = labels.get(term.topology_key)
            if value is None:
                return (POD_AFFINITY,)  # every topology label must exist on the node
            if state.affinity_counts.get((term.topology_key, value), 0) <= 0:
                pods_exist = False
        # the first pod of a group with affinity to itself may go anywhere
        if not pods_exist and not (not state.affinity_counts and state.self_affinity):
            return (POD_AFFINITY,)
    for term in pod.anti_affinity:
        value = labels.get(term.topology_key)
        if value is not None and state.anti_counts.get((term.topology_key, value), 0) > 0:
            return (POD_ANTI_AFFINITY,)
    return None


# -- once per attempt -------------------------------------------------------------------------
def prefilter(pod: PodInfo, cache: Cache, ns_labels: NamespaceLabels,
              volumes: PodVolumes | None = None) -> CycleState:
    state = CycleState(pod, tolerates_unschedulable=pod.tolerates_unschedulable())
    if volumes is not None and (volumes.bound or volumes.unbound):
        state.after_resources.append(volumes.check)  # VolumeBinding, before spreading
    if pod.node_selector or pod.required_node_terms is not None:
        state.before_resources.append(check_node_affinity)
    if pod.host_ports:
        state.before_resources.append(check_host_ports)
    if pod.spread:
        _prefilter_spread(state, cache)
        state.after_resources.append(check_spread)
    _prefilter_inter_pod(state, cache, ns_labels)
    if state.existing_anti or pod.affinity or pod.anti_affinity:
        state.after_resources.append(check_inter_pod_affinity)
    return state


def run_filters(state: CycleState, node: NodeInfo) -> Reasons | None:
    """All checks in upstream's order; the common ones inlined (this runs per pod x node)."""
    if not node.plain:
        reasons = check_node_state(state, node) or check_taints(state, node)
        if reasons is not None:
            return reasons
    for check in state.before_resources:
        reasons = check(state, node)
        if reasons is not None:
            return reasons
    need, free, used = state.pod.requests, node.allocatable, node.requested
    if used.pods >= free.pods or need.milli_cpu > free.milli_cpu - used.milli_cpu or \
            need.memory > free.memory - used.memory or \
            need.ephemeral_storage > free.ephemeral_storage - used.ephemeral_storage or \
            need.scalar:
        reasons = check_resources(state, node)
        if reasons is not None:
            return reasons
    for check in state.after_resources:
        reasons = check(state, node)
        if reasons is not None:
            return reasons
    return None


def _prefilter_inter_pod(state: CycleState, cache: Cache, ns_labels: NamespaceLabels) -> None:
    pod = state.pod
    nodes = cache.nodes
    for other in cache.with_affinity.values():
        if not other.anti_affinity or other.key == pod.key:
            continue
        node = nodes.get(other.node_name)
        if node is None:
            continue
        for term in other.anti_affinity:
            value = node.labels.get(term.topology_key)
            if value is not None and term.matches(pod, ns_labels):
                state.existing_anti[(term.topology_key, value)] += 1
    if not pod.affinity and not pod.anti_affinity:
        return
    state.self_affinity = all(t.matches(pod, ns_labels) for t in pod.affinity)
    for other in cache.pods.values():
        if other.key == pod.key:
            continue
        node = nodes.get(other.node_name)
        if node is None:
            continue
        if pod.affinity and all(t.matches(other, ns_labels) for t in pod.affinity):
            for term in pod.affinity:
                value = node.labels.get(term.topology_key)
                if value is not None:
                    state.affinity_counts[(term.topology_key, value)] += 1
        for term in pod.anti_affinity:
            value = node.labels.get(term.topology_key)
            if value is not None and term.matches(other, ns_labels):
                state.anti_counts[(term.topology_key, value)] += 1


def _prefilter_spread(state: CycleState, cache: Cache) -> None:
    """Matching pods per topology domain, over the nodes the pod could be placed on."""
    pod = state.pod
    keys = [c.topology_key for c in pod.spread]
    counts: list[dict[str, int]] = [{} for _ in pod.spread]
    for node in cache.present_nodes():
        labels = node.labels
        if any(k not in labels for k in keys):
            continue  # a node lacking any of the keys is no domain at all
        for i, c in enumerate(pod.spread):
            if c.honor_node_affinity and not node_matches_pod_affinity(pod, node):
                continue
            if c.honor_taints and any(not tolerated(pod.tolerations, t)
                                      for t in node.hard_taints):
                continue
            n = 0
            for other in node.pods.values():
                if other.namespace == pod.namespace and not other.terminating and \
                        other.key != pod.key and c.selector.matches(other.labels):
                    n += 1
            domain = labels[c.topology_key]
            counts[i][domain] = counts[i].get(domain, 0) + n
    state.spread_counts = counts
    for i, c in enumerate(pod.spread):
        domains = counts[i]
        if len(domains) < c.min_domains or not domains:
            state.spread_min.append(0)
        else:
            state.spread_min.append(min(domains.values()))
        state.spread_self.append(1 if c.selector.matches(pod.labels) else 0)


def fit_error(total_nodes: int, reasons: Counter[str]) -> str:
    """Upstream's FitError text: ``0/3 nodes are available: 1 Insufficient cpu, 2 ...``."""
    if total_nodes == 0:
        return NO_NODES
    parts = sorted(f"{count} {reason}" for reason, count in reasons.items())
    return f"0/{total_nodes} nodes are available: {', '.join(parts)}."
