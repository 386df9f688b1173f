"""A CRD version's ``openAPIV3Schema`` at work on custom resources.

``StructuralSchema`` does what the API server does to a custom resource on every
write: find unknown fields (for ``fieldValidation``), prune them, apply ``default``
values and validate the result (types, required, enum, bounds, lengths, patterns,
list types, ``anyOf``/``oneOf``/``allOf``/``not``).  Checking the definition itself
is ``atoll.api.crdschema``'s.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import re2

from atoll.api import errors
from atoll.api.errors import Cause

MAX_DEPTH = 64

MAX_PATTERN_LENGTH = 64 * 1024

_RE2_OPTIONS = re2.Options()

_ROOT_KEYS = ("apiVersion", "kind", "metadata")


class StructuralSchema:
    """One version's ``openAPIV3Schema``, applied to custom resources."""

    def __init__(self, schema: dict[str, Any]) -> None:
        if not isinstance(schema, dict):
            raise TypeError("openAPIV3Schema must be an object")
        self.raw = schema
        self._patterns: dict[str, Any] = {}
        self._enums: dict[int, set[Any]] = {}

    # unknown fields and pruning
    def unknown_fields(self, obj: dict[str, Any]) -> list[str]:
        found: list[str] = []
        self._walk_unknown(obj, self.raw, "", found, prune=False, depth=0, root=True)
        return found

    def prune(self, obj: dict[str, Any]) -> None:
        self._walk_unknown(obj, self.raw, "", [], prune=True, depth=0, root=True)

    def _walk_unknown(self, value: Any, node: dict[str, Any], path: str, found: list[str], *,
                      prune: bool, depth: int, root: bool = False) -> None:
        if depth > MAX_DEPTH or not isinstance(node, dict):
            return
        if isinstance(value, dict):
            if node.get("x-kubernetes-embedded-resource"):
                root = True
            props = node.get("properties")
            props = props if isinstance(props, dict) else {}
            addl = node.get("additionalProperties")
            preserve = bool(node.get("x-kubernetes-preserve-unknown-fields")) or addl is True
            for key in list(value):
                child_path = f"{path}.{key}" if path else key
                if root and key in _ROOT_KEYS:
                    continue
                if key in props:
                    self._walk_unknown(value[key], props[key], child_path, found, prune=prune,
                                       depth=depth + 1)
                elif isinstance(addl, dict):
                    self._walk_unknown(value[key], addl, child_path, found, prune=prune,
                                       depth=depth + 1)
                elif not preserve:
                    found.append(child_path)
                    if prune:
                        del value[key]
        elif isinstance(value, list):
            items = node.get("items")
            if isinstance(items, dict):
                for i, item in enumerate(value):
                    self._walk_unknown(item, items, f"{path}[{i}]", found, prune=prune,
                                       depth=depth + 1)

    # defaults
    def apply_defaults(self, obj: dict[str, Any]) -> None:
        self._default(obj, self.raw, 0)

    def _default(self, value: Any, node: Any, depth: int) -> None:
        if depth > MAX_DEPTH or not isinstance(node, dict):
            return
        if isinstance(value, dict):
            props = node.get("properties")
            if isinstance(props, dict):
                for key, child in props.items():
                    if not isinstance(child, dict):
                        continue
                    if "default" in child and (key not in value or
                                               (value[key] is None and not child.get("nullable"))):
                        value[key] = copy.deepcopy(child["default"])
                    if key in value:
                        self._default(value[key], child, depth + 1)
            addl = node.get("additionalProperties")
            if isinstance(addl, dict):
                for key in value:
                    if not (isinstance(props, dict) and key in props):
                        self._default(value[key], addl, depth + 1)
        elif isinstance(value, list) and isinstance(node.get("items"), dict):
            for item in value:
                self._default(item, node["items"], depth + 1)

    # validation
    def validate(self, obj: dict[str, Any]) -> list[Cause]:
        causes: list[Cause] = []
        self._validate(obj, self.raw, "", causes, 0, root=True)
        return causes

    def _validate(self, value: Any, node: Any, path: str, causes: list[Cause], depth: int, *,
                  root: bool = False) -> None:
        if depth > MAX_DEPTH or not isinstance(node, dict):
            return
        field = path or "<root>"
        if value is None:
            if not node.get("nullable") and node.get("type") and not root:
                causes.append(errors.invalid_value(field, "null", f"{field} in body must be of "
                                                   f"type {node['type']}: \"null\""))
            return
        if not self._check_type(value, node, field, causes):
            return
        self._check_enum(value, node, field, causes)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self._check_number(value, node, field, causes)
        elif isinstance(value, str):
            self._check_string(value, node, field, causes)
        elif isinstance(value, list):
            self._check_array(value, node, path, field, causes, depth)
        elif isinstance(value, dict):
            self._check_object(value, node, path, field, causes, depth, root)
        self._check_combinators(value, node, path, field, causes, depth)

    def _check_type(self, value: Any, node: dict[str, Any], field: str,
                    causes: list[Cause]) -> bool:
        if node.get("x-kubernetes-int-or-string"):
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                causes.append(errors.invalid_value(field, _jsontype(value), f"{field} in body "
                                                   "must be of type integer-or-string"))
                return False
            return True
        t = node.get("type")
        if not t or _type_ok(value, t):
            return True
        causes.append(errors.invalid_value(field, _jsontype(value),
                                           f"{field} in body must be of type {t}: "
                                           f"\"{_jsontype(value)}\""))
        return False

    def _check_enum(self, value: Any, node: dict[str, Any], field: str,
                    causes: list[Cause]) -> None:
        enum = node.get("enum")
        if not isinstance(enum, list):
            return
        allowed = self._enums.get(id(enum))
        if allowed is None:  # the schema lives as long as self: its lists' ids stay theirs
            allowed = self._enums[id(enum)] = {_canonical(e) for e in enum}
        if _canonical(value) not in allowed:
            causes.append(errors.not_supported(field, value, [_enum_str(e) for e in enum[:100]]))

    @staticmethod
    def _check_number(value: float, node: dict[str, Any], field: str,
                      causes: list[Cause]) -> None:
        maximum, minimum = node.get("maximum"), node.get("minimum")
        if isinstance(maximum, (int, float)):
            if node.get("exclusiveMaximum") and value >= maximum:
                causes.append(errors.invalid_value(field, value, f"{field} in body should be less "
                                                   f"than {maximum}"))
            elif value > maximum:
                causes.append(errors.invalid_value(field, value, f"{field} in body should be less "
                                                   f"than or equal to {maximum}"))
        if isinstance(minimum, (int, float)):
            if node.get("exclusiveMinimum") and value <= minimum:
                causes.append(errors.invalid_value(field, value, f"{field} in body should be "
                                                   f"greater than {minimum}"))
            elif value < minimum:
                causes.append(errors.invalid_value(field, value, f"{field} in body should be "
                                                   f"greater than or equal to {minimum}"))
        multiple = node.get("multipleOf")
        if isinstance(multiple, (int, float)) and multiple > 0 and value % multiple:
            causes.append(errors.invalid_value(field, value, f"{field} in body should be a "
                                               f"multiple of {multiple}"))

    def _check_string(self, value: str, node: dict[str, Any], field: str,
                      causes: list[Cause]) -> None:
        max_len, min_len = node.get("maxLength"), node.get("minLength")
        if isinstance(max_len, int) and len(value) > max_len:
            causes.append(Cause("FieldValueTooLong",
                                f"Too long: may not be more than {max_len} bytes", field))
        if isinstance(min_len, int) and len(value) < min_len:
            causes.append(errors.invalid_value(field, value, f"{field} in body should be at "
                                               f"least {min_len} chars long"))
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            compiled = self._pattern(pattern)
            if compiled is not None and not compiled.search(value):
                causes.append(errors.invalid_value(field, value, f"{field} in body should match "
                                                   f"'{pattern}'"))

    def _pattern(self, pattern: str) -> Any:
        if pattern not in self._patterns:
            try:
                self._patterns[pattern] = compile_pattern(pattern)
            except re2.error:
                self._patterns[pattern] = None
        return self._patterns[pattern]

    def _check_array(self, value: list[Any], node: dict[str, Any], path: str, field: str,
                     causes: list[Cause], depth: int) -> None:
        max_items, min_items = node.get("maxItems"), node.get("minItems")
        if isinstance(max_items, int) and len(value) > max_items:
            causes.append(Cause("FieldValueTooMany",
                                f"Too many: {len(value)}: must have at most {max_items} items",
                                field))
        if isinstance(min_items, int) and len(value) < min_items:
            causes.append(errors.invalid_value(field, len(value), f"{field} in body should have "
                                               f"at least {min_items} items"))
        list_type = node.get("x-kubernetes-list-type")
        if list_type == "set":  # sets of canonical forms keep this linear in the list
            seen: set[Any] = set()
            for i, item in enumerate(value):
                ident = _canonical(item)
                if ident in seen:
                    causes.append(Cause("FieldValueDuplicate",
                                        f"Duplicate value: {_enum_str(item)}", f"{field}[{i}]"))
                seen.add(ident)
        elif list_type == "map":
            keys = node.get("x-kubernetes-list-map-keys") or []
            seen_keys: set[Any] = set()
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    ident = _canonical([item.get(k) for k in keys])
                    if ident in seen_keys:
                        causes.append(Cause("FieldValueDuplicate", "Duplicate value: " +
                                            str({k: item.get(k) for k in keys}), f"{field}[{i}]"))
                    seen_keys.add(ident)
        items = node.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                self._validate(item, items, f"{path}[{i}]", causes, depth + 1)

    def _check_object(self, value: dict[str, Any], node: dict[str, Any], path: str, field: str,
                      causes: list[Cause], depth: int, root: bool) -> None:
        required = node.get("required")
        if isinstance(required, list):
            for name in required:
                if isinstance(name, str) and name not in value:
                    causes.append(errors.required(f"{path}.{name}" if path else name))
        max_props, min_props = node.get("maxProperties"), node.get("minProperties")
        if isinstance(max_props, int) and len(value) > max_props:
            causes.append(Cause("FieldValueTooMany", f"Too many: {len(value)}: must have at most "
                                f"{max_props} items", field))
        if isinstance(min_props, int) and len(value) < min_props:
            causes.append(errors.invalid_value(field, len(value), f"{field} in body should have "
                                               f"at least {min_props} properties"))
        props = node.get("properties")
        props = props if isinstance(props, dict) else {}
        addl = node.get("additionalProperties")
        for key, child in value.items():
            child_path = f"{path}.{key}" if path else key
            if root and key in _ROOT_KEYS:
                continue
            if key in props:
                self._validate(child, props[key], child_path, causes, depth + 1)
            elif isinstance(addl, dict):
                self._validate(child, addl, child_path, causes, depth + 1)

    def _check_combinators(self, value: Any, node: dict[str, Any], path: str, field: str,
                           causes: list[Cause], depth: int) -> None:
        def fails(branch: Any) -> list[Cause]:
            found: list[Cause] = []
            self._validate(value, branch, path, found, depth + 1)
            return found

        for branch in _as_list(node.get("allOf")):
            causes.extend(fails(branch))
        any_of = _as_list(node.get("anyOf"))
        if any_of and all(fails(b) for b in any_of):
            causes.append(errors.invalid_value(field, _jsontype(value),
                                               f"{field} in body must match at least one schema "
                                               "in anyOf"))
        one_of = _as_list(node.get("oneOf"))
        if one_of and sum(1 for b in one_of if not fails(b)) != 1:
            causes.append(errors.invalid_value(field, _jsontype(value),
                                               f"{field} in body must match exactly one schema "
                                               "in oneOf"))
        if isinstance(node.get("not"), dict) and not fails(node["not"]):
            causes.append(errors.invalid_value(field, _jsontype(value),
                                               f"{field} in body must not match the schema in "
                                               "not"))


def _canonical(value: Any) -> Any:
    """A hashable form of a JSON value, equal for values Python's ``==`` finds equal."""
    if isinstance(value, (dict, list)):
        try:
            return ("\0json", orjson.dumps(value, option=orjson.OPT_SORT_KEYS))
        except TypeError:  # too deep to encode: compare by identity
            return ("\0id", id(value))
    return value


def _as_list(value: Any) -> list[Any]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _type_ok(value: Any, t: str) -> bool:
    if t == "object":
        return isinstance(value, dict)
    if t == "array":
        return isinstance(value, list)
    if t == "string":
        return isinstance(value, str)
    if t == "boolean":
        return isinstance(value, bool)
    if t == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or \
            (isinstance(value, float) and value.is_integer())
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return True


def _jsontype(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _enum_str(value: Any) -> str:
    return value if isinstance(value, str) else str(value).lower() if isinstance(value, bool) \
        else str(value)


def compile_pattern(pattern: str) -> Any:
    """A schema ``pattern`` compiled with RE2, as Go's regexp compiles it upstream: matching
    takes time linear in the input, whatever the pattern (no backtracking to exploit)."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise re2.error(f"pattern longer than {MAX_PATTERN_LENGTH} characters")
    return re2.compile(pattern, options=_RE2_OPTIONS)


def pattern_error(pattern: Any) -> str:
    """Why RE2 (Go's syntax) cannot compile ``pattern``; empty when it can."""
    if not isinstance(pattern, str):
        return "must be a string"
    try:
        compile_pattern(pattern)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else ""
        return "error parsing regexp: " + (detail.decode("utf-8", "replace")
                                           if isinstance(detail, bytes) else str(detail))
    return ""
