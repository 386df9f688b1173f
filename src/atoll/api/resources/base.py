"""``Kind``: everything one built-in kind declares in one place.

A kind's module (``core_v1``, ``apps_v1``, ...) declares, per kind, its resource type,
its strategy (defaults, validation, update rules), its table printer and the fields
field selectors may test.  Kinds that are served from a CustomResourceDefinition
(VM Operator's) or not served at all (ReplicationController, printed for clients that
send one) declare only what they add, under their ``<group>/<Kind>`` key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from atoll.api.printing import Printer
from atoll.api.resourcetype import ResourceType
from atoll.api.strategy import Strategy

FieldsFn = Callable[[dict[str, Any]], dict[str, str]]


@dataclass(frozen=True)
class Kind:
    #: the served resource type; None for kinds served from a CRD (or not served)
    rt: ResourceType | None
    strategy: Strategy | None = None
    printer: Printer | None = None
    #: selectable fields beyond metadata.name/namespace, with Go's zero values for missing ones
    fields: FieldsFn | None = None
    #: ``<group>/<Kind>`` when there is no ``rt``
    key: str = ""
    #: the kind's other served versions (``storage_version`` naming ``rt``'s), and how an
    #: object of any served version becomes another: ``convert(obj, "group/version")``
    other_versions: tuple[ResourceType, ...] = ()
    convert: Callable[[dict[str, Any], str], dict[str, Any]] | None = None

    @property
    def kind_key(self) -> str:
        return self.rt.kind_key if self.rt is not None else self.key


# -- field values as Go's field sets render them ----------------------------------------------------
def field_str(value: Any) -> str:
    """A Go string field: missing or non-string reads as ""."""
    return value if isinstance(value, str) else ""


def field_bool(value: Any) -> str:
    return "true" if value is True else "false"


def field_int(value: Any) -> str:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else "0"
