"""CertificateSigningRequest clean-up, as upstream's csrcleaner: requests are records of a
moment, not inventory.  Issued, denied and failed requests go after an hour, pending ones after
a day.  Each request is looked at when it changes and again exactly when it falls due (a
delayed requeue, not a sweep)."""

from __future__ import annotations

import logging
from typing import Any

from atoll.api import errors
from atoll.api.timestamps import parse_rfc3339
from atoll.client.controller import DONE, Builder, Controller, Result, requeue_after
from atoll.client.rest import resource_path

log = logging.getLogger(__name__)
GROUP = "certificates.k8s.io"
DECIDED_TTL = 3600.0
PENDING_TTL = 24 * 3600.0


def due(csr: dict[str, Any]) -> float | None:
    """When the request may be deleted (epoch seconds)."""
    status = csr.get("status") or {}
    created = parse_rfc3339(csr["metadata"].get("creationTimestamp"))
    if created is None:
        return None
    decided = [parse_rfc3339(c.get("lastUpdateTime") or c.get("lastTransitionTime")) or created
               for c in status.get("conditions") or []
               if c.get("type") in ("Approved", "Denied", "Failed")]
    if status.get("certificate") or any(c.get("type") in ("Denied", "Failed")
                                         for c in status.get("conditions") or []):
        return max(decided, default=created) + DECIDED_TTL
    return created + PENDING_TTL


class CSRCleaner(Controller):
    name = "csr-cleaner"
    backoff = (1.0, 60.0)

    def declare(self, b: Builder) -> None:
        self.csrs = b.primary(GROUP, "v1", "certificatesigningrequests")

    async def reconcile(self, name: str) -> Result:
        csr = self.csrs.get(name)
        if csr is None:
            return DONE
        when = due(csr)
        if when is None:
            return DONE
        left = when - self.clock()
        if left > 0:
            return requeue_after(left)
        try:
            await self.client.delete(resource_path(GROUP, "v1", "certificatesigningrequests",
                                                   name=name))
            log.info("removed certificate request %s", name)
        except errors.NotFound:
            pass
        return DONE
