"""Informer: list, then watch from that resourceVersion, into a local cache; relist on 410.

Handlers get (event type, object, old object) for every change, including the
synthetic ones a relist finds; ``synced`` is set after the first list.  Indexers (named
functions from an object to index values, as client-go's) keep reverse maps so a controller
asks "pods on node n" or "objects owned by uid u" without scanning the cache.

Informers are shared: build them through ``client.factory.InformerFactory``, one per resource
per process, and let the factory run them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from atoll.api import errors
from atoll.client.rest import ApiClient, resource_path

log = logging.getLogger(__name__)

Handler = Callable[[str, dict[str, Any], dict[str, Any] | None], None]
Indexer = Callable[[dict[str, Any]], Iterable[str]]
METADATA_ACCEPT = ("application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,"
                   "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io,application/json")


def object_key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace") or ""
    return f"{ns}/{meta.get('name', '')}" if ns else meta.get("name", "")


class Informer:
    def __init__(self, client: ApiClient, group: str, version: str, plural: str, *,
                 namespace: str = "", label_selector: str = "", field_selector: str = "",
                 metadata_only: bool = False, page_size: int = 500) -> None:
        self.client = client
        self.path = resource_path(group, version, plural, namespace)
        self.gvr = (group, version, plural)
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.headers = {"Accept": METADATA_ACCEPT} if metadata_only else None
        self.page_size = page_size
        self.cache: dict[str, dict[str, Any]] = {}
        self.handlers: list[Handler] = []
        self.synced = asyncio.Event()
        self.resource_version = ""
        self._indexers: dict[str, Indexer] = {}
        self._indices: dict[str, dict[str, set[str]]] = {}

    def add_handler(self, handler: Handler) -> None:
        self.handlers.append(handler)

    def add_indexer(self, name: str, indexer: Indexer) -> None:
        """Keep an index ``name``; adding the same name again is a no-op (shared informers)."""
        if name in self._indexers:
            return
        self._indexers[name] = indexer
        index: dict[str, set[str]] = {}
        self._indices[name] = index
        for key, obj in self.cache.items():
            for value in self._values(indexer, obj):
                index.setdefault(value, set()).add(key)

    def by_index(self, name: str, value: str) -> list[dict[str, Any]]:
        """Cached objects whose index ``name`` holds ``value`` (KeyError for an unknown index)."""
        keys = self._indices[name].get(value) or ()
        return [self.cache[k] for k in keys if k in self.cache]

    def index_keys(self, name: str, value: str) -> set[str]:
        return set(self._indices[name].get(value) or ())

    def get(self, key: str) -> dict[str, Any] | None:
        return self.cache.get(key)

    def list(self) -> list[dict[str, Any]]:
        return list(self.cache.values())

    async def wait_for_sync(self) -> None:
        await self.synced.wait()

    @staticmethod
    def _values(indexer: Indexer, obj: dict[str, Any]) -> Iterable[str]:
        try:
            return [v for v in indexer(obj) if isinstance(v, str)]
        except Exception:  # objects come from the API: a surprising one is not indexed
            log.debug("indexer failed on %s", object_key(obj), exc_info=True)
            return []

    def _reindex(self, key: str, obj: dict[str, Any] | None, old: dict[str, Any] | None) -> None:
        for name, indexer in self._indexers.items():
            index = self._indices[name]
            before = set(self._values(indexer, old)) if old is not None else set()
            after = set(self._values(indexer, obj)) if obj is not None else set()
            for value in before - after:
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]
            for value in after - before:
                index.setdefault(value, set()).add(key)

    def _emit(self, kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        for h in self.handlers:
            try:
                h(kind, obj, old)
            except Exception:
                log.exception("informer handler failed for %s", self.path)

    def _selectors(self) -> dict[str, str]:
        out = {}
        if self.label_selector:
            out["labelSelector"] = self.label_selector
        if self.field_selector:
            out["fieldSelector"] = self.field_selector
        return out

    async def _list(self) -> None:
        items: dict[str, dict[str, Any]] = {}
        cont = ""
        rv = ""
        while True:
            params: dict[str, Any] = {"limit": self.page_size, **self._selectors()}
            if cont:
                params["continue"] = cont
            body = await self.client.request("GET", self.path, params=params, headers=self.headers)
            for item in body.get("items") or []:
                items[object_key(item)] = item
            meta = body.get("metadata") or {}
            rv = meta.get("resourceVersion", rv)
            cont = meta.get("continue") or ""
            if not cont:
                break
        old = self.cache
        self.cache = items
        self.resource_version = rv
        for key in set(old) | set(items):
            self._reindex(key, items.get(key), old.get(key))
        for key, obj in items.items():
            prev = old.get(key)
            if prev is None:
                self._emit("ADDED", obj, None)
            elif prev.get("metadata", {}).get("resourceVersion") != obj["metadata"].get("resourceVersion"):
                self._emit("MODIFIED", obj, prev)
        for key, prev in old.items():
            if key not in items:
                self._emit("DELETED", prev, prev)

    async def run(self) -> None:
        delay = 0.1
        need_list = True
        while True:
            try:
                if need_list:
                    await self._list()
                    self.synced.set()
                    need_list = False
                async for event in self.client.watch(self.path, resource_version=self.resource_version,
                                                     headers=self.headers, **self._selectors()):
                    delay = 0.1
                    self._on_event(event)
            except asyncio.CancelledError:
                raise
            except errors.Expired:
                need_list = True
            except errors.NotFound:
                # the resource is gone (a deleted CRD): empty the cache and wait for it
                need_list = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception as exc:
                log.debug("watch of %s ended (%s); resuming", self.path, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if kind == "BOOKMARK":
            if rv:
                self.resource_version = rv
            return
        key = object_key(obj)
        old = self.cache.get(key)
        if kind == "DELETED":
            self.cache.pop(key, None)
            self._reindex(key, None, old)
        else:
            self.cache[key] = obj
            self._reindex(key, obj, old)
        if rv:
            self.resource_version = rv
        self._emit(kind or "MODIFIED", obj, old)
