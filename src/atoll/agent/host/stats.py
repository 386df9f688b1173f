"""Resource usage of this host and its containers, for the metrics API (`kubectl top`).

What kubelet's ``/stats/summary`` gives metrics-server: CPU as a rate over a
window (from cumulative counters sampled every ``interval`` seconds) and
memory as the working set (usage minus inactive page cache), for the node
(``/proc``) and each container (its cgroup, v1 or v2).  Sampling is the one
periodic thing here: a rate needs two readings, and the first `kubectl top`
should not have to wait for them.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from atoll.api.timestamps import rfc3339

CGROUP = Path("/sys/fs/cgroup")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


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


def rate(old: Sample | None, new: Sample | None) -> int | None:
    """CPU in nanocores between two samples (None without two usable readings)."""
    if old is None or new is None or new.at <= old.at or new.cpu_ns < old.cpu_ns:
        return None
    return int((new.cpu_ns - old.cpu_ns) / (new.at - old.at))


class StatsCollector:
    """Keeps the last two samples of the node and of every running container."""

    def __init__(self, containers: Callable[[], Iterable[tuple[str, str, str, str, str]]],
                 interval: float = 10.0) -> None:
        #: (namespace, pod name, pod uid, container name, cgroup path) of running containers
        self.containers = containers
        self.interval = interval
        self.samples: dict[str, tuple[Sample | None, Sample]] = {}

    async def run(self) -> None:
        while True:
            await asyncio.to_thread(self.sample)
            await asyncio.sleep(self.interval)

    def sample(self) -> None:
        seen: dict[str, tuple[Sample | None, Sample]] = {}
        current = {"node": node_sample()}
        for ns, pod, uid, name, cgroup in self.containers():
            s = cgroup_sample(cgroup)
            if s is not None:
                current[f"{ns}/{pod}/{uid}/{name}"] = s
        for key, s in current.items():
            previous = self.samples.get(key)
            seen[key] = (previous[1] if previous else None, s)
        self.samples = seen

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
            if key == "node":
                continue
            ns, pod, uid, name = key.split("/", 3)
            u = usage(key)
            if u is not None:
                pods.setdefault((ns, pod, uid), []).append({"name": name, **u})
        return {"node": {"nodeName": node_name, **(usage("node") or {})},
                "pods": [{"podRef": {"namespace": ns, "name": pod, "uid": uid},
                          "containers": containers}
                         for (ns, pod, uid), containers in pods.items()]}
