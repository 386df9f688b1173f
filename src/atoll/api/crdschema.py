"""CustomResourceDefinitions: checking a definition, and its schemas at work.

``check_crd`` refuses definitions apiextensions refuses (names, versions,
non-structural schemas) with the same field paths.  ``StructuralSchema`` does
what the API server does to a custom resource on every write: find unknown
fields (for ``fieldValidation``), prune them, apply ``default`` values and
validate the result (types, required, enum, bounds, lengths, patterns, list
types, ``anyOf``/``oneOf``/``allOf``/``not``).  ``openapi_v3_for_crd_version``
publishes a version's schema for ``kubectl explain`` and client validation.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import re2

from atoll.api import errors, validation
from atoll.api.errors import Cause

MAX_DEPTH = 64
#: patterns are compiled on every API server; Go's regexp has no length limit, RE2 a memory one
MAX_PATTERN_LENGTH = 64 * 1024
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is the client's error, not a server log line
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
LIST_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"
_TYPES = ("object", "array", "string", "integer", "number", "boolean")
_PRINTER_TYPES = ("integer", "number", "string", "boolean", "date")
_ROOT_KEYS = ("apiVersion", "kind", "metadata")


# -- the definition itself ------------------------------------------------------------------------
def default_crd(crd: dict[str, Any]) -> dict[str, Any]:
    """A copy with apiextensions' defaults: singular, listKind, conversion strategy."""
    out = copy.deepcopy(crd)
    spec = out.get("spec")
    if not isinstance(spec, dict):
        return out
    names = spec.get("names")
    if isinstance(names, dict) and isinstance(names.get("kind"), str):
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", names["kind"] + "List")
    if not isinstance(spec.get("conversion"), dict):
        spec["conversion"] = {"strategy": "None"}
    return out


def check_crd(crd: dict[str, Any]) -> list[Cause]:
    """Why apiextensions would refuse this definition (empty when it is fine)."""
    spec = crd.get("spec")
    if not isinstance(spec, dict):
        return [errors.required("spec")]
    causes: list[Cause] = []
    group = spec.get("group")
    names = spec.get("names") if isinstance(spec.get("names"), dict) else {}
    if not isinstance(spec.get("names"), dict):
        causes.append(errors.required("spec.names"))
    if not isinstance(group, str) or not group:
        causes.append(errors.required("spec.group"))
    else:
        problems = validation.is_dns1123_subdomain(group)
        if problems:
            causes.append(errors.invalid_value("spec.group", group, "; ".join(problems)))
        elif "." not in group:
            causes.append(errors.invalid_value("spec.group", group,
                                               "should be a domain with at least one dot"))
    causes += _check_names(names)
    name = (crd.get("metadata") or {}).get("name")
    plural = names.get("plural")
    if isinstance(plural, str) and isinstance(group, str) and name != f"{plural}.{group}":
        causes.append(errors.invalid_value("metadata.name", name,
                                           'must be spec.names.plural+"."+spec.group'))
    scope = spec.get("scope")
    if scope not in ("Namespaced", "Cluster"):
        causes.append(errors.required("spec.scope") if scope is None else
                      errors.not_supported("spec.scope", scope, ["Cluster", "Namespaced"]))
    causes += _check_versions(spec.get("versions"))
    conversion = spec.get("conversion") or {}
    strategy = conversion.get("strategy") if isinstance(conversion, dict) else None
    if strategy not in (None, "None"):
        causes.append(errors.not_supported("spec.conversion.strategy", strategy, ["None"]))
    return causes


def _check_names(names: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    for field in ("plural", "singular"):
        value = names.get(field)
        if value is None and field == "singular":
            continue
        if not isinstance(value, str) or not value:
            causes.append(errors.required(f"spec.names.{field}"))
            continue
        problems = validation.is_dns1035_label(value)
        if problems:
            causes.append(errors.invalid_value(f"spec.names.{field}", value, "; ".join(problems)))
    for field in ("kind", "listKind"):
        value = names.get(field)
        if value is None and field == "listKind":
            continue
        if not isinstance(value, str) or not value:
            causes.append(errors.required(f"spec.names.{field}"))
        elif validation.is_dns1035_label(value.lower()):
            causes.append(errors.invalid_value(
                f"spec.names.{field}", value,
                "may have mixed case, but should otherwise match: [a-z]([-a-z0-9]*[a-z0-9])?"))
    for field in ("shortNames", "categories"):
        values = names.get(field)
        if values is None:
            continue
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            causes.append(errors.invalid_value(f"spec.names.{field}", values,
                                               "must be a list of strings"))
            continue
        for i, v in enumerate(values):
            problems = validation.is_dns1035_label(v)
            if problems:
                causes.append(errors.invalid_value(f"spec.names.{field}[{i}]", v,
                                                   "; ".join(problems)))
    return causes


def _check_versions(versions: Any) -> list[Cause]:
    if not isinstance(versions, list) or not versions:
        return [errors.required("spec.versions")]
    causes: list[Cause] = []
    seen: set[str] = set()
    storage = 0
    for i, v in enumerate(versions):
        path = f"spec.versions[{i}]"
        if not isinstance(v, dict):
            causes.append(errors.invalid_value(path, v, "must be an object"))
            continue
        name = v.get("name")
        if not isinstance(name, str) or not name:
            causes.append(errors.required(f"{path}.name"))
        else:
            problems = validation.is_dns1035_label(name)
            if problems:
                causes.append(errors.invalid_value(f"{path}.name", name, "; ".join(problems)))
            if name in seen:
                causes.append(Cause("FieldValueDuplicate", f'Duplicate value: "{name}"',
                                    f"{path}.name"))
            seen.add(name)
        for flag in ("served", "storage"):
            if not isinstance(v.get(flag), bool):
                causes.append(errors.required(f"{path}.{flag}"))
        if v.get("storage") is True:
            storage += 1
        schema = (v.get("schema") or {}).get("openAPIV3Schema") \
            if isinstance(v.get("schema"), dict) else None
        if schema is None:
            causes.append(Cause("FieldValueRequired", "Required value: schemas are required",
                                f"{path}.schema.openAPIV3Schema"))
        else:
            causes += check_structural(schema, f"{path}.schema.openAPIV3Schema")
        causes += _check_columns(v.get("additionalPrinterColumns"), path)
        causes += _check_subresources(v.get("subresources"), path)
    if storage != 1:
        causes.append(errors.invalid_value("spec.versions", storage,
                                           "must have exactly one version marked as storage "
                                           "version"))
    return causes


def _check_columns(columns: Any, path: str) -> list[Cause]:
    if columns is None:
        return []
    if not isinstance(columns, list):
        return [errors.invalid_value(f"{path}.additionalPrinterColumns", columns,
                                     "must be a list")]
    causes: list[Cause] = []
    for i, col in enumerate(columns):
        p = f"{path}.additionalPrinterColumns[{i}]"
        if not isinstance(col, dict):
            causes.append(errors.invalid_value(p, col, "must be an object"))
            continue
        if not col.get("name"):
            causes.append(errors.required(f"{p}.name"))
        if col.get("type") not in _PRINTER_TYPES:
            causes.append(errors.not_supported(f"{p}.type", col.get("type"), list(_PRINTER_TYPES)))
        if not isinstance(col.get("jsonPath"), str) or not col["jsonPath"]:
            causes.append(errors.required(f"{p}.jsonPath"))
    return causes


def _check_subresources(subs: Any, path: str) -> list[Cause]:
    if not isinstance(subs, dict):
        return []
    scale = subs.get("scale")
    if scale is None:
        return []
    p = f"{path}.subresources.scale"
    if not isinstance(scale, dict):
        return [errors.invalid_value(p, scale, "must be an object")]
    causes: list[Cause] = []
    spec_path = scale.get("specReplicasPath")
    if not isinstance(spec_path, str) or not spec_path:
        causes.append(errors.required(f"{p}.specReplicasPath"))
    elif not spec_path.startswith(".spec."):
        causes.append(errors.invalid_value(f"{p}.specReplicasPath", spec_path,
                                           "should be a json path under .spec"))
    status_path = scale.get("statusReplicasPath")
    if not isinstance(status_path, str) or not status_path:
        causes.append(errors.required(f"{p}.statusReplicasPath"))
    elif not status_path.startswith(".status."):
        causes.append(errors.invalid_value(f"{p}.statusReplicasPath", status_path,
                                           "should be a json path under .status"))
    return causes


def check_structural(schema: Any, path: str) -> list[Cause]:
    """The structural-schema rules apiextensions enforces on ``openAPIV3Schema``."""
    if not isinstance(schema, dict):
        return [errors.invalid_value(path, schema, "must be an object")]
    causes: list[Cause] = []
    if schema.get("type") != "object" and not schema.get("x-kubernetes-preserve-unknown-fields"):
        causes.append(errors.invalid_value(f"{path}.type", schema.get("type", ""),
                                           "must be object at the root"))
    _check_node(schema, path, causes, 0, root=True)
    return causes


def _check_node(node: Any, path: str, causes: list[Cause], depth: int, *, root: bool = False,
                specified: bool = True) -> None:
    if depth > MAX_DEPTH:
        causes.append(errors.invalid_value(path, "...", "the schema is nested too deeply"))
        return
    if not isinstance(node, dict):
        causes.append(errors.invalid_value(path, node, "must be an object"))
        return
    t = node.get("type")
    free = node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
    if t is None and specified and not free:
        causes.append(Cause("FieldValueRequired",
                            "Required value: must not be empty for specified object fields"
                            if not root else "Required value", f"{path}.type"))
    elif t is not None and t not in _TYPES:
        causes.append(errors.not_supported(f"{path}.type", t, list(_TYPES)))
    if node.get("x-kubernetes-int-or-string") and t is not None:
        causes.append(errors.forbidden_field(f"{path}.type",
                                             "must be empty if x-kubernetes-int-or-string is true"))
    props = node.get("properties")
    addl = node.get("additionalProperties")
    if props is not None and isinstance(addl, dict):
        causes.append(errors.forbidden_field(f"{path}.additionalProperties",
                                             "additionalProperties and properties are mutual "
                                             "exclusive"))
    if props is not None:
        if not isinstance(props, dict):
            causes.append(errors.invalid_value(f"{path}.properties", props, "must be an object"))
        else:
            for name, child in props.items():
                if root and name == "metadata":
                    _check_root_metadata(child, f"{path}.properties[metadata]", causes)
                    continue
                _check_node(child, f"{path}.properties[{name}]", causes, depth + 1)
    if isinstance(addl, dict):
        _check_node(addl, f"{path}.additionalProperties", causes, depth + 1)
    items = node.get("items")
    if t == "array" and items is None:
        causes.append(Cause("FieldValueRequired", "Required value: must be specified",
                            f"{path}.items"))
    if isinstance(items, list):
        causes.append(errors.forbidden_field(f"{path}.items", "items must be a schema object "
                                             "and not an array"))
    elif items is not None:
        _check_node(items, f"{path}.items", causes, depth + 1)
    for combinator in ("allOf", "anyOf", "oneOf"):
        branches = node.get(combinator)
        if branches is None:
            continue
        if not isinstance(branches, list):
            causes.append(errors.invalid_value(f"{path}.{combinator}", branches, "must be a list"))
            continue
        for i, b in enumerate(branches):
            _check_node(b, f"{path}.{combinator}[{i}]", causes, depth + 1, specified=False)
    if "not" in node:
        _check_node(node["not"], f"{path}.not", causes, depth + 1, specified=False)
    pattern = node.get("pattern")
    if pattern is not None:
        problem = pattern_error(pattern)
        if problem:
            causes.append(errors.invalid_value(f"{path}.pattern", pattern,
                                               "must be a valid regular expression, but isn't: "
                                               + problem))
    list_type = node.get("x-kubernetes-list-type")
    if list_type is not None:
        if list_type not in ("atomic", "set", "map"):
            causes.append(errors.not_supported(f"{path}.x-kubernetes-list-type", list_type,
                                               ["atomic", "set", "map"]))
        elif t != "array":
            causes.append(errors.invalid_value(f"{path}.type", t,
                                               "must be array if x-kubernetes-list-type is "
                                               "specified"))
        elif list_type == "map" and not node.get("x-kubernetes-list-map-keys"):
            causes.append(errors.required(f"{path}.x-kubernetes-list-map-keys"))


def _check_root_metadata(node: Any, path: str, causes: list[Cause]) -> None:
    if not isinstance(node, dict):
        causes.append(errors.invalid_value(path, node, "must be an object"))
        return
    if node.get("type") not in (None, "object"):
        causes.append(errors.invalid_value(f"{path}.type", node.get("type"), "must be object"))
    for name in (node.get("properties") or {}):
        if name not in ("name", "generateName"):
            causes.append(errors.forbidden_field(f"{path}.properties[{name}]",
                                                 "must not be specified"))


# -- a compiled schema at work --------------------------------------------------------------------
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


# -- publishing -------------------------------------------------------------------------------------
def component_name(group: str, version: str, kind: str) -> str:
    """OpenAPI component name as upstream builds it: ``com.example.stable.v1.CronTab``."""
    reversed_group = ".".join(reversed(group.split("."))) if group else "core"
    return f"{reversed_group}.{version}.{kind}"


def openapi_v3_for_crd_version(crd: dict[str, Any],
                               version: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(object schema, list schema) of one served version, with type and object metadata."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group", "")
    kind = names.get("kind", "")
    list_kind = names.get("listKind") or f"{kind}List"
    served = next((v for v in spec.get("versions") or []
                   if isinstance(v, dict) and v.get("name") == version), {})
    raw = ((served.get("schema") or {}).get("openAPIV3Schema")
           if isinstance(served.get("schema"), dict) else None)
    schema = copy.deepcopy(raw) if isinstance(raw, dict) else \
        {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    props = schema.setdefault("properties", {}) if isinstance(schema.get("properties", {}),
                                                              dict) else {}
    props["apiVersion"] = {"type": "string", "description": "APIVersion defines the versioned "
                           "schema of this representation of an object."}
    props["kind"] = {"type": "string", "description": "Kind is a string value representing the "
                     "REST resource this object represents."}
    props["metadata"] = {"$ref": f"#/components/schemas/{OBJECT_META}",
                         "description": "Standard object's metadata."}
    schema["type"] = "object"
    schema["x-kubernetes-group-version-kind"] = [{"group": group, "version": version,
                                                  "kind": kind}]
    list_schema = {
        "type": "object",
        "description": f"{list_kind} is a list of {kind}",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "items": {"type": "array", "description": f"List of {names.get('plural', '')}.",
                      "items": {"$ref": "#/components/schemas/" +
                                component_name(group, version, kind)}},
            "metadata": {"$ref": f"#/components/schemas/{LIST_META}"},
        },
        "x-kubernetes-group-version-kind": [{"group": group, "version": version,
                                             "kind": list_kind}],
    }
    return schema, list_schema
