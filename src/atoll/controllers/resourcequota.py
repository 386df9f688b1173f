"""ResourceQuota controller: keeps ``status.hard`` and ``status.used`` true.

Admission charges every new object to the quota as it is stored; this
controller gives back what goes away (deleted objects, finished pods) and
counts a new or changed quota from scratch, as upstream's quota controller.

A recount reads the quota first and writes its status with that
resourceVersion as a precondition.  Admission charges through the same quota
object, so a charge that lands between the read and the write makes the write
fail (409) and the count is simply done again: no charge is ever lost.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Any

from atoll.api import errors, quotausage
from atoll.client.informer import Informer
from atoll.client.rest import ApiClient, resource_path
from atoll.client.workqueue import WorkQueue
from atoll.controllers.runner import run_workers

log = logging.getLogger(__name__)

#: objects whose going away (or finishing, for pods) gives quota back: (group, version, plural)
RELEASING = (("", "v1", "pods"), ("", "v1", "services"), ("", "v1", "configmaps"),
             ("", "v1", "secrets"), ("", "v1", "persistentvolumeclaims"),
             ("", "v1", "resourcequotas"), ("apps", "v1", "deployments"),
             ("apps", "v1", "replicasets"), ("apps", "v1", "statefulsets"),
             ("apps", "v1", "daemonsets"), ("batch", "v1", "jobs"),
             ("vmoperator.vmware.com", "v1alpha3", "virtualmachines"))


class ResourceQuotaController:
    name = "resourcequota"

    def __init__(self, client: ApiClient, *, workers: int = 2) -> None:
        self.client = client
        self.workers = workers
        self.quotas = Informer(client, "", "v1", "resourcequotas")
        self.quotas.add_handler(self._on_quota)
        self.watched = [Informer(client, g, v, p, metadata_only=(p != "pods"))
                        for g, v, p in RELEASING]
        for informer in self.watched:
            is_pod = informer.gvr == ("", "v1", "pods")
            informer.add_handler(lambda kind, obj, old, is_pod=is_pod:
                                 self._on_object(kind, obj, old, is_pod))
        self.queue: WorkQueue[str] = WorkQueue(base_delay=0.05, max_delay=5.0)
        self._versions: dict[tuple[str, str], str] = {(g, p): v for g, v, p in RELEASING}

    def _on_quota(self, kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        if kind == "DELETED":
            return
        status = obj.get("status") or {}
        hard = (obj.get("spec") or {}).get("hard") or {}
        if status.get("hard") != hard or set(status.get("used") or {}) != set(hard) or \
                (old is not None and (old.get("spec") or {}) != (obj.get("spec") or {})):
            self.queue.add(_key(obj))

    def _on_object(self, kind: str, obj: dict[str, Any], old: dict[str, Any] | None,
                   is_pod: bool) -> None:
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace")
        if not namespace:
            return
        releases = kind == "DELETED" or (
            is_pod and old is not None and
            quotausage.pod_counts(old) and not quotausage.pod_counts(obj))
        if not releases:
            return
        for quota in self.quotas.list():
            if quota["metadata"].get("namespace") == namespace:
                self.queue.add(_key(quota))

    async def run(self) -> None:
        await asyncio.gather(self.quotas.run(), *(self._run_quietly(i) for i in self.watched),
                             run_workers(self.name, self.queue, self.reconcile, self.workers))

    @staticmethod
    async def _run_quietly(informer: Informer) -> None:
        """A kind that is not served (the VM Operator CRDs before they exist) is retried."""
        delay = 1.0
        while True:
            try:
                await informer.run()
            except errors.NotFound:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def reconcile(self, key: str) -> float | None:
        namespace, _, name = key.partition("/")
        path = resource_path("", "v1", "resourcequotas", namespace, name)
        try:
            quota = await self.client.get(path)
        except errors.NotFound:
            return None
        hard = (quota.get("spec") or {}).get("hard") or {}
        used = await self.count(namespace, quota, list(hard))
        status = quota.get("status") or {}
        wanted = {"hard": hard, "used": {k: quotausage.format_quantity(used.get(k, Decimal(0)), k)
                                         for k in hard}}
        if status.get("hard") == wanted["hard"] and _same_amounts(status.get("used"),
                                                                  wanted["used"]):
            return None
        quota["status"] = wanted
        try:
            await self.client.update(path + "/status", quota)
        except errors.Conflict:
            self.queue.add_rate_limited(key)  # a charge landed meanwhile: count again
        except errors.NotFound:
            pass
        return None

    async def count(self, namespace: str, quota: dict[str, Any], keys: list[str]
                    ) -> dict[str, Decimal]:
        listed: dict[tuple[str, str], list[dict[str, Any]]] = {}
        classes: dict[str, dict[str, Any]] | None = None
        totals: dict[str, Decimal] = {}
        for key in keys:
            for group, plural in quotausage.kinds_for(key):
                if (group, plural) not in listed:
                    listed[(group, plural)] = await self._list(namespace, group, plural)
                if group == quotausage.VM_GROUP and classes is None:
                    classes = {c["metadata"]["name"]: c for c in await self._list(
                        namespace, group, "virtualmachineclasses")}
                for obj in listed[(group, plural)]:
                    if not quotausage.quota_applies(quota, group, plural, obj):
                        continue
                    amount = quotausage.usage(
                        group, plural, obj,
                        lambda _ns, n: (classes or {}).get(n)).get(key, Decimal(0))
                    totals[key] = totals.get(key, Decimal(0)) + amount
        return totals

    async def _list(self, namespace: str, group: str, plural: str) -> list[dict[str, Any]]:
        version = self._versions.get((group, plural))
        if version is None:
            version = await self._discover(group, plural)
            if version is None:
                return []
        try:
            body = await self.client.get(resource_path(group, version, plural, namespace))
        except errors.NotFound:
            return []
        return list(body.get("items") or [])

    async def _discover(self, group: str, plural: str) -> str | None:
        from atoll.client.discovery import server_resources

        for r in await server_resources(self.client):
            if r.group == group and r.plural == plural:
                self._versions[(group, plural)] = r.version
                return r.version
        return None


def _key(obj: dict[str, Any]) -> str:
    return f'{obj["metadata"].get("namespace", "")}/{obj["metadata"]["name"]}'


def _same_amounts(a: Any, b: dict[str, str]) -> bool:
    if not isinstance(a, dict) or set(a) != set(b):
        return False
    from atoll.api import quantity

    try:
        return all(quantity.parse(a[k]) == quantity.parse(b[k]) for k in b)
    except (ValueError, TypeError, ArithmeticError):
        return False
