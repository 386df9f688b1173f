"""ResourceQuota admission: a new object is charged to every quota of its namespace.

The charge is the quota's ``status.used`` plus what the object counts, written
with compare-and-swap on the quota in the same transaction that stores the
object (``ObjectService._store_new``).  Two creates racing for the last unit
both read the same quota revision; one commits, the other's transaction fails
as a whole and is charged again from the new state, and is refused.  That holds
with any number of API servers over one store.

A quota whose ``used`` does not yet list a resource (the controller has not
counted it) is counted here, from the watch cache, inside the same CAS.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from atoll.api import errors, quantity, quotausage
from atoll.api.resources.core_v1 import RESOURCEQUOTAS
from atoll.api.resources.vmoperator import VIRTUALMACHINECLASSES
from atoll.api.resourcetype import ResourceType
from atoll.api.strategy import ObjectReader
from atoll.storage.store import TxnOp


class QuotaAdmission:
    """Reads through ``ObjectReader`` like every plugin; its write is the one ``charges``
    returns, which the object service commits in the object's own transaction."""

    def charges(self, svc: ObjectReader, rt: ResourceType, obj: dict[str, Any]) -> list[TxnOp]:
        namespace = obj["metadata"].get("namespace") or ""
        if not rt.namespaced or not namespace:
            return []
        quotas = svc.read_list(RESOURCEQUOTAS, namespace)
        if not quotas:
            return []
        counted = quotausage.usage(rt.group, rt.plural, obj, vm_class_lookup(svc))
        return self._charge(svc, rt, obj, quotas, counted)

    def charges_update(self, svc: ObjectReader, rt: ResourceType, old: dict[str, Any],
                       new: dict[str, Any]) -> list[TxnOp]:
        """An update is charged what it adds: as upstream, only a claim's growing request
        (expansion) does; what it frees is the quota controller's to give back."""
        namespace = new["metadata"].get("namespace") or ""
        if rt.group or rt.plural != "persistentvolumeclaims" or not namespace:
            return []
        before = quotausage.usage(rt.group, rt.plural, old)
        grown = {k: v - before.get(k, Decimal(0))
                 for k, v in quotausage.usage(rt.group, rt.plural, new).items()
                 if v > before.get(k, Decimal(0))}
        if not grown:
            return []
        quotas = svc.read_list(RESOURCEQUOTAS, namespace)
        return self._charge(svc, rt, new, quotas, grown) if quotas else []

    def _charge(self, svc: ObjectReader, rt: ResourceType, obj: dict[str, Any],
                quotas: list[Any], counted: dict[str, Decimal]) -> list[TxnOp]:
        """The CAS writes adding ``counted`` to every quota of the namespace that tracks it."""
        if not counted:
            return []
        namespace = obj["metadata"].get("namespace") or ""
        ops: list[TxnOp] = []
        for cached in quotas:
            quota = orjson.loads(cached.raw)
            if not quotausage.quota_applies(quota, rt.group, rt.plural, obj):
                continue
            hard = (quota.get("spec") or {}).get("hard") or {}
            tracked = [k for k in hard if k in counted]
            if rt.group == "" and rt.plural == "pods":
                self._require_compute(obj, quota, hard)
            if not tracked:
                continue
            status = quota.setdefault("status", {})
            used = dict(status.get("used") or {})
            requested: dict[str, Decimal] = {}
            over: list[str] = []
            for key in tracked:
                current = (_parse(used[key]) if key in used
                           else self._count(svc, namespace, key, quota))
                requested[key] = counted[key]
                total = current + counted[key]
                if total > _parse(hard[key]):
                    over.append(key)
                used[key] = quotausage.format_quantity(total, key)
            if over:
                raise errors.Forbidden(
                    f'{rt.plural} "{obj["metadata"].get("name", "")}" is forbidden: exceeded '
                    f'quota: {quota["metadata"]["name"]}, requested: '
                    f'{quotausage.format_amounts({k: requested[k] for k in over})}, used: '
                    f'{_fmt_used(status.get("used") or {}, over)}, limited: '
                    f'{",".join(f"{k}={hard[k]}" for k in sorted(over))}',
                    name=obj["metadata"].get("name", ""), group=rt.group, kind=rt.plural)
            status["hard"] = hard
            status["used"] = used
            quota["metadata"].pop("resourceVersion", None)
            ops.append(TxnOp("update", cached.key, orjson.dumps(quota), cached.mod_revision))
        return ops

    @staticmethod
    def _require_compute(pod: dict[str, Any], quota: dict[str, Any], hard: dict[str, Any]) -> None:
        missing = quotausage.missing_compute(pod.get("spec") or {}, hard)
        if missing:
            detail = "; ".join(f"{k} for: {','.join(v)}" for k, v in sorted(missing.items()))
            raise errors.Forbidden(
                f'pods "{pod["metadata"].get("name", "")}" is forbidden: failed quota: '
                f'{quota["metadata"]["name"]}: must specify {detail}',
                name=pod["metadata"].get("name", ""), kind="pods")

    @staticmethod
    def _count(svc: ObjectReader, namespace: str, key: str, quota: dict[str, Any]) -> Decimal:
        total = Decimal(0)
        lookup = vm_class_lookup(svc)
        for group, plural in quotausage.kinds_for(key):
            rt = svc.resource(group, plural)
            if rt is None:
                continue
            for c in svc.read_list(rt, namespace):
                if c.obj["metadata"].get("namespace") != namespace or \
                        not quotausage.quota_applies(quota, group, plural, c.obj):
                    continue
                total += quotausage.usage(group, plural, c.obj, lookup).get(key, Decimal(0))
        return total


def vm_class_lookup(svc: ObjectReader) -> quotausage.ClassLookup:
    def lookup(namespace: str, name: str) -> dict[str, Any] | None:
        cached = svc.read(VIRTUALMACHINECLASSES, namespace, name)
        return cached.obj if cached else None
    return lookup


def _parse(value: Any) -> Decimal:
    try:
        return quantity.parse(value)
    except (ValueError, TypeError, ArithmeticError):
        return Decimal(0)


def _fmt_used(used: dict[str, Any], keys: list[str]) -> str:
    return ",".join(f"{k}={used.get(k, '0')}" for k in sorted(keys))
