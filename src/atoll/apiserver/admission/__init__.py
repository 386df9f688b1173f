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

    def __init__(self, plugins: list[Plugin] | None = None, quota: Any = None) -> None:
        self.plugins: list[Plugin] = list(plugins or [])
        self.quota = quota

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
