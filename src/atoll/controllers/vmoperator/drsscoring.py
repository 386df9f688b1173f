"""DRS's arithmetic: hosts' measured load, the cluster's imbalance, and the moves that cut it.

As the DRS of vSphere before 7.0, the imbalance is the standard deviation of the hosts'
CPU utilisation, where a host's utilisation is what its VMs and containers were measured
to use (not what they request: a 4-vCPU VM asking for nothing may keep four cores busy)
over its CPUs.  A move takes one VM's measured CPU from its host to another; its worth is
how much the imbalance falls, and its priority (vSphere's 1-5) follows from that:

====  ==================================  ===============================================
 1    a rule is broken                    two VMs of one anti-affinity group share a host
 2    the imbalance falls by >= 0.20
 3    by >= 0.10                          (the default threshold accepts priorities 1-3)
 4    by >= 0.05
 5    by >= 0.01                          "even a slight improvement"
====  ==================================  ===============================================

A migration threshold of N takes moves of priority <= N.  Stall pressure on the source
(PSI ``cpuSome`` of at least ``PRESSURE_BOOST`` percent: runnable threads waiting for a
CPU) raises a balancing move's priority by one: the load there is hurting.  A target must
keep ``MEMORY_HEADROOM`` of its memory free after taking the VM's measured memory.
Pure functions; the controller (``drs.py``) supplies who may move and where a VM fits.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable

from atoll.api import quantity
from atoll.api.migration.drs import LOAD_ANNOTATION
from atoll.api.timestamps import parse_rfc3339

#: the least fall in imbalance for each priority 2..5
STEPS = {2: 0.20, 3: 0.10, 4: 0.05, 5: 0.01}
PRESSURE_BOOST = 25.0
MEMORY_HEADROOM = 0.10

#: (VM key "namespace/name", target host) -> why it may not go there, or "" when it may
Fits = Callable[[str, str], str]


@dataclass(frozen=True)
class VMLoad:
    cpu: int         # millicores, measured
    memory: int      # bytes resident


@dataclass(frozen=True)
class HostLoad:
    name: str
    cpus: float                  # cores the host has
    memory: int                  # bytes the host has
    cpu: int                     # millicores its workloads use
    used_memory: int             # bytes its workloads hold
    vms: dict[str, VMLoad] = field(default_factory=dict)
    pressure: float = 0.0        # PSI cpu some, avg10, percent
    time: float = 0.0            # when it was measured

    @property
    def utilisation(self) -> float:
        return self.cpu / (self.cpus * 1000) if self.cpus > 0 else 0.0


@dataclass(frozen=True)
class Move:
    vm: str
    source: str
    target: str
    priority: int
    before: float      # the imbalance now
    after: float       # the imbalance once moved
    reason: str

    @property
    def improvement(self) -> str:
        return f"{self.before:.2f} -> {self.after:.2f}"


def host_load(node: dict[str, Any]) -> HostLoad | None:
    """A Node's published load (None: no report, or one that does not parse)."""
    meta = node.get("metadata") or {}
    raw = (meta.get("annotations") or {}).get(LOAD_ANNOTATION)
    if not raw:
        return None
    try:
        report = json.loads(raw)
        capacity = (node.get("status") or {}).get("capacity") or {}
        cpus = float(quantity.parse(str(capacity.get("cpu") or "0")))
        memory = int(quantity.parse(str(capacity.get("memory") or "0"))) or \
            int((report.get("memory") or {}).get("total") or 0)
        vms = {str(k): VMLoad(int(v.get("cpu") or 0), int(v.get("memory") or 0))
               for k, v in (report.get("vms") or {}).items() if isinstance(v, dict)}
        return HostLoad(meta.get("name", ""), cpus, memory,
                        int((report.get("cpu") or {}).get("workloads") or 0),
                        int((report.get("memory") or {}).get("workloads") or 0), vms,
                        float((report.get("pressure") or {}).get("cpuSome") or 0.0),
                        parse_rfc3339(report.get("time")) or 0.0)
    except (ValueError, TypeError, AttributeError):
        return None


def imbalance(hosts: Iterable[HostLoad]) -> float:
    """The population standard deviation of the hosts' CPU utilisation."""
    values = [h.utilisation for h in hosts]
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def priority(drop: float) -> int | None:
    """The priority of a balancing move that lowers the imbalance by ``drop``."""
    for level in sorted(STEPS):
        if drop >= STEPS[level]:
            return level
    return None


def moved(hosts: dict[str, HostLoad], vm: str, source: str, target: str) -> dict[str, HostLoad]:
    """The hosts as they would be once ``vm`` runs on ``target``."""
    load = hosts[source].vms[vm]
    out = dict(hosts)
    out[source] = replace(hosts[source], cpu=hosts[source].cpu - load.cpu,
                          used_memory=hosts[source].used_memory - load.memory,
                          vms={k: v for k, v in hosts[source].vms.items() if k != vm})
    out[target] = replace(hosts[target], cpu=hosts[target].cpu + load.cpu,
                          used_memory=hosts[target].used_memory + load.memory,
                          vms={**hosts[target].vms, vm: load})
    return out


def room(host: HostLoad, load: VMLoad) -> bool:
    return host.memory <= 0 or \
        host.used_memory + load.memory <= host.memory * (1 - MEMORY_HEADROOM)


def _apart(groups: dict[str, str], vm: str, host: HostLoad) -> bool:
    """Whether ``host`` holds no other VM of ``vm``'s anti-affinity group."""
    group = groups.get(vm)
    return not group or not any(groups.get(other) == group for other in host.vms if other != vm)


def balancing_move(hosts: dict[str, HostLoad], movable: set[str], fits: Fits,
                   groups: dict[str, str] | None = None) -> Move | None:
    """The one move that lowers the imbalance most (None: nothing lowers it by 0.01)."""
    groups = groups or {}
    before = imbalance(hosts.values())
    mean = sum(h.utilisation for h in hosts.values()) / max(len(hosts), 1)
    best: tuple[float, str, str, str] | None = None
    for source in sorted(hosts, key=lambda h: -hosts[h].utilisation):
        if hosts[source].utilisation <= mean:
            break
        for vm, load in sorted(hosts[source].vms.items()):
            if vm not in movable or load.cpu <= 0:
                continue
            for target in sorted(hosts, key=lambda h: hosts[h].utilisation):
                if target == source or hosts[target].utilisation >= mean:
                    continue
                if not room(hosts[target], load) or not _apart(groups, vm, hosts[target]):
                    continue
                drop = before - imbalance(moved(hosts, vm, source, target).values())
                if (best is None or drop > best[0] + 1e-9) and not fits(vm, target):
                    best = (drop, vm, source, target)
    if best is None:
        return None
    drop, vm, source, target = best
    level = priority(drop)
    if level is None:
        return None
    if hosts[source].pressure >= PRESSURE_BOOST and level > 2:
        level -= 1
    src, dst = hosts[source], hosts[target]
    return Move(vm, source, target, level, before, before - drop,
                f"{source} uses {src.utilisation:.0%} of its CPUs, {target} "
                f"{dst.utilisation:.0%}; {vm} uses {src.vms[vm].cpu}m")


def rule_moves(hosts: dict[str, HostLoad], movable: set[str], fits: Fits,
               groups: dict[str, str]) -> list[Move]:
    """Priority-1 moves: one VM of each anti-affinity group sharing a host goes elsewhere."""
    out: list[Move] = []
    current = dict(hosts)
    for source in sorted(current):
        members: dict[str, list[str]] = {}
        for vm in sorted(current[source].vms):
            if groups.get(vm):
                members.setdefault(groups[vm], []).append(vm)
        for group, vms in sorted(members.items()):
            for vm in [v for v in vms if v in movable][:len(vms) - 1]:
                load = current[source].vms[vm]
                targets = [t for t in sorted(current, key=lambda h: current[h].utilisation)
                           if t != source and _apart(groups, vm, current[t]) and
                           room(current[t], load) and not fits(vm, t)]
                if not targets:
                    continue
                before = imbalance(current.values())
                current = moved(current, vm, source, targets[0])
                out.append(Move(vm, source, targets[0], 1, before, imbalance(current.values()),
                                f"anti-affinity group {group}: {', '.join(vms)} share "
                                f"{source}"))
    return out


def recommendations(hosts: dict[str, HostLoad], movable: set[str], fits: Fits,
                    groups: dict[str, str], threshold: int, most: int = 5) -> list[Move]:
    """The moves a pass proposes, in order, each judged on the hosts after the ones before
    (as vSphere simulates its list), each VM at most once, none below ``threshold``."""
    out = rule_moves(hosts, movable, fits, groups)
    current = dict(hosts)
    for move in out:
        current = moved(current, move.vm, move.source, move.target)
    left = set(movable) - {m.vm for m in out}
    while len(out) < most and threshold >= 2:
        move = balancing_move(current, left, fits, groups)
        if move is None or move.priority > threshold:
            break
        out.append(move)
        left.discard(move.vm)
        current = moved(current, move.vm, move.source, move.target)
    return out
