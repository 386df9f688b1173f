"""Recording core/v1 Events without slowing the caller down.

``record`` only puts the event on a bounded queue and returns; a few sender
tasks write them.  When the API is slower than the events come, the newest are
dropped (and counted) rather than queued without end, as client-go's broadcaster
does.  A repeat of the same event for the same object (same type, reason and
message) bumps the existing Event's ``count`` and ``lastTimestamp`` instead of
creating another object, as client-go's correlator does.
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

    def record(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Queue an event about ``obj``; never blocks, drops it when the queue is full."""
        try:
            self.queue.put_nowait(_Pending(involved_object(obj), type_, reason, message,
                                           time.time()))
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("%s: %d events dropped (the API is slower than they come)",
                            self.component, self.dropped)

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
        key = (ev.involved.get("uid", ""), ev.type, ev.reason, ev.message)
        now = rfc3339(ev.at)
        seen = self._seen.get(key)
        if seen is not None:
            self._seen.move_to_end(key)
            seen.count += 1
            try:
                await self.client.patch(f"/api/v1/namespaces/{namespace}/events/{seen.name}",
                                        {"count": seen.count, "lastTimestamp": now},
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
