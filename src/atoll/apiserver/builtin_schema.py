"""Decoding checks for built-in kinds against their upstream schemas.

kube-apiserver decodes JSON into Go structs: a value of the wrong JSON type is
a 400 (``cannot unmarshal``), and an unknown field is dropped, reported as a
warning, or refused, depending on ``fieldValidation``.  One leniency: a bool or
number where a string is expected is taken as its string (YAML's unquoted
``true``), where kube-apiserver would refuse it.  We walk the object
against the published schema to give the same answers, and prune unknown
fields as Go decoding would.
"""

from __future__ import annotations

from typing import Any

from atoll.api import errors, schemas
from atoll.api.resourcetype import ResourceType
from atoll.api.strategy import WriteOptions

MAX_DEPTH = 64
_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
               float: "number", type(None): "null"}


def check(rt: ResourceType, obj: dict[str, Any], opts: WriteOptions) -> None:

    root = schemas.schema_for(rt.group, rt.version, rt.kind)
    if root is None:
        return
    unknown: list[str] = []
    type_errors: list[str] = []
    coerced: list[str] = []
    _walk(obj, root, "", unknown, type_errors, 0, prune=opts.field_validation != "Strict",
          coerced=coerced)
    opts.warnings.extend(coerced)
    if type_errors:
        raise errors.BadRequest(f"{rt.kind} in version \"{rt.version}\" cannot be handled as a "
                                f"{rt.kind}: {type_errors[0]}")
    if not unknown or opts.field_validation == "Ignore":
        return
    messages = [f'unknown field "{p}"' for p in unknown]
    if opts.field_validation == "Strict":
        raise errors.BadRequest(f"{rt.kind} in version \"{rt.version}\" cannot be handled as a "
                                f"{rt.kind}: strict decoding error: " + ", ".join(messages))
    opts.warnings.extend(messages)


def _types(node: dict[str, Any]) -> set[str]:
    t = node.get("type")
    if isinstance(t, str):
        return {t}
    if isinstance(t, list):
        return set(t)
    return set()


def _walk(value: Any, node: dict[str, Any] | None, path: str, unknown: list[str],
          type_errors: list[str], depth: int, *, prune: bool,
          coerced: list[str] | None = None) -> None:

    if node is None or depth > MAX_DEPTH:
        return
    node = schemas.resolve(node)
    if node.get("format") == "int-or-string" or "oneOf" in node or "anyOf" in node \
            or node.get("x-kubernetes-int-or-string"):
        return
    types = _types(node)
    if value is None:
        return
    actual = _JSON_TYPES.get(type(value), "")
    if types and actual not in types:
        if not (actual == "integer" and "number" in types):
            if not (types == {"number"} and actual == "integer"):
                type_errors.append(f"json: cannot unmarshal {_go_json_type(actual)} into Go struct "
                                   f"field {path or '.'} of type {_go_type(types)}")
                return
    if isinstance(value, dict):
        props = node.get("properties")
        addl = node.get("additionalProperties")
        if props is None and addl is None:
            return  # free-form object (e.g. RawExtension)
        addl_takes_text = isinstance(addl, dict) and _takes_text(addl)
        for key in list(value):
            child = value[key]
            if child is None or isinstance(child, str):  # the common leaf: skip the call
                if props is not None and key in props:
                    if _takes_text(props[key]):
                        continue
                elif addl_takes_text:
                    continue
            child_path = f"{path}.{key}" if path else key
            if props is not None and key in props:
                value[key] = _coerce(value[key], props[key], child_path, coerced)
                _walk(value[key], props[key], child_path, unknown, type_errors, depth + 1,
                      prune=prune, coerced=coerced)
            elif isinstance(addl, dict):
                value[key] = _coerce(value[key], addl, child_path, coerced)
                _walk(value[key], addl, child_path, unknown, type_errors, depth + 1, prune=prune,
                      coerced=coerced)
            elif addl is True:
                continue
            elif depth == 0 and key in ("apiVersion", "kind"):
                continue
            else:
                unknown.append(child_path)
                if prune:
                    del value[key]
    elif isinstance(value, list):
        items = node.get("items")
        if isinstance(items, dict):
            items_take_text = _takes_text(items)
            for i, item in enumerate(value):
                if items_take_text and (item is None or isinstance(item, str)):
                    continue
                value[i] = _coerce(item, items, f"{path}[{i}]", coerced)
                _walk(value[i], items, f"{path}[{i}]", unknown, type_errors, depth + 1,
                      prune=prune, coerced=coerced)


def _takes_text(node: dict[str, Any]) -> bool:
    """Whether a string (or null) is always fine where ``node`` applies: what ``_walk`` would
    find for such a leaf, without walking it (maps of strings hold most of a large object)."""
    types = _types(schemas.resolve(node))
    return not types or "string" in types


def _coerce(value: Any, node: dict[str, Any] | None, path: str = "",
            notes: list[str] | None = None) -> Any:
    """A YAML scalar where a string is meant (``command: [true]``, ``value: 1``) becomes that string.

    kube-apiserver refuses these with "cannot unmarshal bool into ... of type
    string"; YAML writes them unquoted so easily that we take the value as written.
    """

    if isinstance(value, (bool, int, float)) and node is not None:
        types = _types(schemas.resolve(node))
        if types and types <= {"string", "null"}:
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, float) and value.is_integer():
                text = str(int(value))
            else:
                text = str(value)
            if notes is not None:
                notes.append(f'{path}: {text} is not a string; taken as "{text}" (quote it in '
                             "YAML)")
            return text
    return value


def _go_json_type(t: str) -> str:
    return {"integer": "number", "object": "object", "array": "array", "string": "string",
            "boolean": "bool", "number": "number"}.get(t, t)


def _go_type(types: set[str]) -> str:
    t = sorted(types - {"null"})
    return {"string": "string", "integer": "int", "number": "float64", "boolean": "bool",
            "object": "map", "array": "slice"}.get(t[0] if t else "", "value")
