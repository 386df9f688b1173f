"""This host's measured load, published for DRS as an annotation on its own Node.

Why the Node and not a per-host object or the metrics API: the metrics API has no watch
(its answers are scraped from the agents on each request), so a controller reading it would
poll every host; a per-host object of its own kind would need its own NodeRestriction rule
(one host must not write another's load), while an agent may already patch only its own
Node.  DRS watches Nodes anyway (schedulability, readiness, capacity), so the load arrives
with no informer of its own.  The cost is that every Node watcher sees the write, so it is
kept rare: after each sample (every ``StatsCollector.interval``, 10 s) the report is written
only when it moved (hysteresis): the CPU the host's workloads use by more than
``cpu_step`` of its CPUs, their memory by more than ``memory_step`` of its memory, pressure
by ``pressure_step`` points, or the set of VMs measured here changed (a VM arrived or left:
DRS waits for exactly that after a move), and then the next ``follow_ups`` samples too,
so DRS (which wants a report taken ``SETTLE_SECONDS`` after a move ended) sees the settled
numbers without waiting for the refresh; and otherwise once per ``refresh`` seconds, so a
report's age tells DRS the agent is still measuring.  An idle host writes once per
``refresh``; a failed write is retried at the next sample.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Any, Callable

import aiohttp

from atoll.api import errors
from atoll.api.migration.drs import LOAD_ANNOTATION
from atoll.client.rest import ApiClient

log = logging.getLogger(__name__)


def moved(old: dict[str, Any] | None, new: dict[str, Any], cpus: int, *,
          cpu_step: float = 0.05, memory_step: float = 0.05,
          pressure_step: float = 10.0) -> bool:
    """Whether ``new`` differs from the published ``old`` enough to be written (pure)."""
    if old is None:
        return True
    if set(old.get("vms") or {}) != set(new.get("vms") or {}):
        return True
    cpu_old = (old.get("cpu") or {}).get("workloads", 0)
    if abs(new["cpu"]["workloads"] - cpu_old) > cpu_step * max(cpus, 1) * 1000:
        return True
    total = max(new["memory"].get("total") or 0, 1)
    mem_old = (old.get("memory") or {}).get("workloads", 0)
    if abs(new["memory"]["workloads"] - mem_old) > memory_step * total:
        return True
    before = old.get("pressure") or {}
    return any(abs(v - float(before.get(k, 0.0))) > pressure_step
               for k, v in (new.get("pressure") or {}).items())


class LoadReport:
    """Writes ``load()``'s report to the Node ``node`` when it moved or aged."""

    def __init__(self, client: ApiClient, node: str, load: Callable[[], dict[str, Any] | None],
                 refresh: float = 120.0, follow_ups: int = 2) -> None:
        self.client, self.node, self.load, self.refresh = client, node, load, refresh
        self.follow_ups = follow_ups
        #: samples still to be written after the set of VMs here changed
        self._pending_follow_ups = 0
        self.cpus = os.cpu_count() or 1
        self.published: dict[str, Any] | None = None
        self.published_at = 0.0
        self.writes = 0
        self._task: asyncio.Task[None] | None = None

    def sampled(self) -> None:
        """After each sample: write in the background unless a write is still under way."""
        if self._task is not None and not self._task.done():
            return
        report = self.load()
        if report is None:
            return
        if self.due(report, time.monotonic()):
            self._task = asyncio.get_running_loop().create_task(self._write(report))

    def due(self, report: dict[str, Any], now: float) -> bool:
        """Whether ``report`` is to be written now (and count a follow-up it uses)."""
        if self.published is not None and \
                set(self.published.get("vms") or {}) != set(report.get("vms") or {}):
            self._pending_follow_ups = self.follow_ups
            return True
        if self._pending_follow_ups > 0:
            self._pending_follow_ups -= 1
            return True
        return moved(self.published, report, self.cpus) or \
            now - self.published_at >= self.refresh

    async def _write(self, report: dict[str, Any]) -> None:
        body = {"metadata": {"annotations": {
            LOAD_ANNOTATION: json.dumps(report, separators=(",", ":"), sort_keys=True)}}}
        try:
            await self.client.patch(f"/api/v1/nodes/{self.node}", body)
        except (errors.ApiError, OSError, asyncio.TimeoutError, aiohttp.ClientError) as e:
            log.warning("cannot publish this host's load: %s", e)
            return
        self.published, self.published_at = report, time.monotonic()
        self.writes += 1
