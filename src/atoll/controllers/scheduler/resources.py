"""Resource amounts as plain integers, parsed once per object version.

Quantities (``500m``, ``1.5Gi``) are parsed with ``api.quantity`` when a pod or
node is seen, never while filtering: the hot path compares ints.  CPU is kept in
millicores, everything else in units rounded up, as kube-scheduler's
``framework.Resource`` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from atoll.api import quantity

CPU, MEMORY, EPHEMERAL_STORAGE, PODS = "cpu", "memory", "ephemeral-storage", "pods"
#: what a container without requests counts as when scoring (upstream's non-zero defaults)
DEFAULT_MILLI_CPU = 100
DEFAULT_MEMORY = 200 * 1024 * 1024


@dataclass(slots=True)
class Resources:
    """cpu (millicores), memory and ephemeral storage (bytes), a pod count, other scalars."""

    milli_cpu: int = 0
    memory: int = 0
    ephemeral_storage: int = 0
    pods: int = 0
    #: extended resources (``example.com/gpu``) and ``hugepages-*``
    scalar: dict[str, int] = field(default_factory=dict)

    def add(self, other: Resources) -> None:
        self.milli_cpu += other.milli_cpu
        self.memory += other.memory
        self.ephemeral_storage += other.ephemeral_storage
        self.pods += other.pods
        for name, value in other.scalar.items():
            self.scalar[name] = self.scalar.get(name, 0) + value

    def subtract(self, other: Resources) -> None:
        self.milli_cpu -= other.milli_cpu
        self.memory -= other.memory
        self.ephemeral_storage -= other.ephemeral_storage
        self.pods -= other.pods
        for name, value in other.scalar.items():
            left = self.scalar.get(name, 0) - value
            if left:
                self.scalar[name] = left
            else:
                self.scalar.pop(name, None)

    def maximum(self, other: Resources) -> None:
        """Each amount becomes the larger of the two (init containers run one at a time)."""
        self.milli_cpu = max(self.milli_cpu, other.milli_cpu)
        self.memory = max(self.memory, other.memory)
        self.ephemeral_storage = max(self.ephemeral_storage, other.ephemeral_storage)
        for name, value in other.scalar.items():
            self.scalar[name] = max(self.scalar.get(name, 0), value)

    def copy(self) -> Resources:
        return Resources(self.milli_cpu, self.memory, self.ephemeral_storage, self.pods,
                         dict(self.scalar))


def is_scalar_name(name: str) -> bool:
    """Extended (``domain/name``) and huge-page resources are counted like cpu and memory."""
    return "/" in name or name.startswith("hugepages-")


def parse_list(value: Any, where: str, problems: list[str]) -> Resources:
    """A ResourceList (``{"cpu": "500m"}``); bad entries are reported and count as zero."""
    out = Resources()
    if value is None:
        return out
    if not isinstance(value, dict):
        problems.append(f"{where}: must be a map of quantities")
        return out
    for name, raw in value.items():
        if not isinstance(name, str):
            continue
        known = name in (CPU, MEMORY, EPHEMERAL_STORAGE, PODS) or is_scalar_name(name)
        if not known:
            continue  # upstream ignores resources the scheduler does not account for
        try:
            amount = quantity.millis(raw) if name == CPU else quantity.integer(raw)
        except (ValueError, ArithmeticError) as exc:
            problems.append(f"{where}[{name}]: {exc}")
            continue
        if amount < 0:
            problems.append(f"{where}[{name}]: must be non-negative")
            continue
        if name == CPU:
            out.milli_cpu = amount
        elif name == MEMORY:
            out.memory = amount
        elif name == EPHEMERAL_STORAGE:
            out.ephemeral_storage = amount
        elif name == PODS:
            out.pods = amount
        else:
            out.scalar[name] = amount
    return out


def _container_requests(c: Any, where: str, problems: list[str]) -> Resources:
    """Requests, where a resource with a limit but no request asks for its limit (API default)."""
    res = c.get("resources") if isinstance(c, dict) else None
    if not isinstance(res, dict):
        return Resources()
    requests = res.get("requests")
    limits = res.get("limits")
    if isinstance(limits, dict) and limits:
        merged = dict(limits)
        if isinstance(requests, dict):
            merged.update(requests)
        requests = merged
    return parse_list(requests, f"{where}.resources.requests", problems)


def _nonzero(r: Resources) -> Resources:
    return Resources(r.milli_cpu or DEFAULT_MILLI_CPU, r.memory or DEFAULT_MEMORY)


def pod_requests(spec: dict[str, Any], problems: list[str]) -> tuple[Resources, Resources]:
    """What a pod needs on a node, and the same with non-zero defaults (for scoring only).

    Regular containers run together (sum); init containers run one at a time before
    them (max), except restartable ("sidecar") init containers, which keep running
    and so add to everything started after them.  ``overhead`` is added on top.
    """
    need, need_nz = Resources(), Resources()
    containers = spec.get("containers")
    for i, c in enumerate(containers if isinstance(containers, list) else []):
        r = _container_requests(c, f"spec.containers[{i}]", problems)
        need.add(r)
        need_nz.add(_nonzero(r))
    sidecars, sidecars_nz = Resources(), Resources()
    init_peak, init_peak_nz = Resources(), Resources()
    inits = spec.get("initContainers")
    for i, c in enumerate(inits if isinstance(inits, list) else []):
        r = _container_requests(c, f"spec.initContainers[{i}]", problems)
        if isinstance(c, dict) and c.get("restartPolicy") == "Always":
            sidecars.add(r)
            sidecars_nz.add(_nonzero(r))
            step, step_nz = sidecars.copy(), sidecars_nz.copy()
        else:
            step, step_nz = sidecars.copy(), sidecars_nz.copy()
            step.add(r)
            step_nz.add(_nonzero(r))
        init_peak.maximum(step)
        init_peak_nz.maximum(step_nz)
    need.add(sidecars)
    need_nz.add(sidecars_nz)
    need.maximum(init_peak)
    need_nz.maximum(init_peak_nz)
    overhead = parse_list(spec.get("overhead"), "spec.overhead", problems)
    overhead.pods = 0
    need.add(overhead)
    need_nz.add(overhead)
    need.pods = need_nz.pods = 1
    return need, need_nz
