"""Admission: what runs between a request being understood and it being stored.

Plugins run in upstream's order: mutating ones (LimitRange defaults) while the
object is prepared, then validating ones (pod security, node restriction, RBAC
escalation, VM Operator namespace bindings, LimitRange bounds), and last the
ResourceQuota charge, which is written in the same store transaction as the
object itself so that a quota can never be overrun, however many requests race.

Plugins see the stored objects through ``ObjectReader`` (``atoll.api.strategy``) and
never write; the one that needs a write, the quota, says so: ``charges`` returns the
writes to commit with the object, and the object service commits them.
"""

from __future__ import annotations

from typing import Any, Protocol

from atoll.api.resourcetype import ResourceType
from atoll.api.strategy import ObjectReader, WriteOptions
from atoll.apiserver import strategy
from atoll.apiserver.admission.webhooks import Attributes
from atoll.storage.store import TxnOp


class Plugin(Protocol):
    def mutate_create(self, svc: ObjectReader, rt: ResourceType, obj: dict[str, Any],
                      opts: WriteOptions) -> None: ...

    def validate_create(self, svc: ObjectReader, rt: ResourceType, obj: dict[str, Any],
                        opts: WriteOptions) -> None: ...

    def validate_update(self, svc: ObjectReader, rt: ResourceType, old: dict[str, Any],
                        new: dict[str, Any], opts: WriteOptions, subresource: str) -> None: ...

    def validate_delete(self, svc: ObjectReader, rt: ResourceType, obj: dict[str, Any],
                        opts: WriteOptions) -> None: ...


class BasePlugin:
    """Every hook a no-op: plugins override the ones they need."""

    def mutate_create(self, svc: ObjectReader, rt: ResourceType, obj: dict[str, Any],
                      opts: WriteOptions) -> None:
        pass

    def validate_create(self, svc: ObjectReader, rt: ResourceType, obj: dict[str, Any],
                        opts: WriteOptions) -> None:
        pass

    def validate_update(self, svc: ObjectReader, rt: ResourceType, old: dict[str, Any],
                        new: dict[str, Any], opts: WriteOptions, subresource: str) -> None:
        pass

    def validate_delete(self, svc: ObjectReader, rt: ResourceType, obj: dict[str, Any],
                        opts: WriteOptions) -> None:
        pass


class Admission:
    """The chain; without plugins (tools, tests of the store) it admits everything."""

    def __init__(self, plugins: list[Plugin] | None = None, quota: Any = None,
                 webhooks: Any = None) -> None:
        self.plugins: list[Plugin] = list(plugins or [])
        self.quota = quota
        #: dynamic admission (``admission.webhooks.Webhooks``), after every built-in plugin
        self.webhooks = webhooks

    # -- admission webhooks: after the built-in chain; a mutated object is checked again ------
    async def admit_create(self, svc: Any, rt: ResourceType, obj: dict[str, Any],
                           opts: WriteOptions, options: dict[str, Any]) -> dict[str, Any]:
        if self.webhooks is None:
            return obj
        meta = obj["metadata"]
        a = Attributes("CREATE", rt, meta.get("namespace", ""), meta.get("name", ""), "", obj,
                       None, opts, options)
        new, changed = await self.webhooks.mutate(svc, a)
        if changed and new is not None:
            strategy.decode_check(rt, new, opts)
            strategy.validate_common(svc, rt, new, opts)
            strategy.for_type(rt).validate_create(svc, rt, new)
            self.validate_create(svc, rt, new, opts)
            a.obj = obj = new
        await self.webhooks.validate(svc, a)
        return obj

    async def admit_update(self, svc: Any, rt: ResourceType, old: dict[str, Any],
                           new: dict[str, Any], opts: WriteOptions, subresource: str,
                           options: dict[str, Any]) -> dict[str, Any]:
        if self.webhooks is None:
            return new
        meta = old["metadata"]
        a = Attributes("UPDATE", rt, meta.get("namespace", ""), meta.get("name", ""),
                       subresource, new, old, opts, options)
        mutated, changed = await self.webhooks.mutate(svc, a)
        if changed and mutated is not None:
            strategy.prepare_update(svc, rt, old, mutated, opts, subresource=subresource)
            strategy.for_type(rt).validate_update(svc, rt, old, mutated)
            self.validate_update(svc, rt, old, mutated, opts, subresource)
            a.obj = new = mutated
        await self.webhooks.validate(svc, a)
        return new

    async def admit_delete(self, svc: Any, rt: ResourceType, obj: dict[str, Any],
                           opts: WriteOptions, options: dict[str, Any]) -> None:
        if self.webhooks is None:
            return
        meta = obj["metadata"]
        a = Attributes("DELETE", rt, meta.get("namespace", ""), meta.get("name", ""), "", None,
                       obj, opts, options)
        await self.webhooks.mutate(svc, a)
        await self.webhooks.validate(svc, a)

    def mutate_create(self, svc: ObjectReader, rt: ResourceType, obj: dict[str, Any],
                      opts: WriteOptions) -> None:
        for p in self.plugins:
            p.mutate_create(svc, rt, obj, opts)

    def validate_create(self, svc: ObjectReader, rt: ResourceType, obj: dict[str, Any],
                        opts: WriteOptions) -> None:
        for p in self.plugins:
            p.validate_create(svc, rt, obj, opts)
        if self.quota is not None and opts.dry_run:
            self.quota.charges(svc, rt, obj)  # a dry run is refused as the real one would be

    def validate_update(self, svc: ObjectReader, rt: ResourceType, old: dict[str, Any],
                        new: dict[str, Any], opts: WriteOptions, subresource: str) -> None:
        for p in self.plugins:
            p.validate_update(svc, rt, old, new, opts, subresource)

    def validate_delete(self, svc: ObjectReader, rt: ResourceType, obj: dict[str, Any],
                        opts: WriteOptions) -> None:
        for p in self.plugins:
            p.validate_delete(svc, rt, obj, opts)

    def charges(self, svc: ObjectReader, rt: ResourceType, obj: dict[str, Any]) -> list[TxnOp]:
        """Quota writes to commit with the new object (raises Forbidden when over quota)."""
        if self.quota is None:
            return []
        return self.quota.charges(svc, rt, obj)

    def charges_update(self, svc: ObjectReader, rt: ResourceType, old: dict[str, Any],
                       new: dict[str, Any]) -> list[TxnOp]:
        """Quota writes to commit with an update (a claim's grown request)."""
        if self.quota is None:
            return []
        return self.quota.charges_update(svc, rt, old, new)
