"""Recording core/v1 Events without slowing the caller down.

``record`` only puts the event on a bounded queue and returns; a few sender
tasks write them.  When the API is slower than the events come, the newest are
dropped (and counted) rather than queued without end, as client-go's broadcaster
does.  Then, as client-go's ``EventCorrelator``:

- a spam filter: each source may write at most ``SPAM_BURST`` events about one
  object, refilled at one per ``SPAM_REFILL`` seconds; the rest are dropped;
- an aggregator: when more than ``AGGREGATE_MAX`` events of the same type and reason
  but different messages come for one object within ``AGGREGATE_WINDOW``, they are
  written as one Event whose message says "(combined from similar events)";
- de-duplication: a repeat of the same event (type, reason and message) bumps the
  existing Event's ``count`` and ``lastTimestamp`` instead of creating another object.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass
from typing import Any

from atoll.api import errors
from atoll.api.timestamps import rfc3339
from atoll.client.rest import ApiClient, MERGE_PATCH

log = logging.getLogger(__name__)
NORMAL, WARNING = "Normal", "Warning"
#: client-go's defaults (events.NewEventCorrelator): a burst of 25 per object, then one per
#: 5 minutes; more than 10 distinct messages of one reason within 10 minutes are combined
SPAM_BURST = 25
SPAM_REFILL = 300.0
AGGREGATE_MAX = 10
AGGREGATE_WINDOW = 600.0
COMBINED_PREFIX = "(combined from similar events): "


@dataclass(slots=True)
class _Pending:
    involved: dict[str, Any]
    type: str
    reason: str
    message: str
    at: float


@dataclass(slots=True)
class _Seen:
    name: str
    count: int


class _Bucket:
    """A token bucket of the spam filter (tokens refill continuously)."""

    __slots__ = ("tokens", "at")

    def __init__(self, now: float) -> None:
        self.tokens, self.at = float(SPAM_BURST), now

    def take(self, now: float) -> bool:
        self.tokens = min(float(SPAM_BURST), self.tokens + (now - self.at) / SPAM_REFILL)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class _Similar:
    """The distinct messages seen for one (object, type, reason) in the current window."""

    __slots__ = ("messages", "since")

    def __init__(self, now: float) -> None:
        self.messages: set[str] = set()
        self.since = now


def involved_object(obj: dict[str, Any]) -> dict[str, Any]:
    """An ObjectReference to ``obj`` (a pod, node, ...)."""
    meta = obj.get("metadata") or {}
    ref = {"apiVersion": obj.get("apiVersion") or "v1", "kind": obj.get("kind") or "Pod",
           "name": meta.get("name", ""), "uid": meta.get("uid", ""),
           "resourceVersion": meta.get("resourceVersion", "")}
    if meta.get("namespace"):
        ref["namespace"] = meta["namespace"]
    return ref


class EventRecorder:
    def __init__(self, client: ApiClient, component: str, *, max_pending: int = 1000,
                 senders: int = 2, remembered: int = 4096) -> None:
        self.client = client
        self.component = component
        self.senders = senders
        self.remembered = remembered
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=max_pending)
        self.dropped = 0
        #: (uid, type, reason, message) -> the Event written for it, least recent first
        self._seen: collections.OrderedDict[tuple[str, str, str, str], _Seen] = \
            collections.OrderedDict()
        self._buckets: collections.OrderedDict[str, _Bucket] = collections.OrderedDict()
        self._similar: collections.OrderedDict[tuple[str, str, str], _Similar] = \
            collections.OrderedDict()
        self.filtered = 0

    def record(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Queue an event about ``obj``; never blocks, drops it when the queue is full or the
        object has had more than its share of events from this source."""
        now = time.time()
        if not self._allowed(obj, now):
            self.filtered += 1
            return
        try:
            self.queue.put_nowait(_Pending(involved_object(obj), type_, reason, message,
                                           time.time()))
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("%s: %d events dropped (the API is slower than they come)",
                            self.component, self.dropped)

    def _allowed(self, obj: dict[str, Any], now: float) -> bool:
        meta = obj.get("metadata") or {}
        key = "/".join((str(obj.get("kind", "")), str(meta.get("namespace", "")),
                        str(meta.get("name", "")), str(meta.get("uid", ""))))
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(now)
            while len(self._buckets) > self.remembered:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now)

    def _aggregate(self, ev: _Pending) -> str:
        """The message to write: the event's own, or the combined form once its reason has
        had too many different messages for this object lately."""
        key = (ev.involved.get("uid", "") or ev.involved.get("name", ""), ev.type, ev.reason)
        similar = self._similar.get(key)
        if similar is None or ev.at - similar.since > AGGREGATE_WINDOW:
            similar = self._similar[key] = _Similar(ev.at)
            while len(self._similar) > self.remembered:
                self._similar.popitem(last=False)
        else:
            self._similar.move_to_end(key)
        similar.messages.add(ev.message)
        if len(similar.messages) > AGGREGATE_MAX:
            return COMBINED_PREFIX + ev.message
        return ev.message

    async def run(self) -> None:
        await asyncio.gather(*(self._sender() for _ in range(self.senders)))

    async def _sender(self) -> None:
        while True:
            ev = await self.queue.get()
            try:
                await self._write(ev)
            except asyncio.CancelledError:
                raise
            except errors.ApiError as exc:
                log.debug("%s: event %s for %s not written: %s", self.component, ev.reason,
                          ev.involved.get("name"), exc)
            except Exception as exc:  # connection trouble: the event is lost, not the sender
                log.debug("%s: event %s not written: %s", self.component, ev.reason, exc)

    async def _write(self, ev: _Pending) -> None:
        namespace = ev.involved.get("namespace") or "default"
        ev.message = self._aggregate(ev)
        # combined events share one Event object per (object, type, reason)
        dedupe = COMBINED_PREFIX if ev.message.startswith(COMBINED_PREFIX) else ev.message
        key = (ev.involved.get("uid", ""), ev.type, ev.reason, dedupe)
        now = rfc3339(ev.at)
        seen = self._seen.get(key)
        if seen is not None:
            self._seen.move_to_end(key)
            seen.count += 1
            try:
                await self.client.patch(f"/api/v1/namespaces/{namespace}/events/{seen.name}",
                                        {"count": seen.count, "lastTimestamp": now,
                                         "message": ev.message},
                                        content_type=MERGE_PATCH)
                return
            except errors.NotFound:
                pass  # expired or deleted: write a new one
        name = f"{ev.involved.get('name', 'object')}.{time.time_ns():x}"
        body = {"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": ev.involved, "type": ev.type, "reason": ev.reason,
                "message": ev.message, "source": {"component": self.component},
                "reportingComponent": self.component, "reportingInstance": self.component,
                "firstTimestamp": now, "lastTimestamp": now, "count": 1}
        await self.client.create(f"/api/v1/namespaces/{namespace}/events", body)
        self._seen[key] = _Seen(name, 1)
        while len(self._seen) > self.remembered:
            self._seen.popitem(last=False)
