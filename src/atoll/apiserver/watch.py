"""Watch: a chunked stream of ``{"type": ..., "object": ...}`` lines from the watch cache.

Semantics as upstream: no resourceVersion (or "0") starts with synthetic
ADDED events for the current state; a resourceVersion starts strictly after
it; one older than the cache's window ends the stream with an in-stream
``ERROR`` 410 event (what kopf, kr8s and the Python client look for).
Selectors filter, and an object that stops matching is sent as DELETED.
Bookmarks are sent only when asked for.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import orjson
from aiohttp import web

from atoll.api import errors
from atoll.api.kinds import ResourceType
from atoll.apiserver import http, listoptions
from atoll.apiserver.objects import ObjectService
from atoll.apiserver.registry import Registry
from atoll.storage.cacher import TICK, CacheEvent

BOOKMARK_INTERVAL_SECONDS = 30.0
#: how long past its deadline a watch may wait on a client that does not read
WRITE_GRACE_SECONDS = 5.0

Matcher = Callable[[dict[str, Any]], bool] | None
Render = Callable[[dict[str, Any], bytes], bytes]


def frame(event_type: str, body: bytes) -> bytes:
    return b'{"type":"' + event_type.encode() + b'","object":' + body + b"}\n"


def expired_frame(requested: int, oldest: int) -> bytes:
    status = errors.Expired(f"too old resource version: {requested} ({oldest})").to_status()
    return frame("ERROR", orjson.dumps(status))


async def serve(request: web.Request, svc: ObjectService, registry: Registry, rt: ResourceType,
                namespace: str, matches: Matcher, render: Render) -> web.StreamResponse:
    q = request.query
    timeout = listoptions.watch_timeout(q)
    bookmarks = http.query_bool(q, "allowWatchBookmarks")
    send_initial = q.get("sendInitialEvents")
    rv_text = q.get("resourceVersion", "")
    listoptions.check_watch(q)
    if send_initial is not None and send_initial != "":
        initial_events = http.query_bool(q, "sendInitialEvents")
        if initial_events and not bookmarks:
            raise errors.invalid("ListOptions", "", [errors.forbidden_field(
                "allowWatchBookmarks", "allowWatchBookmarks must be set to true when "
                "sendInitialEvents is set to true")], group="meta.k8s.io")
    else:
        initial_events = rv_text in ("", "0")
    start = listoptions.resource_version(rv_text)
    cacher = svc.cacher
    st = registry.storage_type(rt)
    prefix = st.prefix(namespace)

    # subscribe before reading the backlog (no await in between): no gap, no duplicate
    watcher = cacher.subscribe(prefix)
    try:
        if initial_events or start == 0:
            snapshot_rev = cacher.revision
            backlog: list[tuple[str, dict[str, Any], bytes]] = [
                ("ADDED", c.obj, c.raw) for c in cacher.list(prefix)
                if matches is None or matches(c.obj)]
            if start and start > snapshot_rev:
                snapshot_rev = start
            last_rev = snapshot_rev
        else:
            if start > cacher.revision:
                try:
                    await cacher.wait_for(start, timeout=3.0)
                except asyncio.TimeoutError:
                    raise errors.Timeout(f"Too large resource version: {start}, current: "
                                         f"{cacher.revision}", retry_after=1) from None
            events = cacher.events_since(prefix, start)
            backlog = []
            last_rev = start
            if events is None:
                resp = await _open(request)
                await resp.write(expired_frame(start, cacher.oldest_servable + 1))
                await resp.write_eof()
                return resp
            for ev in events:
                out = _translate(ev, matches)
                if out:
                    backlog.append((out, ev.obj, ev.raw))
                last_rev = ev.revision
        resp = await _open(request)
        chunks = [frame(t, render(obj, raw)) for t, obj, raw in backlog]
        if initial_events and bookmarks and send_initial:
            chunks.append(frame("BOOKMARK", _bookmark(rt, last_rev, initial_end=True)))
        try:
            if chunks:
                async with asyncio.timeout(timeout + WRITE_GRACE_SECONDS):
                    await resp.write(b"".join(chunks))
            await _pump(resp, watcher, rt, last_rev, matches, render, timeout, bookmarks, cacher)
        except asyncio.TimeoutError:  # the client stopped reading: drop it at its deadline
            if request.transport is not None:
                request.transport.abort()
        return resp
    finally:
        cacher.unsubscribe(watcher)


async def _open(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json",
                                                   "Cache-Control": "no-cache"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    return resp


def _bookmark(rt: ResourceType, revision: int, initial_end: bool = False) -> bytes:
    meta: dict[str, Any] = {"resourceVersion": str(revision)}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    return orjson.dumps({"kind": rt.kind, "apiVersion": rt.group_version, "metadata": meta})


def _translate(ev: CacheEvent, matches: Matcher) -> str:
    """The event type a filtered watcher sees, or '' to skip it."""
    if matches is None:
        return ev.type
    now = ev.type != "DELETED" and matches(ev.obj)
    before = ev.prev is not None and matches(ev.prev)
    if ev.type == "DELETED":
        return "DELETED" if (before or matches(ev.obj)) else ""
    if now and not before:
        return "ADDED"
    if now and before:
        return "MODIFIED"
    if before and not now:
        return "DELETED"
    return ""


async def _pump(resp: web.StreamResponse, watcher: Any, rt: ResourceType, last_rev: int,
                matches: Matcher, render: Render, timeout: int, bookmarks: bool,
                cacher: Any) -> None:
    """Copy the watcher's queue to the stream until timeout, overflow or disconnect.

    One timer per stream (not one per event) wakes it for bookmarks and the
    deadline; frames of unfiltered, unconverted events are encoded once and
    shared by every stream.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    next_bookmark = loop.time() + BOOKMARK_INTERVAL_SECONDS if bookmarks else deadline
    queue = watcher.queue
    shared = render is raw_render
    fired = False

    def wake() -> None:
        nonlocal fired
        fired = True
        watcher.tick()

    timer = loop.call_at(min(deadline, next_bookmark), wake)
    try:
        # one more timer for the whole stream: a client that stopped reading (a write waiting
        # on a full socket) is dropped after the deadline instead of holding its watch forever
        async with asyncio.timeout_at(deadline + WRITE_GRACE_SECONDS):
            while True:
                ev = await queue.get()
                batch: list[Any] = [ev]
                while ev is not None and not queue.empty():
                    ev = queue.get_nowait()
                    batch.append(ev)
                chunks = []
                for item in batch:
                    if item is None or item is TICK or item.revision <= last_rev:
                        continue
                    out = _translate(item, matches)
                    if out:
                        chunks.append(item.frame(out) if shared
                                      else frame(out, render(item.obj, item.raw)))
                    last_rev = item.revision
                if chunks:
                    await resp.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
                if batch[-1] is None:  # overflow or shutdown: end the stream, the client re-lists
                    break
                now = loop.time()
                if now >= deadline:
                    break
                if bookmarks and now >= next_bookmark:
                    await resp.write(frame("BOOKMARK",
                                           _bookmark(rt, max(last_rev, cacher.revision))))
                    next_bookmark = now + BOOKMARK_INTERVAL_SECONDS
                if fired:
                    fired = False
                    timer = loop.call_at(min(deadline, next_bookmark), wake)
            try:
                await resp.write_eof()
            except (ConnectionResetError, RuntimeError):
                pass
    finally:
        timer.cancel()


def raw_render(obj: dict[str, Any], raw: bytes) -> bytes:
    """Objects sent as stored: lets streams share encoded frames."""
    return raw
