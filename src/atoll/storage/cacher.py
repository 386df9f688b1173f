"""The watch cache: the API server's in-memory view of the store.

Every object is decoded once, when its write is observed on the store's watch,
and kept as a dict; gets and lists are served from memory and every watcher is
fed from one store watch.  A bounded window of recent events lets watchers
start from a recent resourceVersion; older ones get ``Expired`` (410), as
kube-apiserver's watch cache does.

Writers call ``wait_for(revision)`` after a store write so a response is only
sent once the cache (and so every later read) reflects it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import orjson

from atoll.storage.store import Compacted, Event, Store, StoreError

log = logging.getLogger(__name__)


@dataclass(slots=True)
class CachedObject:
    key: str
    obj: dict[str, Any]
    raw: bytes  # orjson encoding of ``obj`` (resourceVersion included)
    mod_revision: int


@dataclass(slots=True)
class CacheEvent:
    type: str  # ADDED | MODIFIED | DELETED
    key: str
    revision: int
    obj: dict[str, Any]
    raw: bytes
    prev: dict[str, Any] | None
    time: float
    #: encoded watch frames by event type, shared by every watcher that sends it unchanged
    frames: dict[str, bytes] = field(default_factory=dict)

    def frame(self, event_type: str) -> bytes:
        data = self.frames.get(event_type)
        if data is None:
            data = (b'{"type":"' + event_type.encode() + b'","object":' + self.raw + b"}\n")
            self.frames[event_type] = data
        return data


#: queued to a watcher to make its consumer look at the clock (timeouts, bookmarks)
TICK = "tick"


class Watcher:
    """One subscriber: a queue of events under a key prefix, bounded."""

    def __init__(self, prefix: str, maxsize: int) -> None:
        self.prefix = prefix
        self.queue: asyncio.Queue[CacheEvent | None] = asyncio.Queue(maxsize)
        self.overflowed = False

    def close(self) -> None:
        """Wake the consumer with the end marker (server shutdown)."""
        self.overflowed = True
        try:
            self.queue.put_nowait(None)
        except asyncio.QueueFull:
            pass

    def tick(self) -> None:
        """Wake the consumer without an event; dropped when it has events to handle anyway."""
        try:
            self.queue.put_nowait(TICK)  # type: ignore[arg-type]
        except asyncio.QueueFull:
            pass

    def offer(self, event: CacheEvent) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True
            # make room for the end marker so the consumer wakes up and stops
            try:
                self.queue.get_nowait()
            except asyncio.QueueEmpty:
                pass
            self.queue.put_nowait(None)


def bucket_of(key: str) -> str:
    """The resource prefix of a key or prefix: its first three path segments."""
    parts = key.split("/", 4)
    return "/".join(parts[:4]) + "/" if len(parts) >= 4 else key


def decode(raw: bytes, revision: int) -> tuple[dict[str, Any], bytes]:
    """Decode a stored value and stamp its resourceVersion from the store's revision."""
    obj = orjson.loads(raw)
    meta = obj.setdefault("metadata", {})
    meta["resourceVersion"] = str(revision)
    return obj, orjson.dumps(obj)


class Cacher:
    def __init__(self, store: Store, *, prefix: str = "/registry/", window: int = 20000,
                 window_seconds: float = 300.0, watcher_queue: int = 10000) -> None:
        self.store = store
        self.prefix = prefix
        self.window = window
        self.window_seconds = window_seconds
        self.watcher_queue = watcher_queue
        self.objects: dict[str, CachedObject] = {}
        #: objects by resource prefix (``/registry/<group>/<plural>/``) so lists skip other kinds
        self._buckets: dict[str, dict[str, CachedObject]] = {}
        self.events: collections.deque[CacheEvent] = collections.deque()
        self.revision = 0
        #: revision of the oldest event still in the window minus one: watches from
        #: a revision >= this are served; older ones are Expired
        self.oldest_servable = 0
        self._watchers: set[Watcher] = set()
        #: watchers that have left since start: the heap trimmer reads it, since a burst of
        #: watches can open and close between two of its looks at the count
        self.departures = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self.listeners: list[Callable[[CacheEvent], None]] = []

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        await self._load()
        self._task = asyncio.create_task(self._follow(), name="cacher-follow")
        self._ready.set()

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        for w in list(self._watchers):
            w.close()

    async def _load(self) -> None:
        started = time.monotonic()
        objects: dict[str, CachedObject] = {}
        start_after = ""
        revision = 0
        while True:
            result = await self.store.range(self.prefix, start_after=start_after, limit=5000,
                                            revision=revision)
            revision = result.revision
            for kv in result.items:
                obj, raw = decode(kv.value, kv.mod_revision)
                objects[kv.key] = CachedObject(kv.key, obj, raw, kv.mod_revision)
            if not result.more or not result.items:
                break
            start_after = result.items[-1].key
        self.objects = objects
        self._buckets = {}
        for cached in objects.values():
            self._index(cached)
        self.revision = revision
        self.oldest_servable = revision
        log.info("watch cache loaded %d objects at revision %d in %.2fs", len(objects), revision,
                 time.monotonic() - started)

    async def _follow(self) -> None:
        while True:
            try:
                async for batch in self.store.watch(self.prefix, from_revision=self.revision):
                    for ev in batch:
                        self._apply(ev)
                    self._wake_waiters()
                return
            except asyncio.CancelledError:
                raise
            except (Compacted, StoreError) as err:
                log.warning("watch cache lost its store watch (%s); reloading", err)
                await self._reload()
            except Exception:  # pragma: no cover - defensive: never leave the cache dead
                log.exception("watch cache follower failed; reloading")
                await asyncio.sleep(0.5)
                await self._reload()

    async def _reload(self) -> None:
        """Re-list after losing the watch: diff into synthetic events so watchers see changes."""
        old = self.objects
        await self._load()
        now = time.time()
        for key, cur in self.objects.items():
            prev = old.get(key)
            if prev is None or prev.mod_revision != cur.mod_revision:
                self._emit(CacheEvent("ADDED" if prev is None else "MODIFIED", key,
                                      cur.mod_revision, cur.obj, cur.raw,
                                      prev.obj if prev else None, now))
        for key, prev in old.items():
            if key not in self.objects:
                self._emit(CacheEvent("DELETED", key, self.revision, prev.obj, prev.raw,
                                      prev.obj, now))
        self._wake_waiters()

    def _apply(self, ev: Event) -> None:
        key = ev.kv.key
        now = time.time()
        prev = self.objects.get(key)
        if ev.type == "DELETE":
            if prev is not None:
                del self.objects[key]
                self._unindex(key)
            obj, raw = decode(ev.kv.value, ev.kv.mod_revision)
            cev = CacheEvent("DELETED", key, ev.kv.mod_revision, obj, raw,
                             prev.obj if prev else None, now)
        else:
            obj, raw = decode(ev.kv.value, ev.kv.mod_revision)
            cached = CachedObject(key, obj, raw, ev.kv.mod_revision)
            self.objects[key] = cached
            self._index(cached)
            cev = CacheEvent("ADDED" if prev is None else "MODIFIED", key, ev.kv.mod_revision,
                             obj, raw, prev.obj if prev else None, now)
        self.revision = max(self.revision, ev.kv.mod_revision)
        self._emit(cev)

    def _emit(self, cev: CacheEvent) -> None:
        self.events.append(cev)
        self._trim()
        for listener in self.listeners:
            try:
                listener(cev)
            except Exception:  # pragma: no cover - listeners must not break the cache
                log.exception("watch cache listener failed")
        for w in self._watchers:
            if cev.key.startswith(w.prefix):
                w.offer(cev)

    def _trim(self) -> None:
        horizon = time.time() - self.window_seconds
        events = self.events
        while events and (len(events) > self.window or events[0].time < horizon):
            dropped = events.popleft()
            self.oldest_servable = dropped.revision

    def _wake_waiters(self) -> None:
        if not self._waiters:
            return
        keep = []
        for rev, fut in self._waiters:
            if rev <= self.revision:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((rev, fut))
        self._waiters = keep

    # -- reads -----------------------------------------------------------------------------
    async def wait_for(self, revision: int, timeout: float = 10.0) -> None:
        """Return once the cache reflects ``revision``."""
        if revision <= self.revision:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((revision, fut))
        await asyncio.wait_for(fut, timeout)

    def get(self, key: str) -> CachedObject | None:
        return self.objects.get(key)

    def list(self, prefix: str) -> list[CachedObject]:
        """Current objects under ``prefix`` sorted by key (the order etcd lists in)."""
        bucket = self._buckets.get(bucket_of(prefix), {})
        items = [c for k, c in bucket.items() if k.startswith(prefix)]
        items.sort(key=lambda c: c.key)
        return items

    def count(self, prefix: str) -> int:
        bucket = self._buckets.get(bucket_of(prefix), {})
        return sum(1 for k in bucket if k.startswith(prefix))

    def _index(self, cached: CachedObject) -> None:
        self._buckets.setdefault(bucket_of(cached.key), {})[cached.key] = cached

    def _unindex(self, key: str) -> None:
        bucket = self._buckets.get(bucket_of(key))
        if bucket is not None:
            bucket.pop(key, None)

    # -- watches ---------------------------------------------------------------------------
    def events_since(self, prefix: str, revision: int) -> list[CacheEvent] | None:
        """Events after ``revision`` under ``prefix``; None when the window no longer has them."""
        if revision < self.oldest_servable:
            return None
        return [e for e in self.events if e.revision > revision and e.key.startswith(prefix)]

    def subscribe(self, prefix: str) -> Watcher:
        w = Watcher(prefix, self.watcher_queue)
        self._watchers.add(w)
        return w

    def unsubscribe(self, w: Watcher) -> None:
        if w in self._watchers:
            self._watchers.discard(w)
            self.departures += 1

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)
