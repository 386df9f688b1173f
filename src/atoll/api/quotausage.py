"""What an object counts against a ResourceQuota, as upstream's quota evaluators define it.

One place for both users of it: quota admission, which charges a new object,
and the quota controller, which recounts a namespace.  They must agree to the
unit, or quotas drift.

Resource names follow upstream: ``pods``, ``services``, ``configmaps`` ...;
``requests.cpu`` (also plain ``cpu``), ``limits.memory``, ``requests.storage``;
``<class>.storageclass.storage.k8s.io/requests.storage``; ``count/<resource>[.<group>]``.
VirtualMachines count as compute too: their class's size as limits and its
reservation as requests, plus ``<class>.virtualmachineclass.vmoperator.vmware.com/virtualmachines``.
VirtualMachineSnapshots count the storage they may take (``status.storage.requested``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Callable, Iterable

from atoll.api import quantity

VM_GROUP = "vmoperator.vmware.com"
VM_CLASS_SUFFIX = ".virtualmachineclass.vmoperator.vmware.com/virtualmachines"
STORAGE_CLASS_INFIX = ".storageclass.storage.k8s.io/"
COMPUTE = ("cpu", "memory", "ephemeral-storage")
#: plain core names counted one per object, as upstream's object-count evaluators
CORE_COUNTS = {"configmaps", "secrets", "resourcequotas", "replicationcontrollers", "services",
               "persistentvolumeclaims", "pods"}
SCOPES = {"BestEffort", "NotBestEffort", "Terminating", "NotTerminating"}

Usage = dict[str, Decimal]
ClassLookup = Callable[[str, str], "dict[str, Any] | None"]


def usage(group: str, plural: str, obj: dict[str, Any],
          vm_class: ClassLookup | None = None) -> Usage:
    """Everything ``obj`` counts; objects that no longer count (finished pods) give {}."""
    out: Usage = {f"count/{plural}" + (f".{group}" if group else ""): Decimal(1)}
    if group == "" and plural in CORE_COUNTS:
        out[plural] = Decimal(1)
    if group == "" and plural == "pods":
        if not pod_counts(obj):
            return {}
        out.update(pod_compute(obj.get("spec") or {}))
    elif group == "" and plural == "services":
        spec = obj.get("spec") or {}
        kind = spec.get("type") or "ClusterIP"
        if kind in ("NodePort", "LoadBalancer"):
            out["services.nodeports"] = Decimal(len(spec.get("ports") or []))
        if kind == "LoadBalancer":
            out["services.loadbalancers"] = Decimal(1)
    elif group == "" and plural == "persistentvolumeclaims":
        spec = obj.get("spec") or {}
        storage = _q(((spec.get("resources") or {}).get("requests") or {}).get("storage"))
        out["requests.storage"] = storage
        klass = spec.get("storageClassName")
        if klass:
            out[f"{klass}{STORAGE_CLASS_INFIX}requests.storage"] = storage
            out[f"{klass}{STORAGE_CLASS_INFIX}persistentvolumeclaims"] = Decimal(1)
    elif group == VM_GROUP and plural == "virtualmachines":
        out.update(vm_compute(obj, vm_class))
    elif group == VM_GROUP and plural == "virtualmachinesnapshots":
        out.update(snapshot_storage(obj))
    return out


def snapshot_storage(snap: dict[str, Any]) -> Usage:
    """A VM snapshot's ``status.storage.requested`` (the server sets it on create)."""
    out: Usage = {}
    requested = ((snap.get("status") or {}).get("storage") or {}).get("requested")
    for entry in requested if isinstance(requested, list) else []:
        if not isinstance(entry, dict):
            continue
        total = _q(entry.get("total"))
        out["requests.storage"] = out.get("requests.storage", Decimal(0)) + total
        klass = entry.get("storageClass")
        if klass:
            key = f"{klass}{STORAGE_CLASS_INFIX}requests.storage"
            out[key] = out.get(key, Decimal(0)) + total
    return out


def pod_counts(pod: dict[str, Any]) -> bool:
    """Finished pods stop counting, as upstream (and deleted ones past their grace)."""
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def pod_compute(spec: dict[str, Any], overhead: bool = True) -> Usage:
    """requests.*/limits.* of a pod: containers summed, init containers at their peak, and
    ``spec.overhead`` (its RuntimeClass's) on top, as upstream's PodRequests/PodLimits: added
    to every request, but only to limits the containers set (an unlimited pod stays so)."""
    out: Usage = {}
    extra = spec.get("overhead") if overhead else None
    for kind in ("requests", "limits"):
        total = _sum_containers(spec.get("containers"), kind)
        for c in spec.get("initContainers") or []:
            for name, value in _container(c, kind).items():
                total[name] = max(total.get(name, Decimal(0)), value)
        for name, value in (extra.items() if isinstance(extra, dict) else ()):
            if kind == "requests" or total.get(str(name)):
                total[str(name)] = total.get(str(name), Decimal(0)) + _q(value)
        for name, value in total.items():
            out[f"{kind}.{name}"] = value
            if kind == "requests" and name in COMPUTE:
                out[name] = value
    return out


def _sum_containers(containers: Any, kind: str) -> Usage:
    total: Usage = {}
    for c in containers if isinstance(containers, list) else []:
        for name, value in _container(c, kind).items():
            total[name] = total.get(name, Decimal(0)) + value
    return total


def _container(c: Any, kind: str) -> Usage:
    res = (c.get("resources") if isinstance(c, dict) else None) or {}
    values = dict(res.get("limits") or {}) if kind == "requests" else {}
    values.update(res.get(kind) or {})  # a request defaults to its limit
    return {str(k): _q(v) for k, v in values.items()}


def missing_compute(spec: dict[str, Any], wanted: Iterable[str]) -> dict[str, list[str]]:
    """For quota keys like ``limits.cpu``: the containers that do not say it (upstream refuses)."""
    missing: dict[str, list[str]] = {}
    for key in wanted:
        kind, _, name = key.partition(".")
        if key in COMPUTE:
            kind, name = "requests", key
        if kind not in ("requests", "limits") or name not in COMPUTE:
            continue
        for c in list(spec.get("initContainers") or []) + list(spec.get("containers") or []):
            if isinstance(c, dict) and name not in _container(c, kind):
                missing.setdefault(key, []).append(str(c.get("name") or ""))
    return missing


def vm_compute(vm: dict[str, Any], vm_class: ClassLookup | None) -> Usage:
    spec = vm.get("spec") or {}
    name = spec.get("className") or ""
    klass = vm_class(vm["metadata"].get("namespace", ""), name) if vm_class and name else None
    if not klass:
        return {}
    cspec = klass.get("spec") or {}
    hw = cspec.get("hardware") or {}
    cpus, memory = Decimal(int(hw.get("cpus") or 1)), _q(hw.get("memory") or 0)
    requests = ((cspec.get("policies") or {}).get("resources") or {}).get("requests") or {}
    out: Usage = {"limits.cpu": cpus, "limits.memory": memory,
                  f"{name}{VM_CLASS_SUFFIX}": Decimal(1)}
    for res in ("cpu", "memory"):
        if res in requests:
            out[f"requests.{res}"] = out[res] = _q(requests[res])
    return out


def pod_matches_scopes(pod: dict[str, Any], scopes: Iterable[str]) -> bool:
    spec = pod.get("spec") or {}
    best_effort = not pod_compute(spec, overhead=False)  # QoS ignores the overhead
    terminating = spec.get("activeDeadlineSeconds") is not None
    for scope in scopes:
        if scope == "BestEffort" and not best_effort:
            return False
        if scope == "NotBestEffort" and best_effort:
            return False
        if scope == "Terminating" and not terminating:
            return False
        if scope == "NotTerminating" and terminating:
            return False
    return True


def quota_applies(quota: dict[str, Any], group: str, plural: str, obj: dict[str, Any]) -> bool:
    scopes = (quota.get("spec") or {}).get("scopes") or []
    if not scopes:
        return True
    return group == "" and plural == "pods" and pod_matches_scopes(obj, scopes)


def kinds_for(key: str) -> list[tuple[str, str]]:
    """(group, plural) of the objects a quota key counts."""
    if key.startswith("count/"):
        resource, _, group = key[len("count/"):].partition(".")
        return [(group, resource)]
    if key in CORE_COUNTS:
        return [("", key)]
    if key.startswith("services."):
        return [("", "services")]
    if key == "requests.storage" or STORAGE_CLASS_INFIX in key:
        return [("", "persistentvolumeclaims"), (VM_GROUP, "virtualmachinesnapshots")]
    if key.endswith(VM_CLASS_SUFFIX):
        return [(VM_GROUP, "virtualmachines")]
    return [("", "pods"), (VM_GROUP, "virtualmachines")]


def format_amounts(amounts: dict[str, Decimal]) -> str:
    return ",".join(f"{k}={format_quantity(v, k)}" for k, v in sorted(amounts.items()))


BINARY = (("Ei", 1 << 60), ("Pi", 1 << 50), ("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20),
          ("Ki", 1 << 10))


def format_quantity(value: Decimal, key: str = "") -> str:
    """The canonical form quota status uses: bytes in the largest exact binary unit, other
    whole numbers plain, fractions in milli."""
    if value == value.to_integral_value():
        if value and ("memory" in key or "storage" in key):
            for suffix, unit in BINARY:
                if int(value) % unit == 0:
                    return f"{int(value) // unit}{suffix}"
        return str(int(value))
    milli = (value * 1000).to_integral_value(rounding="ROUND_CEILING")
    return f"{int(milli)}m"


def _q(value: Any) -> Decimal:
    try:
        return quantity.parse(value)
    except (ValueError, TypeError, ArithmeticError):
        return Decimal(0)
