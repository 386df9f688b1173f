"""The pieces kinds' table printers are made of: columns, safe accessors, durations.

Each built-in kind declares its ``Printer`` (columns and a cells function) beside
its resource type in ``atoll.api.resources``; ``atoll.api.printers`` builds the
``meta.k8s.io/v1`` Table from them.  Columns and cell text mirror kube-apiserver's
printers (``pkg/printers/internalversion``).  A printer must never raise: objects
come from clients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from atoll.api import jsonpath
from atoll.api.labelselector import format_label_selector
from atoll.api.timestamps import parse_rfc3339, rfc3339

Cells = list[Any]
CellsFn = Callable[[dict[str, Any], float], Cells]


# -- durations and timestamps ---------------------------------------------------------------------
def human_duration(seconds: float) -> str:
    """apimachinery's ``duration.HumanDuration``: two significant units at most, coarser with age."""
    whole = int(seconds)  # Go truncates toward zero
    if whole < -1:
        return "<invalid>"
    if whole < 0:
        return "0s"
    if whole < 60 * 2:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 10:
        s = whole % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = whole // 3600
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if dy == 0 else f"{hours // 24 // 365}y{dy}d"
    return f"{hours // 24 // 365}y"


def since(value: Any, now: float) -> str:
    """translateTimestampSince: the age of a timestamp, ``<unknown>`` when there is none."""
    t = parse_rfc3339(value)
    return "<unknown>" if t is None else human_duration(now - t)


def created_at_cell(value: Any) -> str:
    """A timestamp as ``Created At`` cells show it: UTC, whole seconds (Go's zero time if unset)."""
    t = parse_rfc3339(value)
    if t is None:
        return "0001-01-01T00:00:00Z"
    return rfc3339(t)


# -- safe accessors (objects come from clients; a printer must never raise) -----------------------
def _get(obj: Any, *path: str | int) -> Any:
    for part in path:
        if isinstance(part, int):
            obj = obj[part] if isinstance(obj, list) and 0 <= part < len(obj) else None
        else:
            obj = obj.get(part) if isinstance(obj, dict) else None
        if obj is None:
            return None
    return obj


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return int(value)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _name(obj: dict[str, Any]) -> str:
    return _str(_get(obj, "metadata", "name"))


def _age(obj: dict[str, Any], now: float) -> str:
    return since(_get(obj, "metadata", "creationTimestamp"), now)


def _deleting(obj: dict[str, Any]) -> bool:
    return bool(_get(obj, "metadata", "deletionTimestamp"))


def format_labels(labels: Any) -> str:
    """labels.FormatLabels: ``a=b,c=d`` sorted by key, ``<none>`` when empty."""
    pairs = [f"{k}={v}" for k, v in sorted(_dict(labels).items()) if isinstance(v, str)]
    return ",".join(pairs) or "<none>"


def _containers_cells(obj: dict[str, Any]) -> list[str]:
    """Wide ``Containers`` and ``Images`` of a pod template."""
    containers = [c for c in _list(_get(obj, "spec", "template", "spec", "containers"))
                  if isinstance(c, dict)]
    return [",".join(_str(c.get("name")) for c in containers),
            ",".join(_str(c.get("image")) for c in containers)]


def _has_condition(status: dict[str, Any], type_: str) -> bool:
    return any(isinstance(c, dict) and c.get("type") == type_ and c.get("status") == "True"
               for c in _list(status.get("conditions")))


def _quantity(value: Any) -> str:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return jsonpath.to_text(value)
    return "0"


def _selector_string(sel: Any) -> str:
    """LabelSelectorAsSelector(...).String(), ``<invalid>`` when it can't be built."""
    formatted = format_label_selector(sel)
    if formatted == "<error>":
        return "<invalid>"
    return "" if formatted == "<none>" else formatted


# -- column definitions -----------------------------------------------------------------------------
NAME_DESC = ("Name must be unique within a namespace. Is required when creating resources, although "
             "some resources may allow a client to request the generation of an appropriate name "
             "automatically. Name is primarily intended for creation idempotence and configuration "
             "definition. Cannot be updated. More info: "
             "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names")

CREATED_DESC = ("CreationTimestamp is a timestamp representing the server time when this object was "
                "created. It is not guaranteed to be set in happens-before order across separate "
                "operations. Clients may not set this value. It is represented in RFC3339 form and "
                "is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: "
                "https://git.k8s.io/community/contributors/devel/sig-architecture/"
                "api-conventions.md#metadata")

TEMPLATE_CONTAINERS = "Names of each container in the template."

TEMPLATE_IMAGES = "Images referenced by each container in the template."


def column(name: str, type_: str = "string", description: str = "", *, fmt: str = "",
           priority: int = 0) -> dict[str, Any]:
    """One TableColumnDefinition; upstream serializes all five fields, empty or not."""
    return {"name": name, "type": type_, "format": fmt, "description": description,
            "priority": priority}


def _name_col() -> dict[str, Any]:
    return column("Name", description=NAME_DESC, fmt="name")


def _age_col() -> dict[str, Any]:
    return column("Age", description=CREATED_DESC)


def _wide(name: str, description: str = "") -> dict[str, Any]:
    return column(name, description=description, priority=1)


_WORKLOAD_WIDE = [_wide("Containers", TEMPLATE_CONTAINERS), _wide("Images", TEMPLATE_IMAGES)]


@dataclass(frozen=True)
class Printer:
    """A kind's table: its column definitions and the cells of one object's row.

    ``conditions`` gives the row conditions upstream attaches (finished pods: ``Completed``).
    """

    columns: list[dict[str, Any]]
    cells: CellsFn
    conditions: Callable[[dict[str, Any]], list[dict[str, str]]] | None = None


def printer(*, columns: list[dict[str, Any]]) -> Callable[[CellsFn], Printer]:
    """Decorator: the cells function below, with these columns, as a ``Printer``."""
    def make(fn: CellsFn) -> Printer:
        return Printer(columns, fn)
    return make


@printer(columns=[_name_col(), column("Created At", "date", CREATED_DESC)])
def created_at_printer(obj: dict[str, Any], now: float) -> Cells:
    """kube-apiserver's default table convertor: name and creation time as RFC3339."""
    return [_name(obj), created_at_cell(_get(obj, "metadata", "creationTimestamp"))]


#: what kinds without a printer of their own show: Name and Age
DEFAULT_PRINTER = Printer([_name_col(), _age_col()], lambda obj, now: [_name(obj), _age(obj, now)])
