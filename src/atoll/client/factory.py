"""One shared informer per resource per process, as client-go's SharedInformerFactory.

Controllers ask the factory for the informers they need; asking twice for the same resource
(and the same selectors) returns the same informer, so the process holds one watch per
resource however many controllers read it.  ``start`` runs every informer asked for so far
(and any asked for later) as a guarded task; ``wait_for_sync`` blocks until the given ones have
listed once, which every controller awaits before its first worker starts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from atoll.client import indexers as ix
from atoll.client.informer import Indexer, Informer
from atoll.client.rest import ApiClient

log = logging.getLogger(__name__)

InformerKey = tuple[str, str, str, str, str, str, bool]


class InformerFactory:
    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self._informers: dict[InformerKey, Informer] = {}
        self._tasks: dict[InformerKey, asyncio.Task[None]] = {}
        self._started = False

    def informer(self, group: str, version: str, plural: str, *, namespace: str = "",
                 label_selector: str = "", field_selector: str = "",
                 metadata_only: bool = False,
                 indexers: dict[str, Indexer] | None = None) -> Informer:
        """The shared informer of this resource (created on first use), with ``indexers``
        added to it; the standard namespace and owner indexes are always there.

        Metadata-only and full requests of one resource share a watch: a metadata-only
        caller gets the full informer when there is one (full objects carry their metadata),
        of any served version (metadata is the same in each: the garbage collector asks for
        the preferred version, a controller may read an older one), and a full request
        upgrades a metadata-only informer that has not started yet.
        """
        base = (group, version, plural, namespace, label_selector, field_selector)
        full: InformerKey = (*base, False)
        meta: InformerKey = (*base, True)
        inf = self._informers.get(full)
        if inf is None and metadata_only:
            inf = self._informers.get(meta) or self._full_of_any_version(base)
        elif inf is None and meta in self._informers and meta not in self._tasks:
            inf = self._informers.pop(meta)
            inf.headers = None  # upgraded to full objects before its first list
            self._informers[full] = inf
        if inf is None:
            key = meta if metadata_only else full
            inf = Informer(self.client, group, version, plural, namespace=namespace,
                           label_selector=label_selector, field_selector=field_selector,
                           metadata_only=metadata_only)
            for name, fn in ix.STANDARD.items():
                inf.add_indexer(name, fn)
            self._informers[key] = inf
            if self._started:
                self._start_one(key, inf)
        for name, fn in (indexers or {}).items():
            inf.add_indexer(name, fn)
        return inf

    @property
    def informers(self) -> list[Informer]:
        return list(self._informers.values())

    def start(self) -> None:
        self._started = True
        for key, inf in self._informers.items():
            if key not in self._tasks:
                self._start_one(key, inf)

    def _start_one(self, key: InformerKey, inf: Informer) -> None:
        name = "informer:" + "/".join(p for p in key[:3] if p)
        self._tasks[key] = asyncio.create_task(self._guard(inf), name=name)

    @staticmethod
    async def _guard(inf: Informer) -> None:
        """An informer's run loop retries by itself; this only keeps a surprise from ending it."""
        delay = 0.5
        while True:
            try:
                await inf.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("informer of %s failed; restarting in %.1fs", inf.path, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    def _full_of_any_version(self, base: tuple[str, ...]) -> Informer | None:
        group, _, plural, *scope = base
        return next((inf for key, inf in self._informers.items()
                     if not key[6] and key[0] == group and key[2] == plural
                     and list(key[3:6]) == scope), None)

    def drop_resource(self, group: str, version: str, plural: str) -> None:
        """Stop and forget the informers of a resource the API no longer serves (a deleted
        CRD), instead of letting them retry a 404 for the life of the process; asking for the
        resource again later starts afresh."""
        for key in [k for k in self._informers if k[:3] == (group, version, plural)]:
            del self._informers[key]
            task = self._tasks.pop(key, None)
            if task is not None:
                task.cancel()

    async def wait_for_sync(self, informers: Iterable[Informer]) -> None:
        await asyncio.gather(*(inf.wait_for_sync() for inf in informers))

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._started = False
