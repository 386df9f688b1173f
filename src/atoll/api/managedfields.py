"""Field ownership (``metadata.managedFields``) and server-side apply.

Every write records which manager set which fields, in upstream's
``FieldsV1`` format, so that ``kubectl apply --server-side`` can merge a
manager's configuration into the live object, refuse to silently overwrite a
field another manager set to a different value (409 with the conflicting
paths, unless ``force``), and remove the fields a manager stopped declaring.

A field set is a Python ``set`` of paths; a path is a tuple of FieldsV1 path
elements: ``f:<field>``, ``k:<json of key fields>`` (an item of a list keyed
by merge keys), ``v:<json value>`` (an item of a set-like list).  Members are
leaves (scalars, atomic lists and maps, empty maps) and keyed list items;
intermediate objects are implied by their children, as in upstream's Apply
entries.  List and map semantics come from the kind's schema (the
``x-kubernetes-list-type``/``patch-merge-key`` annotations); without a schema
lists are atomic and objects granular.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Iterable

from atoll.api import errors, schemas

Path = tuple[str, ...]
FieldSet = set[Path]

#: fields the server owns; never recorded, never merged from an apply configuration
_IGNORED_META = {"name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
                 "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink"}
BEFORE_FIRST_APPLY = "before-first-apply"
_MISSING = object()
MAX_DEPTH = 100


# -- field sets of objects ------------------------------------------------------------------------
def fields_of(obj: dict[str, Any], schema: dict[str, Any] | None) -> FieldSet:
    """The field set an object (or an apply configuration) declares."""
    out: FieldSet = set()
    for key, value in obj.items():
        if key in ("apiVersion", "kind"):
            continue
        if key == "metadata" and isinstance(value, dict):
            meta_node = _field(schema, "metadata")
            for mk, mv in value.items():
                if mk not in _IGNORED_META:
                    _collect(mv, _field(meta_node, mk), ("f:metadata", f"f:{mk}"), out, 2)
            continue
        _collect(value, _field(schema, key), (f"f:{key}",), out, 1)
    return out


def _field(node: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    return schemas.field_node(node, name) if node is not None else None


def _collect(value: Any, node: dict[str, Any] | None, prefix: Path, out: FieldSet,
             depth: int) -> None:
    if depth > MAX_DEPTH:
        raise errors.BadRequest("the object is nested too deeply")
    if isinstance(value, dict) and value and schemas.map_type(node) == "granular":
        for key, child in value.items():
            _collect(child, _field(node, key), prefix + (f"f:{key}",), out, depth + 1)
        return
    if isinstance(value, list) and value:
        element = _list_element(value, node)
        if element is not None:
            item_node = schemas.resolve(node).get("items") if node is not None else None
            for item in value:
                path = prefix + (element(item),)
                out.add(path)
                if isinstance(item, dict):
                    for key, child in item.items():
                        _collect(child, _field(item_node, key), path + (f"f:{key}",), out,
                                 depth + 2)
            return
    out.add(prefix)


def _list_element(items: list[Any], node: dict[str, Any] | None) -> Any:
    """How items of this list are named in a path, or None when the list is atomic."""
    kind, keys = schemas.list_type(node)
    if kind == "map" and keys and all(isinstance(i, dict) and all(k in i for k in keys[:1])
                                      for i in items):
        return lambda item: "k:" + _compact({k: item[k] for k in keys if k in item})
    if kind == "set" and all(not isinstance(i, (dict, list)) for i in items):
        return lambda item: "v:" + _compact(item)
    return None


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# -- FieldsV1 encoding ----------------------------------------------------------------------------
def to_fields_v1(fields: Iterable[Path]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    members = set(fields)
    for path in sorted(members):
        node = tree
        for el in path:
            node = node.setdefault(el, {})
    # a member that also has children is marked with ".", as upstream does
    for path in members:
        node = tree
        for el in path:
            node = node[el]
        if node:
            node["."] = {}
    return tree


def from_fields_v1(tree: Any, prefix: Path = (), depth: int = 0) -> FieldSet:
    out: FieldSet = set()
    if not isinstance(tree, dict) or depth > MAX_DEPTH:
        return out
    if not tree and prefix:
        out.add(prefix)
        return out
    for key, child in tree.items():
        if key == ".":
            if prefix:
                out.add(prefix)
        elif isinstance(key, str) and key[:2] in ("f:", "k:", "v:", "i:"):
            out |= from_fields_v1(child, prefix + (key,), depth + 1)
    return out


# -- managedFields entries ------------------------------------------------------------------------
class _Entry:
    """One managedFields entry, with its field set decoded."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.manager = str(raw.get("manager") or "")
        self.operation = str(raw.get("operation") or "Update")
        self.subresource = str(raw.get("subresource") or "")
        self.api_version = str(raw.get("apiVersion") or "")
        self.time = raw.get("time")
        self.fields = from_fields_v1(raw.get("fieldsV1"))

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.manager, self.operation, self.subresource)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"manager": self.manager, "operation": self.operation,
                             "apiVersion": self.api_version}
        if self.time:
            d["time"] = self.time
        d["fieldsType"] = "FieldsV1"
        d["fieldsV1"] = to_fields_v1(self.fields)
        if self.subresource:
            d["subresource"] = self.subresource
        return d


def _entries(obj: dict[str, Any] | None) -> list[_Entry]:
    raw = ((obj or {}).get("metadata") or {}).get("managedFields")
    if not isinstance(raw, list):
        return []
    return [_Entry(e) for e in raw if isinstance(e, dict) and e.get("manager")]


def _entry(entries: list[_Entry], manager: str, operation: str, subresource: str,
           api_version: str) -> _Entry:
    for e in entries:
        if e.key == (manager, operation, subresource):
            e.api_version = api_version
            return e
    e = _Entry({"manager": manager, "operation": operation, "subresource": subresource,
                "apiVersion": api_version})
    entries.append(e)
    return e


def _render(entries: list[_Entry]) -> list[dict[str, Any]]:
    return [e.to_dict() for e in entries if e.fields]


# -- paths in objects -----------------------------------------------------------------------------
def _get(obj: Any, path: Path) -> Any:
    cur = obj
    for el in path:
        kind, arg = el[:2], el[2:]
        if kind == "f:":
            if not isinstance(cur, dict) or arg not in cur:
                return _MISSING
            cur = cur[arg]
        elif kind == "k:":
            cur = _find_keyed(cur, arg)
            if cur is _MISSING:
                return _MISSING
        elif kind == "v:":
            try:
                value = json.loads(arg)
            except ValueError:
                return _MISSING
            if not isinstance(cur, list) or value not in cur:
                return _MISSING
            cur = value
        else:
            return _MISSING
    return cur


def _find_keyed(items: Any, arg: str) -> Any:
    try:
        keys = json.loads(arg)
    except ValueError:
        return _MISSING
    if not isinstance(items, list) or not isinstance(keys, dict):
        return _MISSING
    for item in items:
        if isinstance(item, dict) and all(item.get(k) == v for k, v in keys.items()):
            return item
    return _MISSING


def _remove(obj: Any, path: Path) -> None:
    parent = _get(obj, path[:-1])
    el = path[-1]
    kind, arg = el[:2], el[2:]
    if kind == "f:" and isinstance(parent, dict):
        parent.pop(arg, None)
    elif kind == "k:" and isinstance(parent, list):
        target = _find_keyed(parent, arg)
        if target is not _MISSING:
            parent.remove(target)
    elif kind == "v:" and isinstance(parent, list):
        try:
            value = json.loads(arg)
        except ValueError:
            return
        while value in parent:
            parent.remove(value)


def _under(path: Path, prefix: Path) -> bool:
    return path[:len(prefix)] == prefix


def format_path(path: Path) -> str:
    """``.spec.containers[name="c"].image``, as upstream prints conflicting fields."""
    out = ""
    for el in path:
        kind, arg = el[:2], el[2:]
        if kind == "f:":
            out += "." + arg
        elif kind == "k:":
            try:
                keys = json.loads(arg)
                out += "[" + ",".join(f"{k}={_compact(v)}" for k, v in keys.items()) + "]"
            except (ValueError, AttributeError):
                out += f"[{arg}]"
        else:
            out += f"[={arg}]"
    return out


# -- merging an apply configuration ---------------------------------------------------------------
def _merge(live: Any, applied: Any, node: dict[str, Any] | None, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise errors.BadRequest("the apply configuration is nested too deeply")
    if isinstance(live, dict) and isinstance(applied, dict) \
            and schemas.map_type(node) == "granular":
        out = dict(live)
        for key, value in applied.items():
            out[key] = _merge(live.get(key), value, _field(node, key), depth + 1)
        return out
    if isinstance(live, list) and isinstance(applied, list):
        kind, keys = schemas.list_type(node)
        item_node = schemas.resolve(node).get("items") if node is not None else None
        if kind == "map" and keys and all(isinstance(i, dict) for i in live + applied):
            out_list = list(live)
            for item in applied:
                ident = {k: item.get(k) for k in keys if k in item}
                index = next((i for i, cur in enumerate(out_list)
                              if all(cur.get(k) == v for k, v in ident.items())), -1)
                if index >= 0:
                    out_list[index] = _merge(out_list[index], item, item_node, depth + 1)
                else:
                    out_list.append(copy.deepcopy(item))
            return out_list
        if kind == "set":
            return list(live) + [copy.deepcopy(v) for v in applied if v not in live]
    return copy.deepcopy(applied)


def _config(applied: dict[str, Any], ignore_status: bool) -> dict[str, Any]:
    """The part of an apply configuration that is merged and owned."""
    config = {k: v for k, v in applied.items() if not (ignore_status and k == "status")}
    meta = config.get("metadata")
    if isinstance(meta, dict):
        config["metadata"] = {k: v for k, v in meta.items()
                              if k not in _IGNORED_META or k in ("name", "namespace")}
    return config


def apply(live: dict[str, Any] | None, applied: dict[str, Any], *, manager: str, force: bool,
          schema: dict[str, Any] | None, api_version: str, now: str,
          ignore_status: bool = False) -> dict[str, Any]:
    """Server-side apply of ``applied`` by ``manager``; returns the new object."""
    config = _config(applied, ignore_status)
    applied_fields = fields_of(config, schema)
    if live is None:
        new = copy.deepcopy(config)
        entry = _Entry({"manager": manager, "operation": "Apply", "apiVersion": api_version,
                        "time": now})
        entry.fields = applied_fields
        new.setdefault("metadata", {})["managedFields"] = _render([entry])
        return new

    entries = _entries(live)
    if not entries:
        # Ownership of what was there before anyone applied, so apply can reason about it.
        base = _Entry({"manager": BEFORE_FIRST_APPLY, "operation": "Update",
                       "apiVersion": api_version, "time": now})
        base.fields = fields_of(live, schema)
        entries = [base]
    mine = _entry(entries, manager, "Apply", "", api_version)
    previous = set(mine.fields)

    conflicts: dict[str, list[Path]] = {}
    leaves = applied_fields - _inner(applied_fields)
    for other in entries:
        if other is mine:
            continue
        for path in sorted(leaves & other.fields):
            if _get(live, path) != _get(config, path):
                conflicts.setdefault(f'"{other.manager}" using {other.api_version}',
                                     []).append(path)
    if conflicts and not force:
        raise _conflict_error(conflicts)

    merged_meta = dict(live.get("metadata") or {})
    new = _merge(live, {k: v for k, v in config.items() if k != "metadata"}, schema, 0)
    new_meta_config = {k: v for k, v in (config.get("metadata") or {}).items()
                       if k not in ("name", "namespace")}
    new["metadata"] = _merge(merged_meta, new_meta_config, _field(schema, "metadata"), 1)

    # Forced (or value-preserving) takes: others lose the fields whose values changed.
    for other in entries:
        if other is not mine:
            changed = {p for p in leaves & other.fields if _get(live, p) != _get(config, p)}
            other.fields -= changed

    # Fields this manager stopped declaring go away unless someone else still owns them.
    others_fields = set().union(*(e.fields for e in entries if e is not mine))
    for path in sorted(previous - applied_fields, key=len, reverse=True):
        if any(_under(q, path) for q in others_fields):
            continue
        if any(_under(q, path) for q in applied_fields):
            continue
        _remove(new, path)

    mine.fields = applied_fields
    mine.time = now
    mine.operation = "Apply"
    new["metadata"]["managedFields"] = _render(entries)
    return new


def _conflict_error(conflicts: dict[str, list[Path]]) -> errors.Conflict:
    total = sum(len(paths) for paths in conflicts.values())
    causes = [errors.Cause("FieldManagerConflict", f"conflict with {who}", format_path(p))
              for who, paths in conflicts.items() for p in paths]
    if total == 1:
        who, paths = next(iter(conflicts.items()))
        message = f"Apply failed with 1 conflict: conflict with {who}: {format_path(paths[0])}"
    else:
        lines = []
        for who, paths in conflicts.items():
            lines.append(f"conflicts with {who}:")
            lines.extend(f"- {format_path(p)}" for p in paths)
        message = f"Apply failed with {total} conflicts: " + "\n".join(lines)
    return errors.Conflict(message, causes=causes)


# -- ordinary writes --------------------------------------------------------------------------------
def track_update(old: dict[str, Any] | None, new: dict[str, Any], *, manager: str,
                 api_version: str, now: str, schema: dict[str, Any] | None,
                 subresource: str = "") -> list[dict[str, Any]]:
    """The managedFields after a create, update or patch by ``manager``."""
    entries = _entries(old)
    supplied = (new.get("metadata") or {}).get("managedFields")
    if old is None or (isinstance(supplied, list) and supplied
                       and supplied != (old.get("metadata") or {}).get("managedFields")):
        entries = _entries(new)  # the writer reset ownership explicitly ([{}] clears it)
    if old is None:
        changed, removed = fields_of(new, schema), set()
    else:
        changed, removed = _diff(old, new, schema)
    if not changed and not removed:
        return _render(entries)
    mine = _entry(entries, manager, "Update", subresource, api_version) if changed else None
    for e in entries:
        if removed:  # removed fields are owned by nobody
            e.fields = {p for p in e.fields if not any(_under(p, r) for r in removed)}
        if e is not mine:  # changed values now belong to the writer alone
            e.fields -= changed
    if mine is not None:
        mine.fields |= changed
        mine.time = now
    return _render(entries)


def _diff(old: dict[str, Any], new: dict[str, Any],
          schema: dict[str, Any] | None) -> tuple[FieldSet, FieldSet]:
    """(paths set or changed, paths removed) between two objects."""
    old_fields = fields_of(old, schema)
    new_fields = fields_of(new, schema)
    removed = {p for p in old_fields - new_fields
               if not any(_under(q, p) for q in new_fields)}
    inner = _inner(new_fields)
    changed = {p for p in new_fields
               if p not in old_fields or (p not in inner and _get(old, p) != _get(new, p))}
    return changed, removed


def _inner(fields: FieldSet) -> set[Path]:
    """Members that have members below them (keyed list items with fields)."""
    return {p[:i] for p in fields for i in range(1, len(p))}
