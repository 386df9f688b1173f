"""The TLS Secrets the router needs, each watched by name, as kubelet's watch-based Secret
manager watches the Secrets its pods use.

A host may not list or watch Secrets at large; the Node authorizer (``apiserver/nodeauthz.py``)
lets it get, list and watch one by name (``fieldSelector=metadata.name=X``) while an Ingress
of class ``atoll`` in that namespace names it in ``spec.tls``.  So there is one small informer
per referenced Secret, started and stopped as the Ingress informer changes: a changed
certificate reaches the router as a watch event, with no restart and no polling.  A watch is
authorized when it starts; every watch ends within the client's timeout (5 min) and is
authorized again, and the router stops it as soon as no Ingress names the Secret."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from atoll.agent.ingress.tls import SecretRef
from atoll.client.informer import Informer
from atoll.client.rest import ApiClient

log = logging.getLogger(__name__)
Changed = Callable[[SecretRef, "dict[str, Any] | None"], None]


class SecretWatches:
    def __init__(self, client: ApiClient, on_change: Changed) -> None:
        self.client = client
        self.on_change = on_change
        self._tasks: dict[SecretRef, asyncio.Task[None]] = {}

    @property
    def watched(self) -> set[SecretRef]:
        return set(self._tasks)

    def sync(self, wanted: set[SecretRef]) -> None:
        """Watch exactly ``wanted``; a Secret no longer wanted is forgotten (``None``)."""
        for ref in set(self._tasks) - wanted:
            self._tasks.pop(ref).cancel()
            self.on_change(ref, None)
        for ref in wanted - set(self._tasks):
            self._tasks[ref] = asyncio.create_task(self._watch(ref),
                                                   name=f"ingress-secret:{ref[0]}/{ref[1]}")

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _watch(self, ref: SecretRef) -> None:
        namespace, name = ref
        inf = Informer(self.client, "", "v1", "secrets", namespace=namespace,
                       field_selector=f"metadata.name={name}")

        def changed(kind: str, obj: dict[str, Any], _old: dict[str, Any] | None) -> None:
            self.on_change(ref, None if kind == "DELETED" else obj)

        inf.add_handler(changed)
        delay = 0.5
        while True:  # the informer retries by itself; this only outlives a surprise
            try:
                await inf.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("watch of secret %s/%s failed", namespace, name)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
