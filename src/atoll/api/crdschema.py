"""CustomResourceDefinitions: checking a definition, defaulting it, publishing its schemas.

``check_crd`` refuses definitions apiextensions refuses (names, versions,
non-structural schemas) with the same field paths.  ``openapi_v3_for_crd_version``
publishes a version's schema for ``kubectl explain`` and client validation.  What a
version's schema does to custom resources is ``StructuralSchema``'s
(``atoll.api.structuralschema``).
"""

from __future__ import annotations

import copy
from typing import Any

from atoll.api import crdconversion, errors, validation
from atoll.api.errors import Cause
from atoll.api.structuralschema import MAX_DEPTH, StructuralSchema, compile_pattern, pattern_error

OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"

LIST_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"

_TYPES = ("object", "array", "string", "integer", "number", "boolean")

_PRINTER_TYPES = ("integer", "number", "string", "boolean", "date")


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
    causes += crdconversion.check_conversion(spec)
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


__all__ = ["LIST_META", "MAX_DEPTH", "OBJECT_META", "StructuralSchema", "check_crd",
           "check_structural", "compile_pattern", "component_name", "default_crd",
           "openapi_v3_for_crd_version", "pattern_error"]
