"""The queue of pods waiting for a node, as kube-scheduler's: active, back-off, unschedulable.

- *active*: ready to be tried, highest priority first, then oldest first;
- *back-off*: tried recently; comes back to active when its back-off (1 s doubling to
  10 s per attempt) runs out, on a timer;
- *unschedulable*: fits nowhere; waits for a cluster change that may help (a node
  added or changed, a pod deleted: ``move_all``), or ``unschedulable_timeout`` at
  most, then goes through back-off again.  Nothing polls.

A pod is *in flight* between ``pop`` and ``done``/``unschedulable``/``retry``.  If
the cluster changed while it was being tried, a failure sends it to back-off
rather than to the unschedulable set, so the change is not missed.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from dataclasses import dataclass
from typing import Callable

ACTIVE, BACKOFF, UNSCHEDULABLE, IN_FLIGHT = "active", "backoff", "unschedulable", "in-flight"


@dataclass(slots=True)
class _Entry:
    key: str
    priority: int
    added: float
    state: str = ""
    attempts: int = 0
    last_attempt: float = 0.0
    #: the move cycle when it was popped (see ``move_all``)
    cycle: int = 0
    #: the pod changed while in flight
    updated: bool = False
    seq: int = 0
    timer: asyncio.TimerHandle | None = None


class SchedulingQueue:
    def __init__(self, *, initial_backoff: float = 1.0, max_backoff: float = 10.0,
                 unschedulable_timeout: float = 300.0) -> None:
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.unschedulable_timeout = unschedulable_timeout
        self._entries: dict[str, _Entry] = {}
        #: (-priority, added, seq, key); stale items are skipped when popped
        self._heap: list[tuple[int, float, int, str]] = []
        self._unschedulable: set[str] = set()
        self._seq = itertools.count()
        self._move_cycle = 0
        self._wakeup = asyncio.Event()

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    # -- producers ----------------------------------------------------------------------------
    def add(self, key: str, priority: int = 0) -> None:
        """A new pending pod, or one whose spec or labels changed: try it (again) soon."""
        e = self._entries.get(key)
        if e is None:
            e = self._entries[key] = _Entry(key, priority, self._now())
            self._activate(e)
            return
        e.priority = priority
        if e.state == IN_FLIGHT:
            e.updated = True
        elif e.state in (UNSCHEDULABLE, BACKOFF):
            self._activate_or_backoff(e)

    def delete(self, key: str) -> None:
        """The pod is gone, bound, or no longer ours."""
        e = self._entries.pop(key, None)
        if e is not None:
            self._cancel_timer(e)
            self._unschedulable.discard(key)

    def move_all(self, wanted: Callable[[str], bool] | None = None) -> None:
        """The cluster changed: unschedulable pods (those ``wanted``) get another try."""
        self._move_cycle += 1
        for key in list(self._unschedulable):
            if wanted is None or wanted(key):
                self._activate_or_backoff(self._entries[key])

    # -- the scheduling loop ------------------------------------------------------------------
    async def pop(self) -> str:
        while True:
            while self._heap:
                _, _, seq, key = heapq.heappop(self._heap)
                e = self._entries.get(key)
                if e is None or e.state != ACTIVE or e.seq != seq:
                    continue  # deleted or re-queued since
                e.state = IN_FLIGHT
                e.cycle = self._move_cycle
                e.updated = False
                e.attempts += 1
                e.last_attempt = self._now()
                return key
            self._wakeup.clear()
            await self._wakeup.wait()

    def done(self, key: str) -> None:
        """Bound: the pod leaves the queue."""
        self.delete(key)

    def unschedulable(self, key: str) -> None:
        """It fits nowhere: wait for a change (or, if one came meanwhile, just back off)."""
        e = self._entries.get(key)
        if e is None or e.state != IN_FLIGHT:
            return
        if e.updated or self._move_cycle != e.cycle:
            self._activate_or_backoff(e)
            return
        e.state = UNSCHEDULABLE
        self._unschedulable.add(key)
        e.timer = asyncio.get_running_loop().call_later(self.unschedulable_timeout,
                                                         self._flush, key)

    def wake(self, key: str) -> None:
        """What the pod waited for happened (its claims are bound): try it now, no back-off."""
        e = self._entries.get(key)
        if e is not None and e.state in (UNSCHEDULABLE, BACKOFF):
            self._activate(e)
        elif e is not None and e.state == IN_FLIGHT:
            e.updated = True

    def retry(self, key: str) -> None:
        """A transient error (a failed binding): try again after the back-off."""
        e = self._entries.get(key)
        if e is not None and e.state == IN_FLIGHT:
            self._activate_or_backoff(e)

    # -- internals ----------------------------------------------------------------------------
    def backoff_seconds(self, attempts: int) -> float:
        if attempts <= 0:
            return 0.0
        return min(self.initial_backoff * (2 ** min(attempts - 1, 30)), self.max_backoff)

    def _activate(self, e: _Entry) -> None:
        self._cancel_timer(e)
        self._unschedulable.discard(e.key)
        e.state = ACTIVE
        e.seq = next(self._seq)
        heapq.heappush(self._heap, (-e.priority, e.added, e.seq, e.key))
        self._wakeup.set()

    def _activate_or_backoff(self, e: _Entry) -> None:
        self._cancel_timer(e)
        self._unschedulable.discard(e.key)
        wait = e.last_attempt + self.backoff_seconds(e.attempts) - self._now()
        if wait <= 0:
            self._activate(e)
            return
        e.state = BACKOFF
        e.timer = asyncio.get_running_loop().call_later(wait, self._flush, e.key)

    def _flush(self, key: str) -> None:
        e = self._entries.get(key)
        if e is None:
            return
        e.timer = None
        if e.state == BACKOFF:
            self._activate(e)
        elif e.state == UNSCHEDULABLE:
            self._activate_or_backoff(e)

    @staticmethod
    def _cancel_timer(e: _Entry) -> None:
        if e.timer is not None:
            e.timer.cancel()
            e.timer = None

    def counts(self) -> dict[str, int]:
        out = {ACTIVE: 0, BACKOFF: 0, UNSCHEDULABLE: 0, IN_FLIGHT: 0}
        for e in self._entries.values():
            out[e.state] = out.get(e.state, 0) + 1
        return out

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)
