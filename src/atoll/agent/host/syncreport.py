"""How a dataplane (the Service proxy, NetworkPolicy) tells the cluster its table is not what
the objects ask for: a Warning Event on this host's Node (kube-proxy's
``SyncProxyRulesFailed`` shape) with nft's message, shortened, and a Node condition that is
False while syncs fail and True again after one succeeds.

An Event is sent when its message is new, and again only after ``REPEAT`` seconds; the
event recorder de-duplicates and spam-filters on top.  Objects a sync had to leave out (an
unexpressible Service or policy rule) are each named in an Event of their own, once per
``REPEAT`` while they stay out; the condition stays True (the rest is programmed) and its
message counts them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from atoll.client.events import WARNING, EventRecorder

log = logging.getLogger(__name__)
REPEAT = 300.0
MAX_MESSAGE = 400


class ConditionSink(Protocol):
    """The Node status path (``NodeAgent.set_condition``)."""

    def set_condition(self, type_: str, status: str, reason: str, message: str) -> None: ...


def shorten(text: str, limit: int = MAX_MESSAGE) -> str:
    """nft's message on one line, cut to ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


class SyncReport:
    def __init__(self, node_name: str, condition: str, failed_reason: str,
                 recorder: EventRecorder | None, sink: ConditionSink | None) -> None:
        self.node_name = node_name
        self.condition = condition
        self.failed_reason = failed_reason
        self.recorder = recorder
        self.sink = sink
        self._sent: dict[str, float] = {}  # message -> when its Event was last sent
        self._task: asyncio.Task[None] | None = None
        #: the state last reported, for tests and logs: (status, reason, message)
        self.state: tuple[str, str, str] | None = None

    def succeeded(self, skipped: list[str] | None = None) -> None:
        skipped = sorted(skipped or [])
        for problem in skipped:
            self._event(f"not programmed: {shorten(problem)}")
        if skipped:
            self._set("True", "SomeObjectsSkipped",
                      shorten(f"rules in sync; {len(skipped)} left out: " + "; ".join(skipped)))
        else:
            self._set("True", "Synced", "rules in sync")

    def failed(self, error: BaseException) -> None:
        message = shorten(str(error) or type(error).__name__)
        self._event(f"sync failed: {message}")
        self._set("False", self.failed_reason, message)

    def _set(self, status: str, reason: str, message: str) -> None:
        self.state = (status, reason, message)
        if self.sink is not None:
            self.sink.set_condition(self.condition, status, reason, message)

    def _event(self, message: str) -> None:
        now = time.monotonic()
        last = self._sent.get(message)
        if last is not None and now - last < REPEAT:
            return
        self._sent[message] = now
        for old in [m for m, at in self._sent.items() if now - at >= REPEAT]:
            del self._sent[old]
        log.warning("%s on %s: %s", self.failed_reason, self.node_name, message)
        if self.recorder is None:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self.recorder.run(), name=f"{self.recorder.component}-events")
        # as kubelet and kube-proxy refer to their Node: the name stands in for the uid
        ref: dict[str, Any] = {"kind": "Node", "apiVersion": "v1",
                               "metadata": {"name": self.node_name, "uid": self.node_name}}
        self.recorder.record(ref, WARNING, self.failed_reason, message)
