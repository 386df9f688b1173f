"""CertificateSigningRequest clean-up, as upstream's csrcleaner: requests are records of a
moment, not inventory.  Issued, denied and failed requests go after an hour, pending ones after
a day.  Each request is looked at when it changes and again exactly when it falls due (a
delayed requeue, not a sweep)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import Any

from atoll.api import errors
from atoll.client.informer import Informer
from atoll.client.rest import ApiClient, resource_path
from atoll.client.workqueue import WorkQueue
from atoll.controllers.runner import run_workers

log = logging.getLogger(__name__)
GROUP = "certificates.k8s.io"
DECIDED_TTL = 3600.0
PENDING_TTL = 24 * 3600.0


def _time(text: Any) -> float | None:
    try:
        return dt.datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def due(csr: dict[str, Any]) -> float | None:
    """When the request may be deleted (epoch seconds)."""
    status = csr.get("status") or {}
    created = _time(csr["metadata"].get("creationTimestamp"))
    if created is None:
        return None
    decided = [_time(c.get("lastUpdateTime") or c.get("lastTransitionTime")) or created
               for c in status.get("conditions") or []
               if c.get("type") in ("Approved", "Denied", "Failed")]
    if status.get("certificate") or any(c.get("type") in ("Denied", "Failed")
                                         for c in status.get("conditions") or []):
        return max(decided, default=created) + DECIDED_TTL
    return created + PENDING_TTL


class CSRCleaner:
    name = "csr-cleaner"

    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self.informer = Informer(client, GROUP, "v1", "certificatesigningrequests")
        self.informer.add_handler(lambda kind, csr, old: kind != "DELETED" and
                                  self.queue.add(csr["metadata"]["name"]))
        self.queue: WorkQueue[str] = WorkQueue(base_delay=1.0, max_delay=60.0)

    async def run(self) -> None:
        await asyncio.gather(self.informer.run(),
                             run_workers(self.name, self.queue, self.reconcile, 1))

    async def reconcile(self, name: str) -> float | None:
        csr = self.informer.get(name)
        if csr is None:
            return None
        when = due(csr)
        if when is None:
            return None
        left = when - time.time()
        if left > 0:
            return left
        try:
            await self.client.delete(resource_path(GROUP, "v1", "certificatesigningrequests",
                                                   name=name))
            log.info("removed certificate request %s", name)
        except errors.NotFound:
            pass
        return None
