"""Choosing a host for a VirtualMachine (vSphere's initial placement, DRS's first half).

A host qualifies when it is Ready and schedulable, its memory can hold the
class's memory at all (a VM never spans hosts; vCPUs may outnumber the host's
CPUs, as KubeVirt allows: they are threads), and, for a class with reservations
(``guaranteed-*``), what is left of its allocatable after what pods request and other
VMs reserve still covers the reservation.  "Allocatable", "requested" and "fits" are
``controllers.capacity``'s, the pod scheduler's own numbers, so a VM is never placed
where the scheduler would see no room.  Among the hosts that qualify, the one with the
most unreserved memory wins, then CPU, as vSphere HA and DRS prefer.  A VM whose claim is
bound to a volume pinned to a host (a local volume's ``nodeAffinity``) may only go where the
volume is, or nowhere: ``VolumeNodeAffinityConflict`` then names the claims and their hosts,
as the scheduler's VolumeBinding filter does for pods.  Pure functions over the informers'
objects, so the rules are tested without a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from atoll.api import quantity
from atoll.client import indexers as ix
from atoll.controllers import capacity
from atoll.controllers.capacity import Resources
from atoll.controllers.volume import binder

NO_HOSTS, INSUFFICIENT, SATISFIED = "NoAvailableHosts", "InsufficientResources", \
    "PlacementSatisfied"
VOLUME_CONFLICT = "VolumeNodeAffinityConflict"
#: the VM's affinity or anti-affinity rules leave no host
AFFINITY = "AffinityRulesNotMet"

#: (claim name, the PersistentVolume it is bound to) for each of a VM's bound claims
BoundVolumes = Iterable[tuple[str, dict[str, Any]]]

#: what is requested on a host by name: pods' requests plus other VMs' reservations
Requested = Callable[[str], Resources]


@dataclass(frozen=True)
class Demand:
    """A class's size (hardware) and what it reserves (policies.resources.requests)."""

    cpus: int
    memory: int
    reserved: Resources = field(default_factory=Resources)


def demand(klass: dict[str, Any]) -> Demand:
    hw = (klass.get("spec") or {}).get("hardware") or {}
    return Demand(cpus=int(hw.get("cpus") or 1),
                  memory=int(quantity.parse(hw.get("memory") or "0")),
                  reserved=capacity.class_reservation(klass) or Resources())


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


def requested_on(node_name: str, pods: Iterable[dict[str, Any]],
                 vm_reservations: Iterable[Resources]) -> Resources:
    """What the node's ``pods`` request plus what the VMs placed there reserve."""
    used = capacity.requested_by(pods, node_name)
    for reserved in vm_reservations:
        used.add(reserved)
    return used


def requested_here(host: str, vms: Any, classes: Any, pods: Any) -> Resources:
    """``requested_on`` from the controllers' informers: the pods on ``host`` (indexed by
    node name) and the reservations of the VMs placed there (indexed by host) by their class."""
    reservations = []
    for vm in vms.by_index(capacity.VM_HOST, host):
        reserved = capacity.class_reservation(classes.get(capacity.vm_class_key(vm)))
        if reserved is not None:
            reservations.append(reserved)
    return requested_on(host, pods.by_index(ix.NODE_NAME, host), reservations)


def volume_conflicts(node: dict[str, Any], volumes: BoundVolumes) -> list[str]:
    """The claims whose volume cannot be used on ``node`` (its node affinity excludes it)."""
    name = node["metadata"]["name"]
    labels = dict((node.get("metadata") or {}).get("labels") or {})
    out = []
    for claim, pv in volumes:
        if not binder.node_admits(pv, name, labels):
            where = binder.affinity_node(pv)
            out.append(f"claim {claim}'s volume {pv['metadata']['name']} is on "
                       f"{where or 'other hosts'}")
    return out


def place(want: Demand, nodes: list[dict[str, Any]], requested: Requested,
          volumes: BoundVolumes = (),
          rule: Callable[[dict[str, Any]], str] | None = None) -> Decision:
    """The host for a VM of ``want``'s size: ``rule`` (its affinity terms, ``vmaffinity``)
    says why a host may not take it, "" when it may."""
    volumes = list(volumes)
    candidates: list[tuple[int, int, str]] = []
    why: list[str] = []
    pinned_out = ruled_out = 0
    for node in nodes:
        name = node["metadata"]["name"]
        if conflicts := volume_conflicts(node, volumes):
            why.append(f"{name}: {'; '.join(conflicts)}")
            pinned_out += 1
            continue
        if reason := usable(node):
            why.append(f"{name}: {reason}")
            continue
        if rule is not None and (reason := rule(node)):
            why.append(f"{name}: {reason}")
            ruled_out += 1
            continue
        hardware = capacity.node_capacity(node)
        if want.memory > hardware.memory:
            why.append(f"{name}: has {hardware.memory >> 20} MiB of memory, the class needs "
                       f"{want.memory >> 20} MiB")
            continue
        allocatable = capacity.node_allocatable(node)
        used = requested(name)
        left = capacity.free(allocatable, used)
        if capacity.shortfalls(want.reserved, allocatable, used, new_pod=False):
            why.append(f"{name}: {max(left.milli_cpu, 0)}m CPU and "
                       f"{max(left.memory, 0) >> 20} MiB unreserved, the class reserves "
                       f"{want.reserved.milli_cpu}m and {want.reserved.memory >> 20} MiB")
            continue
        candidates.append((left.memory - want.reserved.memory,
                           left.milli_cpu - want.reserved.milli_cpu, name))
    if candidates:
        _, _, host = max(candidates, key=lambda c: (c[0], c[1], _reverse(c[2])))
        return Decision(host, SATISFIED, f"placed on {host}")
    if not nodes:
        return Decision(None, NO_HOSTS, "no hosts")
    if volumes and pinned_out == len(nodes):
        return Decision(None, VOLUME_CONFLICT, "no host has the VM's volumes: " +
                        "; ".join(why))
    if volumes and pinned_out:
        # the hosts the volumes allow cannot take the VM: say so, not that others lack room
        allowed = [w for w in why if "'s volume " not in w]
        return Decision(None, VOLUME_CONFLICT if not allowed else INSUFFICIENT,
                        "the VM's volumes allow only hosts that cannot take it: " +
                        "; ".join(allowed or why))
    if ruled_out and all(": not Ready" in w or ": unschedulable" in w or ": taint" in w or
                         "affinity" in w for w in why):
        return Decision(None, AFFINITY, "no host meets the VM's affinity rules: " +
                        "; ".join(why))
    if all(": not Ready" in w or ": unschedulable" in w or ": taint" in w for w in why):
        return Decision(None, NO_HOSTS, "no host can take VMs: " + "; ".join(why))
    return Decision(None, INSUFFICIENT, "no host has room: " + "; ".join(why))


def _reverse(name: str) -> tuple[int, ...]:
    """Ties go to the alphabetically first host (max() picks the largest key)."""
    return tuple(-ord(ch) for ch in name)
