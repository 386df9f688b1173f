"""What a kind's write rules see and override: the ``Strategy`` base, the options of one
write, and the read-only view of the stored objects they may consult.

``Strategy`` holds what every kind shares (upstream's generic registry behaviour);
each kind's module (``atoll.api.resources.*``) subclasses it to override only what
that kind does differently, as kube-apiserver's per-resource ``strategy.go`` files
do.  Strategies and admission plugins read other objects through ``ObjectReader``
only (the API server's ``ObjectService`` implements it); they never write.  The
generic write pipeline that calls them lives in ``atoll.apiserver.strategy``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from atoll.api import errors
from atoll.api.resourcetype import ResourceType


@dataclass
class WriteOptions:
    dry_run: bool = False
    field_manager: str = ""
    field_validation: str = "Warn"  # Strict | Warn | Ignore
    warnings: list[str] = field(default_factory=list)
    user: str = ""
    #: who asks (authn.UserInfo); None for the server's own writes, which admission trusts
    user_info: Any = None
    #: the request body was large: CPU-heavy bookkeeping (managed fields) runs on a worker
    #: thread, so one big write cannot stall the event loop for everyone else
    large: bool = False
    #: the version the client wrote in, when the server converts it to another to store it:
    #: what managedFields entries record (empty: the stored version)
    api_version: str = ""


class Stored(Protocol):
    """One object as the watch cache holds it."""

    key: str
    obj: dict[str, Any]
    raw: bytes
    mod_revision: int


class ObjectReader(Protocol):
    """The read-only view of stored objects that strategies and admission plugins get."""

    #: DefaultTolerationSeconds admission: how long pods stay on a not-ready node
    pod_toleration_seconds: int
    #: where Services' cluster IPs and node ports come from (api.resources.serviceaddresses)
    service_ranges: Any

    def read(self, rt: ResourceType, namespace: str, name: str) -> Stored | None:
        """The object, or None when there is none."""
        ...

    def read_list(self, rt: ResourceType, namespace: str = "") -> list[Stored]:
        """Every object of ``rt`` in ``namespace`` (all namespaces when empty), in key order."""
        ...

    def resource(self, group: str, plural: str) -> ResourceType | None:
        """The served resource type of ``group``/``plural`` (built-in or custom), if any."""
        ...


class Strategy:
    default_propagation = "Background"
    allow_create_on_update = False

    def prepare_create(self, svc: ObjectReader, rt: ResourceType, obj: dict[str, Any],
                       opts: WriteOptions) -> None:
        """Defaults and server-set fields on create."""

    def validate_create(self, svc: ObjectReader, rt: ResourceType, obj: dict[str, Any]) -> None:
        causes = self.validate(rt, obj)
        if causes:
            raise errors.invalid(rt.kind, obj["metadata"].get("name", ""), causes, rt.group)

    def validate_update(self, svc: ObjectReader, rt: ResourceType, old: dict[str, Any],
                        new: dict[str, Any]) -> None:
        causes = self.validate(rt, new) + self.validate_transition(rt, old, new)
        if causes:
            raise errors.invalid(rt.kind, new["metadata"].get("name", ""), causes, rt.group)

    def validate(self, rt: ResourceType, obj: dict[str, Any]) -> list[errors.Cause]:
        return []

    def validate_transition(self, rt: ResourceType, old: dict[str, Any],
                            new: dict[str, Any]) -> list[errors.Cause]:
        return []

    def prepare_update(self, rt: ResourceType, old: dict[str, Any], new: dict[str, Any],
                       subresource: str = "") -> None:
        """Kind-specific carry-over of server-owned fields on update."""

    def deletion_finalizers(self, rt: ResourceType, obj: dict[str, Any]) -> list[str]:
        return []

    def graceful_delete(self, rt: ResourceType, obj: dict[str, Any], grace: int | None) -> bool:
        """True when deletion first marks the object and someone else finishes it."""
        return False

    def deletion_grace(self, obj: dict[str, Any], grace: int | None) -> int:
        """``deletionGracePeriodSeconds`` to record when an object is marked for deletion."""
        return grace if grace is not None else 0

    def on_delete_marked(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        pass

    def ready_to_delete(self, obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        return bool(meta.get("deletionTimestamp")) and not meta.get("finalizers")


__all__ = ["ObjectReader", "Stored", "Strategy", "WriteOptions"]
