"""One scheduling decision: filter the nodes, score the feasible ones, pick the best.

A pure function of the cache and the pod (no I/O), so it is tested without a
server.  Like kube-scheduler, in a big cluster it stops once it has found
enough feasible nodes (``percentageOfNodesToScore``) and starts the next search
where this one stopped, so every node gets its turn and a decision costs a
bounded number of node checks however large the cluster is.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from atoll.controllers.scheduler import filters, scoring
from atoll.controllers.scheduler.cache import Cache, NodeInfo
from atoll.controllers.scheduler.podinfo import PodInfo
from atoll.controllers.scheduler.volumes import PodVolumes

#: below this many nodes all are checked; above it at least this many feasible ones are sought
MIN_FEASIBLE_NODES = 100
#: the adaptive percentage never goes below this (upstream's floor)
MIN_PERCENTAGE = 5


@dataclass(slots=True)
class Decision:
    #: the chosen node, or None when the pod fits nowhere
    node: str | None
    #: why it fits nowhere (upstream's FitError text)
    message: str = ""
    feasible: int = 0
    evaluated: int = 0


def nodes_to_find(total: int, percentage: int, minimum: int = MIN_FEASIBLE_NODES) -> int:
    """How many feasible nodes to look for; ``percentage`` 0 means upstream's adaptive rule
    (50% of a 100-node cluster, 10% of 5,000 nodes, never under 5%)."""
    if total <= minimum:
        return total
    if percentage <= 0:
        percentage = max(50 - total // 125, MIN_PERCENTAGE)
    return max(total * min(percentage, 100) // 100, minimum)


class Algorithm:
    """Holds what persists between decisions: where the next search starts, and a rng."""

    def __init__(self, *, percentage_of_nodes_to_score: int = 0,
                 min_feasible_nodes: int = MIN_FEASIBLE_NODES, seed: int | None = None) -> None:
        self.percentage = percentage_of_nodes_to_score
        self.minimum = min_feasible_nodes
        self.next_start = 0
        self.rng = random.Random(seed)

    def schedule(self, pod: PodInfo, cache: Cache, ns_labels: filters.NamespaceLabels,
                 volumes: PodVolumes | None = None) -> Decision:
        if pod.problems:
            return Decision(None, "pod cannot be scheduled: " + "; ".join(pod.problems[:5]))
        nodes = cache.present_nodes()
        total = len(nodes)
        if total == 0:
            return Decision(None, filters.NO_NODES)
        if volumes is not None and volumes.error:
            return Decision(None, f"0/{total} nodes are available: {volumes.error}.")
        state = filters.prefilter(pod, cache, ns_labels, volumes)
        want = nodes_to_find(total, self.percentage, self.minimum)
        feasible: list[NodeInfo] = []
        reasons: Counter[str] = Counter()
        start = self.next_start % total
        run = filters.run_filters
        processed = 0
        for i in range(total):
            node = nodes[(start + i) % total]
            processed += 1
            failed = run(state, node)
            if failed is None:
                feasible.append(node)
                if len(feasible) >= want:
                    break
            else:
                for reason in failed:
                    reasons[reason] += 1
        self.next_start = (start + processed) % total
        if not feasible:
            return Decision(None, filters.fit_error(total, reasons), 0, processed)
        if len(feasible) == 1:
            return Decision(feasible[0].name, "", 1, processed)
        scores = scoring.score(pod, feasible, cache, ns_labels)
        best = scoring.select_host(feasible, scores, self.rng)
        return Decision(best.name, "", len(feasible), processed)
