"""The controller framework: a declaration of what a controller watches, and one reconcile.

As controller-runtime's builder and kopf's handlers: a controller names its primary resource,
the resources it ``owns`` (a change to an owned object enqueues its controlling owner) and the
ones it ``watches`` with a mapping to keys, and may ``read`` further caches.  Every informer
comes from the process's shared ``InformerFactory``.  ``run`` waits until all of them have
synced, then starts the workers; each key is reconciled by one worker at a time.

``reconcile(key)`` returns ``DONE`` (or None), ``requeue_after(seconds)`` (or a number), or
raises: ``TemporaryError`` retries after its delay or the back-off, ``PermanentError`` is logged
and not retried until the object changes, a Conflict retries with back-off, a NotFound is done
(the object went away meanwhile), anything else is logged and backed off.  One object that
fails never blocks the others: it waits alone, per key, and a global bucket caps the retries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from atoll.api import errors
from atoll.client.events import EventRecorder
from atoll.client.factory import InformerFactory
from atoll.client.informer import Indexer, Informer, object_key
from atoll.client.metrics import Histogram, Registry, label
from atoll.client.ratelimit import RateLimiter
from atoll.client.rest import ApiClient
from atoll.client.workqueue import WorkQueue
from atoll.settings import ReconcileSettings

log = logging.getLogger(__name__)

Event = tuple[str, dict[str, Any], "dict[str, Any] | None"]
Mapper = Callable[[str, dict[str, Any], "dict[str, Any] | None"], Iterable[str]]


@dataclass(frozen=True)
class Result:
    """What a reconcile asks for: nothing more (``DONE``) or another look after a delay."""

    requeue_after: float | None = None


DONE = Result()


def requeue_after(seconds: float) -> Result:
    return Result(max(0.0, float(seconds)))


class TemporaryError(Exception):
    """Try again: after ``delay`` seconds if given, else after the key's back-off."""

    def __init__(self, message: str = "", delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(Exception):
    """Retrying cannot help (a spec no fix on our side will make valid): log, do not retry."""


def controller_owner(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    """The ``controller: true`` owner reference of ``obj`` if it names a ``kind``."""
    for ref in ((obj or {}).get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller") and ref.get("kind") == kind:
            return ref
    return None


class Builder:
    """What ``Controller.declare`` gets: each call returns the shared informer it names."""

    def __init__(self, controller: Controller, factory: InformerFactory) -> None:
        self._controller = controller
        self._factory = factory
        self.informers: list[Informer] = []

    def _informer(self, group: str, version: str, plural: str,
                  indexers: dict[str, Indexer] | None, opts: dict[str, Any]) -> Informer:
        inf = self._factory.informer(group, version, plural, indexers=indexers, **opts)
        if inf not in self.informers:
            self.informers.append(inf)
        return inf

    def primary(self, group: str, version: str, plural: str, *,
                indexers: dict[str, Indexer] | None = None, **opts: Any) -> Informer:
        """The reconciled resource: every change to an object enqueues its key."""
        inf = self._informer(group, version, plural, indexers, opts)
        queue = self._controller.queue
        inf.add_handler(lambda kind, obj, old: queue.add(object_key(obj)))
        return inf

    def owns(self, group: str, version: str, plural: str, *, owner_kind: str,
             cluster_scoped_owner: bool = False, indexers: dict[str, Indexer] | None = None,
             **opts: Any) -> Informer:
        """Owned objects: a change enqueues the controlling owner of kind ``owner_kind``
        (before and after the change, so a released object wakes its former owner)."""

        def mapper(kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> Iterable[str]:
            keys = set()
            for o in (obj, old):
                ref = controller_owner(o, owner_kind)
                if ref is None or not isinstance(ref.get("name"), str):
                    continue
                ns = (o or {}).get("metadata", {}).get("namespace") or ""
                keys.add(ref["name"] if cluster_scoped_owner or not ns else f"{ns}/{ref['name']}")
            return keys

        return self.watches(group, version, plural, mapper, indexers=indexers, **opts)

    def watches(self, group: str, version: str, plural: str, mapper: Mapper, *,
                indexers: dict[str, Indexer] | None = None, **opts: Any) -> Informer:
        """Another resource whose changes enqueue the keys ``mapper`` names."""
        inf = self._informer(group, version, plural, indexers, opts)
        queue = self._controller.queue
        name = self._controller.name

        def handler(kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
            try:
                keys = list(mapper(kind, obj, old))
            except Exception:
                log.exception("%s: mapping %s failed", name, object_key(obj))
                return
            for key in keys:
                queue.add(key)

        inf.add_handler(handler)
        return inf

    def reads(self, group: str, version: str, plural: str, *,
              indexers: dict[str, Indexer] | None = None, **opts: Any) -> Informer:
        """A cache the reconcile reads; its changes enqueue nothing, but it is synced first."""
        return self._informer(group, version, plural, indexers, opts)


class Controller:
    """Subclass, set ``name``, and write ``declare`` and ``reconcile``."""

    name: ClassVar[str] = "controller"
    #: default worker count; the manager may pass another
    default_workers: ClassVar[int] = 1
    #: per-key back-off of failed keys (seconds, doubling), ``None``: the settings' values
    backoff: ClassVar[tuple[float, float] | None] = None
    #: the source of the Events ``self.events`` records (a queued recorder the framework
    #: runs beside the workers); ``None``: ``<name>-controller``
    events_component: ClassVar[str | None] = None

    def __init__(self, client: ApiClient, factory: InformerFactory, *,
                 workers: int | None = None, settings: ReconcileSettings | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.factory = factory
        self.settings = settings or ReconcileSettings()
        self.workers = workers or self.default_workers
        #: wall-clock seconds; tests pass a fake clock
        self.clock = clock
        base, most = self.backoff or (self.settings.backoff_base_seconds,
                                      self.settings.backoff_max_seconds)
        self.queue: WorkQueue[str] = WorkQueue(limiter=RateLimiter(
            base_delay=base, max_delay=most, qps=self.settings.retry_qps,
            burst=self.settings.retry_burst))
        self.events = EventRecorder(client, self.events_component or f"{self.name}-controller")
        self.work_seconds = Histogram()
        self.outcomes = {"success": 0, "requeue_after": 0, "error": 0}
        builder = Builder(self, factory)
        self.declare(builder)
        self.informers = builder.informers

    def declare(self, b: Builder) -> None:
        raise NotImplementedError

    async def reconcile(self, key: str) -> Result | float | None:
        raise NotImplementedError

    async def on_synced(self) -> None:
        """Called once the caches have synced, before any worker starts."""

    async def run(self) -> None:
        self.factory.start()
        await self.factory.wait_for_sync(self.informers)
        await self.on_synced()
        tasks = [asyncio.create_task(self._worker(), name=f"{self.name}-worker-{i}")
                 for i in range(self.workers)]
        tasks.append(asyncio.create_task(self.events.run(), name=f"{self.name}-events"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()

    async def process(self, key: str) -> None:
        """Reconcile ``key`` once and queue what its outcome asks for (workers and tests)."""
        started = time.perf_counter()
        outcome = "error"
        try:
            result = await self.reconcile(key)
        except TemporaryError as exc:
            log.info("%s: %s: %s (will retry)", self.name, key, exc)
            self._retry(key, exc.delay)
        except PermanentError as exc:
            log.error("%s: %s: %s (not retried until it changes)", self.name, key, exc)
            self.queue.forget(key)
        except errors.Conflict:
            self._retry(key, None)
        except errors.NotFound:
            outcome = "success"
            self.queue.forget(key)
        except Exception as exc:
            log.warning("%s: reconciling %s failed: %s", self.name, key, exc,
                        exc_info=log.isEnabledFor(logging.DEBUG))
            self._retry(key, None)
        else:
            self.queue.forget(key)
            delay = result.requeue_after if isinstance(result, Result) else result
            outcome = "success"
            if delay is not None:
                outcome = "requeue_after"
                self.queue.add_after(key, float(delay))
        finally:
            self.work_seconds.observe(time.perf_counter() - started)
        self.outcomes[outcome] += 1

    def _retry(self, key: str, delay: float | None) -> None:
        if delay is None:
            self.queue.add_rate_limited(key)
        else:
            self.queue.stats.retries += 1
            self.queue.add_after(key, delay)

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            if key is None:
                return
            try:
                await self.process(key)
            finally:
                self.queue.done(key)


def register_metrics(registry: Registry, controllers: Iterable[Any]) -> None:
    """Queue depth, adds, retries, work and queue durations, reconcile outcomes per controller,
    under client-go's and controller-runtime's metric names."""
    ctrls = [c for c in controllers if isinstance(c, Controller)]

    def each(fn: Callable[[Controller, str], Iterable[str]]) -> Callable[[], Iterable[str]]:
        return lambda: [line for c in ctrls for line in fn(c, f'name="{label(c.name)}"')]

    registry.family("workqueue_depth", "gauge", "Keys waiting in the queue.",
                    each(lambda c, lb: [f"workqueue_depth{{{lb}}} {len(c.queue)}"]))
    registry.family("workqueue_adds_total", "counter", "Keys added to the queue.",
                    each(lambda c, lb: [f"workqueue_adds_total{{{lb}}} {c.queue.stats.adds}"]))
    registry.family("workqueue_retries_total", "counter", "Keys re-queued after a failure.",
                    each(lambda c, lb: [f"workqueue_retries_total{{{lb}}} {c.queue.stats.retries}"]))
    registry.family("workqueue_unfinished_work", "gauge", "Keys being reconciled now.",
                    each(lambda c, lb: [f"workqueue_unfinished_work{{{lb}}} {c.queue.processing}"]))
    registry.family("workqueue_queue_duration_seconds", "histogram",
                    "Seconds a key waited before a worker took it.",
                    each(lambda c, lb: c.queue.stats.queue_seconds.lines(
                        "workqueue_queue_duration_seconds", lb)))
    registry.family("workqueue_work_duration_seconds", "histogram",
                    "Seconds one reconcile took.",
                    each(lambda c, lb: c.work_seconds.lines("workqueue_work_duration_seconds",
                                                             lb)))
    registry.family("controller_reconcile_total", "counter", "Reconciles by outcome.",
                    each(lambda c, lb: [f'controller_reconcile_total{{{lb},result="{k}"}} {v}'
                                        for k, v in c.outcomes.items()]))
