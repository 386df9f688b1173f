"""Resource usage of this host and its containers, for the metrics API (`kubectl top`).

What kubelet's ``/stats/summary`` gives metrics-server: CPU as a rate over a
window (from cumulative counters sampled every ``interval`` seconds) and
memory as the working set (usage minus inactive page cache), for the node
(``/proc``) and each container (its cgroup, v1 or v2).  Sampling is the one
periodic thing here: a rate needs two readings, and the first `kubectl top`
should not have to wait for them.

The same samples feed DRS (``load``): each VM's QEMU process (every thread, vCPUs included:
``/proc/<pid>/stat`` counts them all), the host's memory in use and, where the kernel has
them, pressure stall figures (``/proc/pressure``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from atoll.api.timestamps import rfc3339

log = logging.getLogger(__name__)
CGROUP = Path("/sys/fs/cgroup")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Sample:
    at: float
    cpu_ns: int        # cumulative CPU time
    working_set: int   # bytes


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _stat_value(text: str | None, key: str) -> int:
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def cgroup_sample(cgroup: str) -> Sample | None:
    """A container's cgroup (``/atoll/<node>/<pod uid>-<name>``) on cgroup v2 or v1."""
    rel = cgroup.lstrip("/")
    v2 = CGROUP / rel
    if (v2 / "cpu.stat").exists():
        cpu = _stat_value(_read(v2 / "cpu.stat"), "usage_usec") * 1000
        usage = int((_read(v2 / "memory.current") or "0").strip() or 0)
        inactive = _stat_value(_read(v2 / "memory.stat"), "inactive_file")
        return Sample(time.time(), cpu, max(0, usage - inactive))
    cpu_text = _read(CGROUP / "cpuacct" / rel / "cpuacct.usage")
    if cpu_text is None:
        return None
    usage = int((_read(CGROUP / "memory" / rel / "memory.usage_in_bytes") or "0").strip() or 0)
    inactive = _stat_value(_read(CGROUP / "memory" / rel / "memory.stat"), "total_inactive_file")
    return Sample(time.time(), int(cpu_text.strip() or 0), max(0, usage - inactive))


def node_sample() -> Sample:
    fields = (_read(Path("/proc/stat")) or "cpu 0").splitlines()[0].split()[1:]
    ticks = [int(f) for f in fields]
    busy = sum(ticks) - (ticks[3] if len(ticks) > 3 else 0) - (ticks[4] if len(ticks) > 4 else 0)
    mem: dict[str, int] = {}
    for line in (_read(Path("/proc/meminfo")) or "").splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            mem[name] = int(parts[0]) * 1024
    working = mem.get("MemTotal", 0) - mem.get("MemAvailable", 0)
    return Sample(time.time(), busy * 1_000_000_000 // CLOCK_TICKS, max(0, working))


def process_sample(pid: int) -> Sample | None:
    """A process's CPU (all its threads: utime + stime) and resident memory; None if gone."""
    text = _read(Path(f"/proc/{pid}/stat"))
    statm = _read(Path(f"/proc/{pid}/statm"))
    if not text or not statm:
        return None
    fields = text.rpartition(")")[2].split()  # the name may hold spaces and parentheses
    try:
        ticks = int(fields[11]) + int(fields[12])
        rss = int(statm.split()[1]) * PAGE_SIZE
    except (IndexError, ValueError):
        return None
    return Sample(time.time(), ticks * 1_000_000_000 // CLOCK_TICKS, rss)


def pressure() -> dict[str, float]:
    """PSI's 10-second averages (percent of time stalled), e.g. ``cpuSome``; {} without PSI."""
    out: dict[str, float] = {}
    for resource in ("cpu", "memory"):
        for line in (_read(Path(f"/proc/pressure/{resource}")) or "").splitlines():
            kind, _, rest = line.partition(" ")
            avg = dict(p.split("=", 1) for p in rest.split() if "=" in p).get("avg10")
            try:
                out[f"{resource}{kind.capitalize()}"] = float(avg or "")
            except ValueError:
                continue
    return out


def memory_total() -> int:
    for line in (_read(Path("/proc/meminfo")) or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def rate(old: Sample | None, new: Sample | None) -> int | None:
    """CPU in nanocores between two samples (None without two usable readings)."""
    if old is None or new is None or new.at <= old.at or new.cpu_ns < old.cpu_ns:
        return None
    return int((new.cpu_ns - old.cpu_ns) / (new.at - old.at))


class StatsCollector:
    """Keeps the last two samples of the node, every running container and every VM."""

    def __init__(self, containers: Callable[[], Iterable[tuple[str, str, str, str, str]]],
                 interval: float = 10.0,
                 vms: Callable[[], Iterable[tuple[str, int]]] = lambda: ()) -> None:
        #: (namespace, pod name, pod uid, container name, cgroup path) of running containers
        self.containers = containers
        #: ("namespace/name", QEMU pid) of the VMs running here
        self.vms = vms
        self.interval = interval
        self.samples: dict[str, tuple[Sample | None, Sample]] = {}
        self.psi: dict[str, float] = {}
        #: called after every sample (in the event loop): the load report's publisher
        self.on_sample: list[Callable[[], None]] = []

    async def run(self) -> None:
        while True:
            await asyncio.to_thread(self.sample)
            for callback in self.on_sample:
                try:
                    callback()
                except Exception:  # a report that cannot be made never stops the sampling
                    log.exception("after a stats sample")
            await asyncio.sleep(self.interval)

    def sample(self) -> None:
        seen: dict[str, tuple[Sample | None, Sample]] = {}
        current = {"node": node_sample()}
        for ns, pod, uid, name, cgroup in self.containers():
            s = cgroup_sample(cgroup)
            if s is not None:
                current[f"{ns}/{pod}/{uid}/{name}"] = s
        for vm, pid in self.vms():
            s = process_sample(pid)
            if s is not None:
                current[f"vm:{vm}:{pid}"] = s  # a new QEMU (new pid) starts a new rate
        for key, s in current.items():
            previous = self.samples.get(key)
            seen[key] = (previous[1] if previous else None, s)
        self.samples = seen
        self.psi = pressure()

    def load(self) -> dict[str, Any] | None:
        """What DRS scores this host on (None until two samples give rates).

        ``cpu.workloads`` (millicores) is what this host's VMs and containers use, the sum
        vSphere's DRS balances (a VM's demand, not its size); ``cpu.host`` is the whole
        kernel's busy time, which on hosts sharing one kernel (``atoll dev cluster``) is
        the same for every host and so not what DRS compares.
        """
        old, new = self.samples.get("node", (None, None))
        host = rate(old, new)
        if host is None or new is None or old is None:
            return None
        vms: dict[str, dict[str, int]] = {}
        pods_cpu = pods_memory = 0
        for key, (before, after) in self.samples.items():
            cores = rate(before, after)
            if key == "node" or cores is None:
                continue
            if key.startswith("vm:"):
                vms[key[3:].rpartition(":")[0]] = {"cpu": cores // 1_000_000,
                                                   "memory": after.working_set}
            else:
                pods_cpu += cores // 1_000_000
                pods_memory += after.working_set
        return {"time": rfc3339(new.at), "window": round(new.at - old.at, 1),
                "cpu": {"host": host // 1_000_000,
                        "workloads": pods_cpu + sum(v["cpu"] for v in vms.values())},
                "memory": {"used": new.working_set, "total": memory_total(),
                           "workloads": pods_memory + sum(v["memory"] for v in vms.values())},
                "pressure": dict(self.psi), "vms": vms}

    def summary(self, node_name: str) -> dict[str, Any]:
        """Kubelet's ``/stats/summary`` shape, reduced to what metrics-server reads."""
        def usage(key: str) -> dict[str, Any] | None:
            old, new = self.samples.get(key, (None, None))
            cores = rate(old, new)
            if new is None or cores is None or old is None:
                return None
            return {"time": rfc3339(new.at), "window": new.at - old.at,
                    "cpu": {"usageNanoCores": cores, "usageCoreNanoSeconds": new.cpu_ns},
                    "memory": {"workingSetBytes": new.working_set}}
        pods: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        for key in self.samples:
            if key == "node" or key.startswith("vm:"):  # VMs are not pods
                continue
            ns, pod, uid, name = key.split("/", 3)
            u = usage(key)
            if u is not None:
                pods.setdefault((ns, pod, uid), []).append({"name": name, **u})
        return {"node": {"nodeName": node_name, **(usage("node") or {})},
                "pods": [{"podRef": {"namespace": ns, "name": pod, "uid": uid},
                          "containers": containers}
                         for (ns, pod, uid), containers in pods.items()]}
