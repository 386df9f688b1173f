"""Upstream's published schemas of the built-in kinds, and the patch metadata on them.

``kubernetes-validate`` ships the OpenAPI definitions of Kubernetes 1.37 as
one JSON-schema document.  We read it once, lazily, and use it for three jobs:
decoding checks of built-in kinds, strategic-merge-patch and server-side apply
metadata (merge keys, list types), and the ``/openapi/v3`` documents that
``kubectl explain`` reads.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

SCHEMA_VERSION = "v1.37.0-local"
_REF_PREFIX = "#/$defs/"


@functools.cache
def definitions() -> dict[str, dict[str, Any]]:
    """All definitions by name, e.g. ``io.k8s.api.apps.v1.Deployment``."""
    path = resources.files("kubernetes_validate").joinpath(
        "kubernetes-json-schema", SCHEMA_VERSION, "_definitions.json")
    with path.open("rb") as f:
        doc = json.load(f)
    return doc["$defs"]


@functools.cache
def _gvk_index() -> dict[tuple[str, str, str], str]:
    index: dict[tuple[str, str, str], str] = {}
    for name, node in definitions().items():
        for gvk in node.get("x-kubernetes-group-version-kind") or ():
            key = (gvk.get("group", ""), gvk.get("version", ""), gvk.get("kind", ""))
            # Prefer the definition from the kind's own API package over re-exports.
            if key not in index or _own_package(name, key):
                index[key] = name
    return index


def _own_package(name: str, gvk: tuple[str, str, str]) -> bool:
    group, version, kind = gvk
    return name.endswith(f".{version}.{kind}") and (group.split(".")[0] in name or not group)


def definition_name_for(group: str, version: str, kind: str) -> str | None:
    """The definition name published for a group/version/kind (also for list kinds)."""
    return _gvk_index().get((group, version, kind))


def schema_for(group: str, version: str, kind: str) -> dict[str, Any] | None:
    name = definition_name_for(group, version, kind)
    return definitions()[name] if name else None


def resolve(node: Any) -> dict[str, Any]:
    """Follow ``$ref`` (also a lone ``allOf`` wrapper); anything unknown resolves to ``{}``."""
    seen = 0
    while isinstance(node, dict) and seen < 16:
        ref = node.get("$ref")
        if isinstance(ref, str):
            node = definitions().get(ref[len(_REF_PREFIX):] if ref.startswith(_REF_PREFIX)
                                     else ref.rsplit("/", 1)[-1], {})
        elif isinstance(node.get("allOf"), list) and len(node["allOf"]) == 1 \
                and "properties" not in node:
            node = node["allOf"][0]
        else:
            return node
        seen += 1
    return node if isinstance(node, dict) else {}


def property_schema(node: Any, name: str) -> dict[str, Any] | None:
    """The schema of one field of an object node, resolved; None when not declared."""
    node = resolve(node)
    props = node.get("properties")
    if isinstance(props, dict) and name in props:
        return resolve(props[name])
    addl = node.get("additionalProperties")
    if isinstance(addl, dict):
        return resolve(addl)
    return None


def items_schema(node: Any) -> dict[str, Any] | None:
    """The schema of a list node's elements, resolved."""
    node = resolve(node)
    items = node.get("items")
    return resolve(items) if isinstance(items, dict) else None


def field_node(node: Any, name: str) -> dict[str, Any] | None:
    """The unresolved schema of one field: it carries the list's patch metadata."""
    node = resolve(node)
    props = node.get("properties")
    if isinstance(props, dict) and isinstance(props.get(name), dict):
        return props[name]
    addl = node.get("additionalProperties")
    return addl if isinstance(addl, dict) else None


def patch_meta(node: Any) -> tuple[str, list[str]]:
    """``(merge_key, strategies)`` declared on a field for strategic merge patch.

    A list declared ``x-kubernetes-list-type: map`` without patch extensions
    merges on its first list-map key, as upstream does since structured merge.
    """
    if not isinstance(node, dict):
        return "", []
    strategies = [s for s in str(node.get("x-kubernetes-patch-strategy") or "").split(",") if s]
    key = str(node.get("x-kubernetes-patch-merge-key") or "")
    if not strategies and node.get("x-kubernetes-list-type") == "map":
        keys = node.get("x-kubernetes-list-map-keys") or []
        if keys:
            return str(keys[0]), ["merge"]
    if not strategies and node.get("x-kubernetes-list-type") == "set":
        return "", ["merge"]
    return key, strategies


def list_type(node: Any) -> tuple[str, list[str]]:
    """``(list_type, map_keys)`` for server-side apply: atomic, set or map."""
    if not isinstance(node, dict):
        return "atomic", []
    lt = node.get("x-kubernetes-list-type")
    keys = [str(k) for k in node.get("x-kubernetes-list-map-keys") or []]
    if lt in ("atomic", "set", "map"):
        return str(lt), keys
    merge_key = node.get("x-kubernetes-patch-merge-key")
    if merge_key:
        return "map", [str(merge_key)]
    if "merge" in str(node.get("x-kubernetes-patch-strategy") or ""):
        return "set", []
    return "atomic", []


def map_type(node: Any) -> str:
    """``granular`` (per-key ownership) or ``atomic`` for object fields."""
    node = resolve(node) if isinstance(node, dict) else {}
    return "atomic" if node.get("x-kubernetes-map-type") == "atomic" else "granular"
