"""Choosing a host for a VirtualMachine (vSphere's initial placement, DRS's first half).

A host qualifies when it is Ready and schedulable, its memory can hold the
class's memory at all (a VM never spans hosts; vCPUs may outnumber the host's
CPUs, as KubeVirt allows: they are threads), and, for a class with reservations (``guaranteed-*``), its
allocatable amounts minus what pods request and other VMs reserve still cover
the reservation.  Among those, the host with the most unreserved memory wins,
then CPU, as vSphere HA and DRS prefer.  Pure functions over the informers'
objects, so the rules are tested without a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from atoll.api import quantity
from atoll.controllers.scheduler.resources import Resources, parse_list, pod_requests

NO_HOSTS, INSUFFICIENT, SATISFIED = "NoAvailableHosts", "InsufficientResources", \
    "PlacementSatisfied"


@dataclass(frozen=True)
class Demand:
    """A class's size (hardware) and what it reserves (policies.resources.requests)."""

    cpus: int
    memory: int
    reserved: Resources


def demand(klass: dict[str, Any]) -> Demand:
    spec = klass.get("spec") or {}
    hw = spec.get("hardware") or {}
    requests = ((spec.get("policies") or {}).get("resources") or {}).get("requests") or {}
    problems: list[str] = []
    reserved = parse_list(requests, "spec.policies.resources.requests", problems)
    return Demand(cpus=int(hw.get("cpus") or 1),
                  memory=int(quantity.parse(hw.get("memory") or "0")), reserved=reserved)


@dataclass(frozen=True)
class Decision:
    host: str | None
    reason: str
    message: str


def usable(node: dict[str, Any]) -> str:
    """Why ``node`` cannot take VMs at all, or "" when it can."""
    if (node.get("spec") or {}).get("unschedulable"):
        return "unschedulable"
    for t in (node.get("spec") or {}).get("taints") or []:
        if t.get("effect") in ("NoSchedule", "NoExecute"):
            return f"taint {t.get('key')}"
    ready = next((c for c in (node.get("status") or {}).get("conditions") or []
                  if c.get("type") == "Ready"), None)
    if ready is None or ready.get("status") != "True":
        return "not Ready"
    return ""


def used_on(node_name: str, pods: Iterable[dict[str, Any]],
            vm_reservations: Iterable[tuple[str, Resources]]) -> Resources:
    """What pods request and VMs reserve on ``node_name``."""
    used = Resources()
    for pod in pods:
        spec = pod.get("spec") or {}
        phase = (pod.get("status") or {}).get("phase")
        if spec.get("nodeName") == node_name and phase not in ("Succeeded", "Failed"):
            need, _ = pod_requests(spec, [])
            used.add(need)
    for host, reserved in vm_reservations:
        if host == node_name:
            used.add(reserved)
    return used


def place(want: Demand, nodes: list[dict[str, Any]], pods: list[dict[str, Any]],
          vm_reservations: list[tuple[str, Resources]]) -> Decision:
    candidates: list[tuple[int, int, str]] = []
    why: list[str] = []
    for node in nodes:
        name = node["metadata"]["name"]
        if reason := usable(node):
            why.append(f"{name}: {reason}")
            continue
        status = node.get("status") or {}
        capacity = parse_list(status.get("capacity"), "capacity", [])
        allocatable = parse_list(status.get("allocatable") or status.get("capacity"),
                                 "allocatable", [])
        if want.memory > capacity.memory:
            why.append(f"{name}: has {capacity.memory >> 20} MiB of memory, the class needs "
                       f"{want.memory >> 20} MiB")
            continue
        used = used_on(name, pods, vm_reservations)
        free_cpu = allocatable.milli_cpu - used.milli_cpu
        free_mem = allocatable.memory - used.memory
        if want.reserved.milli_cpu > free_cpu or want.reserved.memory > free_mem:
            why.append(f"{name}: {max(free_cpu, 0)}m CPU and {max(free_mem, 0) >> 20} MiB "
                       f"unreserved, the class reserves {want.reserved.milli_cpu}m and "
                       f"{want.reserved.memory >> 20} MiB")
            continue
        candidates.append((free_mem - want.reserved.memory, free_cpu - want.reserved.milli_cpu,
                           name))
    if candidates:
        _, _, host = max(candidates, key=lambda c: (c[0], c[1], _reverse(c[2])))
        return Decision(host, SATISFIED, f"placed on {host}")
    if not nodes:
        return Decision(None, NO_HOSTS, "no hosts")
    if all(": not Ready" in w or ": unschedulable" in w or ": taint" in w for w in why):
        return Decision(None, NO_HOSTS, "no host can take VMs: " + "; ".join(why))
    return Decision(None, INSUFFICIENT, "no host has room: " + "; ".join(why))


def _reverse(name: str) -> tuple[int, ...]:
    """Ties go to the alphabetically first host (max() picks the largest key)."""
    return tuple(-ord(ch) for ch in name)
