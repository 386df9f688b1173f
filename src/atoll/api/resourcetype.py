"""What one group/version/resource is: the data every part of the server routes, stores,
validates, discovers and prints by.

Built-in kinds declare theirs in ``atoll.api.resources``; custom resources get one built
from their CustomResourceDefinition by ``apiserver.crds``.  Storage keys come from here
(``key``/``prefix``), never from hand-written ``/registry/...`` strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

SUB_VERBS = ("get", "patch", "update")
#: a proxy subresource relays every method (upstream's "connect" verbs)
PROXY_VERBS = ("create", "delete", "get", "patch", "update")


@dataclass(frozen=True)
class Subresource:
    """A ``<plural>/<name>`` endpoint; ``kind`` and ``group``/``version`` of its body."""

    name: str
    kind: str = ""  # empty: same kind as the parent
    group: str | None = None
    version: str | None = None
    verbs: tuple[str, ...] = SUB_VERBS


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[Subresource, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    name_rule: str = "subdomain"
    #: kinds whose writes bump ``metadata.generation`` when anything but metadata/status changes
    generation: bool = True
    #: the version objects are stored in (differs from ``version`` for multi-version CRDs)
    storage_version: str = ""
    #: for custom resources: the CRD-derived schema/printing data (see apiserver.crds)
    custom: Any = None
    #: per-kind extra data (scale paths etc.)
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def kind_key(self) -> str:
        """``<group>/<Kind>``: the key printers and field selectors are indexed by."""
        return f"{self.group}/{self.kind}"

    @property
    def qualified(self) -> str:
        """``plural.group`` as in upstream messages (``deployments.apps "x" not found``)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def list_kind(self) -> str:
        if self.custom is not None and getattr(self.custom, "list_kind", ""):
            return self.custom.list_kind
        return f"{self.kind}List"

    @property
    def store_prefix(self) -> str:
        """Key prefix of every object of this resource (all versions share it)."""
        return f"/registry/{self.group or 'core'}/{self.plural}/"

    def key(self, namespace: str, name: str) -> str:
        if self.namespaced:
            return f"{self.store_prefix}{namespace}/{name}"
        return f"{self.store_prefix}{name}"

    def prefix(self, namespace: str = "") -> str:
        if self.namespaced and namespace:
            return f"{self.store_prefix}{namespace}/"
        return self.store_prefix

    def subresource(self, name: str) -> Subresource | None:
        for sub in self.subresources:
            if sub.name == name:
                return sub
        return None

    @property
    def has_status(self) -> bool:
        return self.subresource("status") is not None


def builtin(group: str, version: str, kind: str, plural: str, namespaced: bool,
            **kw: Any) -> ResourceType:
    """A built-in kind's resource type (``singular`` defaults to the lower-case kind)."""
    kw.setdefault("singular", kind.lower())
    return ResourceType(group, version, kind, plural, namespaced, **kw)


STATUS = Subresource("status")
SCALE = Subresource("scale", kind="Scale", group="autoscaling", version="v1")

STANDARD_FINALIZERS = frozenset({"kubernetes", "orphan", "foregroundDeletion"})
