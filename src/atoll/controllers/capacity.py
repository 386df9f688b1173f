"""One capacity model, shared by the pod scheduler and VM placement.

What a node offers (``node_allocatable``), what a pod asks of it (``pod_requests``: containers
summed, init containers at their peak, sidecars and ``overhead`` on top, as upstream's
computePodResourceRequest), which pods count against a node (``occupies``), what a guaranteed
VM class reserves on its host (``class_reservation``), and whether a request fits what is left
(``shortfalls``).  The scheduler keeps these sums per node incrementally; VM placement adds them
up from the pods on a host (an index) and the VMs placed there, so both decide by the same
numbers.

Quantities (``500m``, ``1.5Gi``) are parsed when a pod or node is seen, never while filtering:
the hot path compares ints.  CPU is kept in millicores, everything else in units rounded up,
as kube-scheduler's ``framework.Resource`` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from atoll.api import quantity
from atoll.api.vmoperator import names as vm_names

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


# -- nodes ------------------------------------------------------------------------------------
def _status(obj: dict[str, Any]) -> dict[str, Any]:
    status = obj.get("status")
    return status if isinstance(status, dict) else {}


def node_allocatable(node: dict[str, Any], problems: list[str] | None = None) -> Resources:
    """What pods (and VM reservations) may take on ``node``: ``status.allocatable``, or its
    capacity when a node reports none (the API defaults allocatable to capacity)."""
    status = _status(node)
    value = status.get("allocatable")
    if value is None:
        value = status.get("capacity")
    return parse_list(value, "status.allocatable", problems if problems is not None else [])


def node_capacity(node: dict[str, Any]) -> Resources:
    """The node's hardware (``status.capacity``, else its allocatable)."""
    status = _status(node)
    value = status.get("capacity")
    if value is None:
        value = status.get("allocatable")
    return parse_list(value, "status.capacity", [])


# -- what pods use on a node ------------------------------------------------------------------
def occupies(pod: dict[str, Any]) -> str:
    """The node a pod takes resources on: bound and not finished (terminating pods still
    count, their containers run until they stop); "" for none."""
    spec = pod.get("spec")
    node = spec.get("nodeName") if isinstance(spec, dict) else None
    if not isinstance(node, str) or not node:
        return ""
    if _status(pod).get("phase") in ("Succeeded", "Failed"):
        return ""
    return node


def pod_usage(pod: dict[str, Any]) -> Resources:
    """What ``pod`` requests on its node (``pod_requests``; bad quantities count as zero)."""
    spec = pod.get("spec")
    need, _ = pod_requests(spec if isinstance(spec, dict) else {}, [])
    return need


def requested_by(pods: Iterable[dict[str, Any]], node_name: str) -> Resources:
    """The sum of what ``pods`` that occupy ``node_name`` request (pass the node's pods, from
    an index by ``spec.nodeName``, not the whole cluster)."""
    used = Resources()
    for pod in pods:
        if occupies(pod) == node_name:
            used.add(pod_usage(pod))
    return used


# -- what VMs reserve -------------------------------------------------------------------------
#: VMs by the host they are placed on ("" for unplaced)
VM_HOST = "vm-host"
#: VMs by "namespace/className"
VM_CLASS = "vm-class"


def vm_host(vm: dict[str, Any]) -> str:
    labels = (vm.get("metadata") or {}).get("labels") or {}
    host = labels.get(vm_names.HOST_LABEL) if isinstance(labels, dict) else None
    return host if isinstance(host, str) else ""


def by_vm_host(vm: dict[str, Any]) -> Iterable[str]:
    return [vm_host(vm)]


def vm_class_key(vm: dict[str, Any]) -> str:
    spec = vm.get("spec") if isinstance(vm.get("spec"), dict) else {}
    return f"{(vm.get('metadata') or {}).get('namespace') or ''}/{spec.get('className') or ''}"


def by_vm_class(vm: dict[str, Any]) -> Iterable[str]:
    return [vm_class_key(vm)]


def class_reservation(klass: dict[str, Any] | None) -> Resources | None:
    """What a VM of this class takes from its host like a pod's requests: the class's
    ``policies.resources.requests`` (``guaranteed-*``), None when it reserves nothing."""
    spec = (klass or {}).get("spec")
    policies = spec.get("policies") if isinstance(spec, dict) else None
    resources = policies.get("resources") if isinstance(policies, dict) else None
    requests = resources.get("requests") if isinstance(resources, dict) else None
    if not requests:
        return None
    return parse_list(requests, "spec.policies.resources.requests", [])


# -- fitting ----------------------------------------------------------------------------------
def free(allocatable: Resources, requested: Resources) -> Resources:
    """What is left (may be negative when a node is overcommitted)."""
    left = allocatable.copy()
    left.subtract(requested)
    return left


def shortfalls(need: Resources, allocatable: Resources, requested: Resources, *,
               new_pod: bool = True) -> list[str]:
    """The resources ``need`` does not fit into (``allocatable`` minus ``requested``), in
    upstream's order: "pods" (when ``new_pod``: one more pod must fit the node's pod count),
    cpu, memory, ephemeral-storage, then extended resources.  An amount not asked for always
    fits, as upstream's NodeResourcesFit."""
    out: list[str] = []
    if new_pod and requested.pods + 1 > allocatable.pods:
        out.append(PODS)
    if need.milli_cpu and need.milli_cpu > allocatable.milli_cpu - requested.milli_cpu:
        out.append(CPU)
    if need.memory and need.memory > allocatable.memory - requested.memory:
        out.append(MEMORY)
    if need.ephemeral_storage and \
            need.ephemeral_storage > allocatable.ephemeral_storage - requested.ephemeral_storage:
        out.append(EPHEMERAL_STORAGE)
    for name, amount in need.scalar.items():
        if amount and amount > allocatable.scalar.get(name, 0) - requested.scalar.get(name, 0):
            out.append(name)
    return out
