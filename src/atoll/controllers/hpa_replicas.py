"""How many replicas a resource metric asks for: upstream's HPA replica calculator, pure.

Given the pods the target's scale selects, their metrics (milli-units, as the resource
metrics API reports them) and a target, the proposal is ``ceil(ratio * pods)``, except that
a change within the tolerance (10%) is no change; pods that are pending, not ready yet or
still warming up (CPU only) and pods with no metrics are handled as upstream does: on a
scale-up unready pods count as using nothing, missing ones as using nothing on a scale-up
and their whole request (or the target, if higher) on a scale-down, and a proposal those
assumptions would reverse is dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

from atoll.api import quantity
from atoll.api.timestamps import parse_rfc3339

TOLERANCE = 0.1
#: upstream's --horizontal-pod-autoscaler-cpu-initialization-period
CPU_INITIALIZATION_PERIOD = 300.0
#: upstream's --horizontal-pod-autoscaler-initial-readiness-delay
INITIAL_READINESS_DELAY = 30.0


class MetricError(Exception):
    """Why no proposal could be made (the text becomes the event and condition message)."""


@dataclass(frozen=True)
class PodMetric:
    value: int          # milli-units (millicores, or bytes * 1000)
    timestamp: float
    window: float


@dataclass(frozen=True)
class Proposal:
    replicas: int
    #: percent of requests (utilisation targets), else 0
    utilization: int
    #: average per pod, milli-units
    raw: int


# -- metrics ----------------------------------------------------------------------------------------
def _seconds(window: Any) -> float:
    if isinstance(window, (int, float)):
        return float(window)
    if isinstance(window, str) and window.endswith("s"):
        try:
            return float(window[:-1])
        except ValueError:
            return 0.0
    return 0.0


def pod_metrics(items: Iterable[dict[str, Any]], resource: str, container: str = ""
                ) -> dict[str, PodMetric]:
    """PodMetrics list items as upstream's metrics client reads them: the sum over a pod's
    containers (a pod missing the resource in any container is left out), or the one named
    container's value."""
    out: dict[str, PodMetric] = {}
    for item in items:
        name = (item.get("metadata") or {}).get("name")
        containers = [c for c in item.get("containers") or [] if isinstance(c, dict)]
        if not name:
            continue
        total, missing = 0, not containers
        if container:
            chosen = [c for c in containers if c.get("name") == container]
            if not chosen or resource not in (chosen[0].get("usage") or {}):
                continue
            containers, missing = chosen[:1], False
        for c in containers:
            usage = (c.get("usage") or {}).get(resource)
            if usage is None:
                missing = True
                break
            try:
                total += quantity.millis(usage)
            except ValueError:
                missing = True
                break
        if not missing:
            out[name] = PodMetric(total, parse_rfc3339(item.get("timestamp")) or 0.0,
                                  _seconds(item.get("window")))
    return out


# -- pods -----------------------------------------------------------------------------------------------
def _ready_condition(pod: dict[str, Any]) -> dict[str, Any] | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == "Ready":
            return c
    return None


def group_pods(pods: list[dict[str, Any]], metrics: dict[str, PodMetric], resource: str,
               now: float, *, cpu_initialization_period: float = CPU_INITIALIZATION_PERIOD,
               initial_readiness_delay: float = INITIAL_READINESS_DELAY
               ) -> tuple[int, set[str], set[str], set[str]]:
    """(ready pod count, unready, missing, ignored) pod names, as upstream's groupPods."""
    ready, unready, missing, ignored = 0, set(), set(), set()
    for pod in pods:
        name = pod["metadata"]["name"]
        phase = (pod.get("status") or {}).get("phase")
        if pod["metadata"].get("deletionTimestamp") or phase == "Failed":
            ignored.add(name)
            continue
        if phase == "Pending":
            unready.add(name)
            continue
        metric = metrics.get(name)
        if metric is None:
            missing.add(name)
            continue
        if resource == "cpu":
            cond = _ready_condition(pod)
            started = parse_rfc3339((pod.get("status") or {}).get("startTime"))
            if cond is None or started is None:
                is_unready = True
            else:
                changed = parse_rfc3339(cond.get("lastTransitionTime")) or 0.0
                if started + cpu_initialization_period > now:
                    # warming up: not ready, or no full window of metrics since it became so
                    is_unready = cond.get("status") == "False" or \
                        metric.timestamp < changed + metric.window
                else:
                    # ignore a pod that is not ready and never has been
                    is_unready = cond.get("status") == "False" and \
                        started + initial_readiness_delay > changed
            if is_unready:
                unready.add(name)
                continue
        ready += 1
    return ready, unready, missing, ignored


def pod_requests(pods: list[dict[str, Any]], resource: str, container: str = "") -> dict[str, int]:
    """Each pod's request of ``resource`` in milli-units; every container must have one."""
    out: dict[str, int] = {}
    for pod in pods:
        total = 0
        for c in (pod.get("spec") or {}).get("containers") or []:
            if container and c.get("name") != container:
                continue
            value = ((c.get("resources") or {}).get("requests") or {}).get(resource)
            if value is None:
                raise MetricError(f"missing request for {resource} in container "
                                  f"{c.get('name', '')} of Pod {pod['metadata']['name']}")
            total += quantity.millis(value)
        out[pod["metadata"]["name"]] = total
    return out


# -- ratios ---------------------------------------------------------------------------------------------
def utilization_ratio(metrics: dict[str, int], requests: dict[str, int], target: int
                      ) -> tuple[float, int, int]:
    """(usage / target, utilisation %, average raw usage) over pods with a request."""
    used = requested = entries = 0
    for name, value in metrics.items():
        if name not in requests:
            continue  # missing requests are found elsewhere: an extraneous metric
        used += value
        requested += requests[name]
        entries += 1
    if requested == 0:
        raise MetricError("no metrics returned matched known pods")
    utilization = used * 100 // requested
    return utilization / target, utilization, used // entries


def usage_ratio(metrics: dict[str, int], target: int) -> tuple[float, int]:
    """(average usage / target, average usage)."""
    average = sum(metrics.values()) // len(metrics) if metrics else 0
    return average / target, average


# -- proposals -------------------------------------------------------------------------------------------
def _prepare(pods: list[dict[str, Any]], metrics: dict[str, PodMetric], resource: str,
             now: float, **timing: float) -> tuple[int, set[str], set[str], dict[str, int]]:
    if not pods:
        raise MetricError("no pods returned by selector while calculating replica count")
    ready, unready, missing, ignored = group_pods(pods, metrics, resource, now, **timing)
    values = {n: m.value for n, m in metrics.items() if n not in ignored and n not in unready}
    return ready, unready, missing, values


def _decide(current: int, ready: int, unready: set[str], missing: set[str],
            values: dict[str, int], ratio_fn: Any, fallback: Any, tolerance: float) -> int:
    ratio = ratio_fn(values)
    with_unready = bool(unready) and ratio > 1.0
    if not with_unready and not missing:
        if abs(1.0 - ratio) <= tolerance:
            return current
        return math.ceil(ratio * ready)
    values = dict(values)
    for name in missing:
        if ratio < 1.0:
            values[name] = fallback(name)
        elif ratio > 1.0:
            values[name] = 0
    if with_unready:
        for name in unready:
            values[name] = 0
    new_ratio = ratio_fn(values)
    if abs(1.0 - new_ratio) <= tolerance or (ratio < 1.0 < new_ratio) or \
            (ratio > 1.0 > new_ratio):
        return current  # the assumptions reverse the direction: no change
    replicas = math.ceil(new_ratio * len(values))
    if (new_ratio < 1.0 and replicas > current) or (new_ratio > 1.0 and replicas < current):
        return current
    return replicas


def resource_replicas(current: int, target_utilization: int, resource: str,
                      pods: list[dict[str, Any]], metrics: dict[str, PodMetric], now: float, *,
                      container: str = "", tolerance: float = TOLERANCE,
                      **timing: float) -> Proposal:
    """Upstream's GetResourceReplicas: a Utilization target (percent of requests)."""
    ready, unready, missing, values = _prepare(pods, metrics, resource, now, **timing)
    requests = pod_requests(pods, resource, container)
    if not values:
        raise MetricError("did not receive metrics for targeted pods (pods might be unready)")
    _, utilization, raw = utilization_ratio(values, requests, target_utilization)
    fallback = max(100, target_utilization)
    replicas = _decide(current, ready, unready, missing, values,
                       lambda v: utilization_ratio(v, requests, target_utilization)[0],
                       lambda name: requests.get(name, 0) * fallback // 100, tolerance)
    return Proposal(replicas, utilization, raw)


def raw_resource_replicas(current: int, target_milli: int, resource: str,
                          pods: list[dict[str, Any]], metrics: dict[str, PodMetric], now: float,
                          *, tolerance: float = TOLERANCE, **timing: float) -> Proposal:
    """Upstream's GetRawResourceReplicas: an AverageValue target (milli-units per pod)."""
    ready, unready, missing, values = _prepare(pods, metrics, resource, now, **timing)
    if not values:
        raise MetricError("did not receive metrics for targeted pods (pods might be unready)")
    _, average = usage_ratio(values, target_milli)
    replicas = _decide(current, ready, unready, missing, values,
                       lambda v: usage_ratio(v, target_milli)[0], lambda name: target_milli,
                       tolerance)
    return Proposal(replicas, 0, average)


def milli_quantity(milli: int) -> str:
    """resource.NewMilliQuantity(v, DecimalSI).String(): ``250m``, ``3``, ``12M``."""
    if milli % 1000:
        return f"{milli}m"
    value = milli // 1000
    if value == 0:
        return "0"
    for exp, suffix in ((18, "E"), (15, "P"), (12, "T"), (9, "G"), (6, "M"), (3, "k")):
        if value % 10 ** exp == 0:
            return f"{value // 10 ** exp}{suffix}"
    return str(value)
