"""Label and field selectors, parsed and matched the way apimachinery does, and the fields
each kind exposes to field selectors.

The grammars live in ``atoll.api.labelselector`` (``k8s.io/apimachinery/pkg/labels``)
and ``atoll.api.fieldselector`` (``pkg/fields``); this module is their common face.
Which fields a built-in kind exposes is declared beside the kind
(``atoll.api.resources``), with Go's zero values for missing fields (``"0"``,
``"false"``, ``""``) because JSON omits exactly those; ``field_set`` adds the
metadata fields every kind has.
"""

from __future__ import annotations

from typing import Any

from atoll.api import resources
from atoll.api.fieldselector import FieldSelector, parse_field_selector, unescape_field_value
from atoll.api.labelselector import (
    EXISTS, DOES_NOT_EXIST, EQUALS, DOUBLE_EQUALS, NOT_EQUALS, IN, NOT_IN, GREATER_THAN,
    LESS_THAN, BINARY_OPERATORS, Requirement, LabelSelector, new_requirement,
    parse_label_selector, label_selector_from_dict, selector_to_string, format_label_selector,
    validate_label_selector,
)


def _get(obj: Any, *path: str | int) -> Any:
    for part in path:
        if isinstance(part, int):
            if not isinstance(obj, list) or len(obj) <= part:
                return None
            obj = obj[part]
        elif isinstance(obj, dict):
            obj = obj.get(part)
        else:
            return None
    return obj


def _s(value: Any) -> str:
    """A Go string field: missing or non-string reads as ""."""
    return value if isinstance(value, str) else ""


_META_FIELDS = ("metadata.name", "metadata.namespace")


def _meta_fields(obj: Any) -> dict[str, str]:
    return {"metadata.name": _s(_get(obj, "metadata", "name")),
            "metadata.namespace": _s(_get(obj, "metadata", "namespace"))}


def field_set(kind_key: str, obj: dict[str, Any]) -> dict[str, str]:
    """Everything a field selector may test on ``obj`` (kind_key is ``<group>/<Kind>``)."""
    out = _meta_fields(obj)
    extra = resources.fields_for(kind_key)
    if extra is not None and isinstance(obj, dict):
        out.update(extra(obj))
    return out


_SUPPORTED: dict[str, frozenset[str]] = {}


def supported_fields(kind_key: str) -> set[str]:
    """Field names the server accepts in ``fieldSelector`` for this kind."""
    if kind_key not in _SUPPORTED:
        _SUPPORTED[kind_key] = frozenset(field_set(kind_key, {}))
    return set(_SUPPORTED[kind_key])


def custom_field_set(obj: dict[str, Any], selectable_json_paths: list[str]) -> dict[str, str]:
    """Fields of a custom resource: metadata plus the CRD's ``selectableFields`` (``.spec.color``)."""
    out = _meta_fields(obj)
    for path in selectable_json_paths or []:
        if not isinstance(path, str) or not path:
            continue
        name = path.lstrip(".")
        out[name] = _scalar_text(_get(obj, *[p for p in name.split(".") if p]))
    return out


def _scalar_text(value: Any) -> str:
    """Selectable CRD fields are strings, integers or booleans; anything else reads as ""."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int)):
        return str(value)
    return ""


__all__ = [
    "BINARY_OPERATORS",
    "DOES_NOT_EXIST",
    "DOUBLE_EQUALS",
    "EQUALS",
    "EXISTS",
    "GREATER_THAN",
    "IN",
    "LESS_THAN",
    "NOT_EQUALS",
    "NOT_IN",
    "FieldSelector",
    "LabelSelector",
    "Requirement",
    "custom_field_set",
    "field_set",
    "format_label_selector",
    "label_selector_from_dict",
    "new_requirement",
    "parse_field_selector",
    "parse_label_selector",
    "selector_to_string",
    "supported_fields",
    "unescape_field_value",
    "validate_label_selector"
]
