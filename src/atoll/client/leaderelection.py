"""Leader election on a coordination.k8s.io Lease, as client-go's leaderelection does.

Several controller managers (one per API server, for high availability) run
side by side; only the one holding the Lease acts.  The holder renews it every
``retry_period``; the others try to take it every ``retry_period`` and succeed
once it has not been renewed for ``lease_duration``.  Every write is a
compare-and-swap on the Lease's resourceVersion, so two candidates can never
both believe they won.  A leader that cannot renew within ``renew_deadline``
steps down (its caller stops acting) before anyone else may take over, because
``renew_deadline`` < ``lease_duration``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from atoll.api import errors
from atoll.client.rest import ApiClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ElectionConfig:
    namespace: str
    name: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("leader election wants retry_period < renew_deadline < "
                             "lease_duration")


def _micro_time(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return dt.datetime.strptime(text, fmt).replace(tzinfo=dt.timezone.utc).timestamp()
        except ValueError:
            continue
    return None


class LeaderElector:
    def __init__(self, client: ApiClient, config: ElectionConfig) -> None:
        self.client = client
        self.config = config
        self.path = (f"/apis/coordination.k8s.io/v1/namespaces/{config.namespace}/leases/"
                     f"{config.name}")
        #: set while this process holds the lease
        self.leading = asyncio.Event()
        self.lost = asyncio.Event()
        #: when another holder's renewal was first seen (our own clock, not theirs)
        self._observed: tuple[str, float] = ("", 0.0)

    async def acquire(self) -> None:
        """Return once this process is the leader."""
        while True:
            try:
                if await self._try():
                    break
            except (errors.ApiError, OSError, asyncio.TimeoutError, aiohttp.ClientError) as err:
                log.info("%s: cannot reach the lease yet: %s", self.config.name, err)
            await asyncio.sleep(self.config.retry_period)
        self.leading.set()
        log.info("%s: now the leader (%s)", self.config.name, self.config.identity)

    async def hold(self) -> None:
        """Renew until a renewal fails for ``renew_deadline``; then return (leadership lost)."""
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(self.config.retry_period)
            try:
                ok = await self._try()
            except (errors.ApiError, OSError, asyncio.TimeoutError, aiohttp.ClientError) as err:
                log.warning("%s: renewing the lease failed: %s", self.config.name, err)
                ok = False
            if ok:
                last_ok = time.monotonic()
            elif time.monotonic() - last_ok >= self.config.renew_deadline or \
                    await self._someone_else_holds():
                self.leading.clear()
                self.lost.set()
                log.warning("%s: lost leadership (%s)", self.config.name, self.config.identity)
                return

    async def release(self) -> None:
        """Give the lease up on a clean stop, so a successor need not wait it out."""
        if not self.leading.is_set():
            return
        try:
            lease = await self.client.get(self.path)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") == self.config.identity:
                spec["holderIdentity"] = ""
                spec["leaseDurationSeconds"] = 1
                spec["renewTime"] = _micro_time(time.time() - 60)
                await self.client.update(self.path, lease)
        except (errors.ApiError, OSError, aiohttp.ClientError):
            pass
        self.leading.clear()

    async def _someone_else_holds(self) -> bool:
        try:
            lease = await self.client.get(self.path)
        except (errors.ApiError, OSError, aiohttp.ClientError):
            return False
        return (lease.get("spec") or {}).get("holderIdentity") not in ("", self.config.identity)

    async def _try(self) -> bool:
        """One acquire-or-renew attempt: True if we hold the lease afterwards."""
        now = time.time()
        spec = {"holderIdentity": self.config.identity,
                "leaseDurationSeconds": int(self.config.lease_duration),
                "renewTime": _micro_time(now)}
        try:
            lease = await self.client.get(self.path)
        except errors.NotFound:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.config.name, "namespace": self.config.namespace},
                    "spec": dict(spec, acquireTime=_micro_time(now), leaseTransitions=0)}
            try:
                await self.client.create(self.path.rsplit("/", 1)[0], body)
                return True
            except errors.AlreadyExists:
                return False
        current = lease.get("spec") or {}
        holder = current.get("holderIdentity") or ""
        if holder and holder != self.config.identity:
            # expiry is judged on our own clock, from when we saw this renewal
            seen = (f"{holder}@{current.get('renewTime')}", time.monotonic())
            if self._observed[0] != seen[0]:
                self._observed = seen
            duration = float(current.get("leaseDurationSeconds") or self.config.lease_duration)
            if time.monotonic() - self._observed[1] < duration:
                return False
        new = dict(current, **spec)
        if holder != self.config.identity:
            new["acquireTime"] = _micro_time(now)
            new["leaseTransitions"] = int(current.get("leaseTransitions") or 0) + 1
        lease["spec"] = new
        try:
            await self.client.update(self.path, lease)  # CAS on metadata.resourceVersion
        except (errors.Conflict, errors.NotFound):
            return False
        return True
