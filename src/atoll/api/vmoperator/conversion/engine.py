"""Lossless conversion between a kind's versions through its hub (storage) version.

Each served version ("spoke") converts to and from the hub only.  One conversion is two
steps: the version's shape hooks move the fields that moved or changed form between the
versions (``Shape``), then the result is pruned to the target version's schema.  What
pruning would lose is kept in an annotation, as vm-operator does, and restored when the
object comes back:

- a spoke made from the hub carries the whole hub (without metadata) in
  ``vmoperator.vmware.com/conversion`` (upstream's key and format) when it cannot hold it all;
- a hub made from a spoke carries the spoke's body in
  ``vmoperator.vmware.com/conversion-<version>`` when the hub cannot hold it all (upstream
  drops such fields, e.g. v1alpha1's ``ports``; Atoll keeps them).

Coming back, the saved copy is used whole when the object was not changed in between (so
round trips are identity), else only the fields the other version cannot express are taken
from it (matching list items by their keys) and the client's changes win.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from atoll.api.structuralschema import StructuralSchema

ANNOTATION = "vmoperator.vmware.com/conversion"
RESIDUE_PREFIX = ANNOTATION + "-"

Hook = Callable[[dict[str, Any]], None]
#: a field's place in a schema: property names, and ("[]", keys) for an array's items
Path = tuple[Any, ...]


@dataclass(frozen=True)
class Shape:
    """How one version differs from the hub beyond fields it has or lacks.

    ``up`` rewrites a copy of a spoke object into the hub's form, ``down`` a copy of a hub
    object into the spoke's form (both in place, before pruning).  ``hub_paths`` and
    ``spoke_paths`` are the dotted paths those hooks carry across, so that the restore step
    does not treat them as fields the other version lacks."""

    up: Hook | None = None
    down: Hook | None = None
    hub_paths: tuple[str, ...] = ()
    spoke_paths: tuple[str, ...] = ()


def residue_key(version: str) -> str:
    return RESIDUE_PREFIX + version


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def body(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "apiVersion", "kind")}


class KindConverter:
    """Converts one kind between its versions (``atoll.api.crdconversion.Converter``)."""

    def __init__(self, group: str, kind: str, schemas: dict[str, dict[str, Any]], hub: str,
                 shapes: dict[str, Shape] | None = None) -> None:
        self.group, self.kind, self.hub = group, kind, hub
        self.schemas = {v: StructuralSchema(s) for v, s in schemas.items()}
        self.shapes = shapes or {}
        self._hub_only: dict[str, list[Path]] = {}
        self._spoke_only: dict[str, list[Path]] = {}
        for version, schema in schemas.items():
            if version == hub:
                continue
            shape = self.shapes.get(version, Shape())
            self._hub_only[version] = uncovered(missing(schemas[hub], schema), schemas[hub],
                                                shape.hub_paths)
            self._spoke_only[version] = uncovered(missing(schema, schemas[hub]), schema,
                                                  shape.spoke_paths)

    def versions(self) -> list[str]:
        return list(self.schemas)

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}"

    def version_of(self, obj: dict[str, Any]) -> str:
        api_version = str(obj.get("apiVersion") or "")
        group, _, version = api_version.rpartition("/")
        if group != self.group or version not in self.schemas:
            raise ValueError(f"{self.kind}: cannot convert from {api_version!r}")
        return version

    # -- the Converter protocol --------------------------------------------------------------
    def convert(self, obj: dict[str, Any], api_version: str) -> dict[str, Any]:
        want = api_version.rpartition("/")[2]
        if want not in self.schemas:
            raise ValueError(f"{self.kind}: no version {api_version!r}")
        have = self.version_of(obj)
        if have == want:
            return obj
        hub = obj if have == self.hub else self.to_hub(obj, have)
        return hub if want == self.hub else self.from_hub(hub, want)

    # -- the two directions --------------------------------------------------------------------
    def to_hub(self, spoke: dict[str, Any], version: str) -> dict[str, Any]:
        meta = copy.deepcopy(spoke.get("metadata") or {})
        saved = _load(_pop_annotation(meta, ANNOTATION))
        out = self._up({**spoke, "metadata": meta}, version)
        if saved is not None:
            restored = {**saved, "metadata": meta}
            if body(self._down(restored, version)) == body(spoke):
                out = _with_body(out, saved)
            else:
                for path in self._hub_only[version]:
                    copy_path(saved, out, path)
        if body(self._down(out, version)) != body(spoke):
            meta.setdefault("annotations", {})[residue_key(version)] = dumps(body(spoke))
        out["metadata"] = meta
        return out

    def from_hub(self, hub: dict[str, Any], version: str) -> dict[str, Any]:
        meta = copy.deepcopy(hub.get("metadata") or {})
        saved = _load(_pop_annotation(meta, residue_key(version)))
        clean = {**hub, "metadata": meta}
        out = self._down(clean, version)
        if saved is not None:
            if body(self._up({**saved, "metadata": meta}, version)) == body(hub):
                out = _with_body(out, saved)
            else:
                for path in self._spoke_only[version]:
                    copy_path(saved, out, path)
        if body(self._up(out, version)) != body(hub):
            whole = {"apiVersion": hub.get("apiVersion"), "kind": hub.get("kind"), **body(hub)}
            meta.setdefault("annotations", {})[ANNOTATION] = dumps(whole)
        out["metadata"] = meta
        return out

    # -- plain shape conversions (no annotations) ----------------------------------------------
    def _up(self, spoke: dict[str, Any], version: str) -> dict[str, Any]:
        out = copy.deepcopy(spoke)
        hook = self.shapes.get(version, Shape()).up
        if hook is not None:
            hook(out)
        self.schemas[self.hub].prune(out)
        out["apiVersion"] = self.api_version(self.hub)
        return out

    def _down(self, hub: dict[str, Any], version: str) -> dict[str, Any]:
        out = copy.deepcopy(hub)
        hook = self.shapes.get(version, Shape()).down
        if hook is not None:
            hook(out)
        self.schemas[version].prune(out)
        out["apiVersion"] = self.api_version(version)
        return out


def _load(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None  # a mangled annotation: convert without it
    return body(value) if isinstance(value, dict) else None


def _pop_annotation(meta: dict[str, Any], key: str) -> Any:
    """Take one of the conversion annotations off (and the map, if it held only that)."""
    annotations = meta.get("annotations")
    if not isinstance(annotations, dict) or key not in annotations:
        return None
    value = annotations.pop(key)
    if not annotations:
        del meta["annotations"]
    return value


def _with_body(obj: dict[str, Any], new_body: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in obj.items() if k in ("apiVersion", "kind", "metadata")}
    out.update(copy.deepcopy(new_body))
    return out


# -- schema paths --------------------------------------------------------------------------------
def _children(node: dict[str, Any]) -> Iterator[tuple[Any, dict[str, Any]]]:
    props = node.get("properties")
    if isinstance(props, dict):
        yield from props.items()
    items = node.get("items")
    if isinstance(items, dict):
        keys = tuple(node.get("x-kubernetes-list-map-keys") or ())
        if not keys and "name" in (items.get("properties") or {}):
            keys = ("name",)
        yield ("[]", keys), items


def missing(have: dict[str, Any], other: dict[str, Any], prefix: Path = ()) -> list[Path]:
    """The topmost paths of ``have``'s schema that ``other``'s lacks."""
    out: list[Path] = []
    theirs = dict(_children(other))
    for key, child in _children(have):
        if not prefix and key in ("apiVersion", "kind", "metadata"):
            continue
        if key not in theirs:
            out.append(prefix + (key,))
        elif isinstance(child, dict) and isinstance(theirs[key], dict):
            out += missing(child, theirs[key], prefix + (key,))
    return out


def dotted(path: Path) -> str:
    return ".".join("[]" if isinstance(p, tuple) else p for p in path)


def covered(path: Path, prefixes: tuple[str, ...]) -> bool:
    text = dotted(path)
    return any(text == p or text.startswith(p + ".") for p in prefixes)


def uncovered(paths: list[Path], schema: dict[str, Any], hooks: tuple[str, ...]) -> list[Path]:
    """``paths`` less what the hooks carry; a path with carried fields inside it stands for
    its other fields (so that a restore never overwrites what a hook converted)."""
    out: list[Path] = []
    for path in paths:
        if covered(path, hooks):
            continue
        text = dotted(path)
        if not any(h.startswith(text + ".") for h in hooks):
            out.append(path)
            continue
        node = _node_at(schema, path)
        children = [path + (key,) for key, _ in _children(node)] if node else []
        out += uncovered(children, schema, hooks)
    return out


def _node_at(schema: dict[str, Any], path: Path) -> dict[str, Any] | None:
    node: Any = schema
    for key in path:
        node = dict(_children(node)).get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def copy_path(src: Any, dst: Any, path: Path) -> None:
    """Copy the value at ``path`` from ``src`` into ``dst``, pairing list items by key."""
    head, rest = path[0], path[1:]
    if isinstance(head, tuple):
        if not isinstance(src, list) or not isinstance(dst, list):
            return
        keys = head[1]
        for i, item in enumerate(src):
            if keys:
                ident = [item.get(k) for k in keys] if isinstance(item, dict) else None
                match = next((d for d in dst if isinstance(d, dict) and ident is not None and
                              [d.get(k) for k in keys] == ident), None)
            else:
                match = dst[i] if i < len(dst) else None
            if match is not None and rest:
                copy_path(item, match, rest)
        return
    if not isinstance(src, dict) or not isinstance(dst, dict) or head not in src:
        return
    if not rest:
        dst[head] = copy.deepcopy(src[head])
        return
    created = head not in dst
    if created:
        if not isinstance(src[head], dict):
            return
        dst[head] = {}
    copy_path(src[head], dst[head], rest)
    if created and dst[head] == {}:
        del dst[head]
