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

import logging
from collections.abc import Iterable
from decimal import Decimal
from functools import partial
from typing import Any

from atoll.api import errors, quotausage
from atoll.client import indexers as ix
from atoll.client.controller import DONE, Builder, Controller, Result
from atoll.client.informer import object_key
from atoll.client.rest import resource_path

log = logging.getLogger(__name__)

#: objects whose going away (or finishing, for pods) gives quota back: (group, version, plural)
RELEASING = (("", "v1", "pods"), ("", "v1", "services"), ("", "v1", "configmaps"),
             ("", "v1", "secrets"), ("", "v1", "persistentvolumeclaims"),
             ("", "v1", "resourcequotas"), ("apps", "v1", "deployments"),
             ("apps", "v1", "replicasets"), ("apps", "v1", "statefulsets"),
             ("apps", "v1", "daemonsets"), ("batch", "v1", "jobs"),
             ("vmoperator.vmware.com", "v1alpha3", "virtualmachines"),
             ("vmoperator.vmware.com", "v1alpha6", "virtualmachinesnapshots"))
#: of those, the ones other controllers cache in full (the workload controllers, the root CA
#: publisher, this controller's quotas): the same informers, so one watch per resource; the
#: rest are metadata-only, as the garbage collector's
FULL = {"pods", "configmaps", "resourcequotas", "deployments", "replicasets", "statefulsets",
        "daemonsets", "jobs", "virtualmachines", "virtualmachinesnapshots"}


class ResourceQuotaController(Controller):
    """Usage is counted by live lists, not from the caches: the count must see every object
    admission charged before the quota was read, which a lagging cache may not hold yet."""

    name = "resourcequota"
    default_workers = 2
    backoff = (0.05, 5.0)

    def declare(self, b: Builder) -> None:
        self.quotas = b.watches("", "v1", "resourcequotas", self._quota_changed)
        for group, version, plural in RELEASING:
            b.watches(group, version, plural, partial(self._released, is_pod=plural == "pods"),
                      metadata_only=plural not in FULL)
        self._versions: dict[tuple[str, str], str] = {(g, p): v for g, v, p in RELEASING}

    def _quota_changed(self, kind: str, obj: dict[str, Any],
                       old: dict[str, Any] | None) -> Iterable[str]:
        """A new or changed quota is counted; admission's own charges are not recounted."""
        if kind == "DELETED":
            return []
        status = obj.get("status") or {}
        hard = (obj.get("spec") or {}).get("hard") or {}
        if status.get("hard") != hard or set(status.get("used") or {}) != set(hard) or \
                (old is not None and (old.get("spec") or {}) != (obj.get("spec") or {})):
            return [object_key(obj)]
        return []

    def _released(self, kind: str, obj: dict[str, Any], old: dict[str, Any] | None, *,
                  is_pod: bool) -> Iterable[str]:
        """An object gone, or a pod finished: every quota of its namespace counts again."""
        namespace = (obj.get("metadata") or {}).get("namespace")
        if not namespace:
            return []
        releases = kind == "DELETED" or (
            is_pod and old is not None and
            quotausage.pod_counts(old) and not quotausage.pod_counts(obj))
        if not releases:
            return []
        return self.quotas.index_keys(ix.NAMESPACE, namespace)

    async def reconcile(self, key: str) -> Result:
        namespace, _, name = key.partition("/")
        path = resource_path("", "v1", "resourcequotas", namespace, name)
        try:
            quota = await self.client.get(path)
        except errors.NotFound:
            return DONE
        hard = (quota.get("spec") or {}).get("hard") or {}
        used = await self.count(namespace, quota, list(hard))
        status = quota.get("status") or {}
        wanted = {"hard": hard, "used": {k: quotausage.format_quantity(used.get(k, Decimal(0)), k)
                                         for k in hard}}
        if status.get("hard") == wanted["hard"] and _same_amounts(status.get("used"),
                                                                  wanted["used"]):
            return DONE
        quota["status"] = wanted
        # written with the read's resourceVersion: a charge that landed meanwhile makes it a
        # Conflict, which the framework retries (the count is done again)
        await self.client.update(path + "/status", quota)
        return DONE

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
                        lambda _ns, n, found=classes or {}: found.get(n)).get(key, Decimal(0))
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


def _same_amounts(a: Any, b: dict[str, str]) -> bool:
    if not isinstance(a, dict) or set(a) != set(b):
        return False
    from atoll.api import quantity

    try:
        return all(quantity.parse(a[k]) == quantity.parse(b[k]) for k in b)
    except (ValueError, TypeError, ArithmeticError):
        return False
