"""The three PATCH formats of the Kubernetes API.

- JSON patch (RFC 6902), applied by the ``jsonpatch`` library;
- JSON merge patch (RFC 7386);
- strategic merge patch: a merge patch that knows, from the kind's schema,
  which lists merge by key (containers by ``name``) and which are replaced,
  plus the directives kubectl sends (``$patch``, ``$retainKeys``,
  ``$deleteFromPrimitiveList/…``, ``$setElementOrder/…``).

Inputs are never modified; every failure is an ``ApiError`` (400 for a
malformed patch, 422 when a well-formed JSON patch cannot be applied).
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import jsonpointer
import orjson

from atoll.api import decoding, errors, schemas

#: as deep as an object may be (decoding.MAX_OBJECT_DEPTH); recursion stays well within Python's
MAX_DEPTH = decoding.MAX_OBJECT_DEPTH
#: upstream's limits on one JSON patch
MAX_JSON_PATCH_OPERATIONS = 10000
MAX_COPY_BYTES = 3 * 1024 * 1024
_DIRECTIVE = "$patch"
_RETAIN_KEYS = "$retainKeys"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"
_SET_ORDER = "$setElementOrder/"
_DELETED = object()  # a list element a $patch: delete removed


# -- JSON patch ---------------------------------------------------------------------------------
def json_patch(doc: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise errors.BadRequest("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    if len(ops) > MAX_JSON_PATCH_OPERATIONS:
        raise errors.RequestEntityTooLarge(f"The allowed maximum operations in a JSON patch is "
                                           f"{MAX_JSON_PATCH_OPERATIONS}, got {len(ops)}")
    for i, op in enumerate(ops):
        if not isinstance(op, dict) or not isinstance(op.get("op"), str):
            raise errors.BadRequest(f"invalid JSON patch operation at index {i}")
    try:
        if any(op["op"] == "copy" for op in ops):
            result = _apply_counting_copies(doc, ops)
        else:
            result = jsonpatch.JsonPatch(ops).apply(doc, in_place=False)
    except jsonpatch.InvalidJsonPatch as e:
        raise errors.BadRequest(f"invalid JSON patch: {e}") from None
    except (jsonpatch.JsonPatchConflict, jsonpatch.JsonPatchTestFailed,
            jsonpointer.JsonPointerException) as e:
        raise errors.Invalid(f"the server rejected our request due to an error in our request: "
                             f"{e}") from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as e:
        raise errors.Invalid(f"cannot apply JSON patch: {e}") from None
    # copy and move can nest an object in itself, once per operation
    too_deep = decoding.object_depth_error(result)
    if too_deep is not None:
        raise too_deep
    return result


def _apply_counting_copies(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """Apply one operation at a time, refusing once copies add up to ``MAX_COPY_BYTES``:
    each ``copy`` can double the document (upstream's JSONPatchMaxCopyBytes)."""
    result = copy.deepcopy(doc)
    copied = 0
    for op in ops:
        if op["op"] == "copy" and isinstance(op.get("from"), str):
            try:
                copied += len(orjson.dumps(jsonpointer.resolve_pointer(result, op["from"])))
            except TypeError:  # nested past what orjson encodes: far too deep anyway
                copied = MAX_COPY_BYTES + 1
            if copied > MAX_COPY_BYTES:
                raise errors.RequestEntityTooLarge(
                    f"Unable to apply patch: the copy operations would copy more than "
                    f"{MAX_COPY_BYTES} bytes")
        result = jsonpatch.JsonPatch([op]).apply(result, in_place=True)
    return result


def _hashable(value: Any) -> Any:
    """A stand-in for ``value`` usable in sets and dicts, equal where ``==`` is."""
    try:
        hash(value)
        return value
    except TypeError:
        return ("\0json", orjson.dumps(value, option=orjson.OPT_SORT_KEYS))


# -- JSON merge patch -----------------------------------------------------------------------------
def merge_patch(doc: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` deletes, anything else replaces."""
    return _merge(doc, patch, 0)


def _merge(doc: Any, patch: Any, depth: int) -> Any:
    if depth >= MAX_DEPTH:  # depth counts from 0: MAX_DEPTH levels at most
        raise errors.BadRequest("the patch is nested too deeply")
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(doc) if isinstance(doc, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value, depth + 1)
    return out


# -- strategic merge patch ------------------------------------------------------------------------
def strategic_merge_patch(doc: Any, patch: Any, schema: dict[str, Any] | None) -> Any:
    """Apply a strategic merge patch; without a schema every list is replaced."""
    if not isinstance(patch, dict):
        raise errors.BadRequest("the strategic merge patch must be a JSON object")
    original = copy.deepcopy(doc) if isinstance(doc, dict) else {}
    return _merge_map(original, patch, schema, 0)


def _merge_map(original: dict[str, Any], patch: dict[str, Any], schema: dict[str, Any] | None,
               depth: int) -> dict[str, Any]:
    if depth >= MAX_DEPTH:  # depth counts from 0: MAX_DEPTH levels at most
        raise errors.BadRequest("the patch is nested too deeply")
    directive = patch.get(_DIRECTIVE)
    if directive is not None:
        if directive == "replace":
            return _strip({k: v for k, v in patch.items() if k != _DIRECTIVE}, depth)
        if directive == "delete":
            return {}
        if directive != "merge":
            raise errors.BadRequest(f"Unknown patch type: {directive!r} in map: {patch}")
    retain = patch.get(_RETAIN_KEYS)
    if retain is not None:
        if not isinstance(retain, list) or not all(isinstance(k, str) for k in retain):
            raise errors.BadRequest("$retainKeys must be a list of strings")
        keep = set(retain)
        for key in list(original):
            if key not in keep:
                del original[key]
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in (_DIRECTIVE, _RETAIN_KEYS):
            continue
        if key.startswith(_SET_ORDER):
            if not isinstance(value, list):
                raise errors.BadRequest(f"{key} must be a list")
            orders[key[len(_SET_ORDER):]] = value
            continue
        if key.startswith(_DELETE_PRIMITIVE):
            field = key[len(_DELETE_PRIMITIVE):]
            if not isinstance(value, list):
                raise errors.BadRequest(f"{key} must be a list")
            current = original.get(field)
            if isinstance(current, list):
                drop = {_hashable(v) for v in value}
                original[field] = [v for v in current if _hashable(v) not in drop]
            continue
        if key.startswith("$"):
            raise errors.BadRequest(f"unknown patch directive {key!r}")
        field_node = schemas.field_node(schema, key) if schema is not None else None
        child_schema = schemas.resolve(field_node) if field_node is not None else None
        merge_key, strategies = schemas.patch_meta(field_node)
        if value is None:
            original.pop(key, None)
            continue
        current = original.get(key)
        if isinstance(value, dict) and "replace" not in strategies:
            if isinstance(value.get(_DIRECTIVE), str) and value[_DIRECTIVE] == "delete":
                original.pop(key, None)
                continue
            original[key] = _merge_map(current if isinstance(current, dict) else {}, value,
                                       child_schema, depth + 1)
        elif isinstance(value, list) and "merge" in strategies and schema is not None:
            original[key] = _merge_list(current if isinstance(current, list) else [], value,
                                        child_schema, merge_key, depth + 1)
        else:
            original[key] = _strip(value, depth + 1)
    for field, order in orders.items():
        if isinstance(original.get(field), list):
            field_node = schemas.field_node(schema, field) if schema is not None else None
            merge_key, _ = schemas.patch_meta(field_node)
            original[field] = _ordered(original[field], order, merge_key)
    return original


def _merge_list(original: list[Any], patch: list[Any], schema: dict[str, Any] | None,
                merge_key: str, depth: int) -> list[Any]:
    if depth >= MAX_DEPTH:  # depth counts from 0: MAX_DEPTH levels at most
        raise errors.BadRequest("the patch is nested too deeply")
    item_schema = schemas.items_schema(schema) if schema is not None else None
    replace = [p for p in patch if isinstance(p, dict) and p.get(_DIRECTIVE) == "replace"]
    if replace:
        return [_strip(p, depth) for p in patch
                if not (isinstance(p, dict) and p.get(_DIRECTIVE) == "replace")]
    if not merge_key:
        out = list(original)
        present = {_hashable(o) for o in out}
        for item in patch:
            if isinstance(item, (dict, list)):
                raise errors.BadRequest("a list with merge strategy and no merge key must hold "
                                        "scalars")
            if item not in present:
                out.append(item)
                present.add(item)
        return out
    # merged by key: an index from key value to position keeps this linear in both lists
    out: list[Any] = list(original)
    where: dict[Any, list[int]] = {}
    for i, o in enumerate(out):
        if isinstance(o, dict) and merge_key in o:
            where.setdefault(_hashable(o[merge_key]), []).append(i)
    deleted = False
    for item in patch:
        if not isinstance(item, dict):
            raise errors.BadRequest(f"the list items must be objects with merge key "
                                    f"{merge_key!r}")
        if merge_key not in item:
            raise errors.BadRequest(f"map: {item} does not contain declared merge key: "
                                    f"{merge_key}")
        key = _hashable(item[merge_key])
        positions = where.get(key)
        index = positions[0] if positions else -1
        directive = item.get(_DIRECTIVE)
        if directive == "delete":
            for i in where.pop(key, ()):  # every element with this key; dropped below
                out[i] = _DELETED
                deleted = True
            continue
        if directive not in (None, "merge", "replace"):
            raise errors.BadRequest(f"Unknown patch type: {directive!r} in map: {item}")
        if index >= 0:
            out[index] = _merge_map(dict(out[index]), item, item_schema, depth + 1)
        else:
            where[key] = [len(out)]
            out.append(_merge_map({}, item, item_schema, depth + 1))
    return [o for o in out if o is not _DELETED] if deleted else out


def _ordered(items: list[Any], order: list[Any], merge_key: str) -> list[Any]:
    """Sort by ``$setElementOrder``: listed elements in that order, others after."""
    def ident(item: Any) -> Any:
        if merge_key and isinstance(item, dict):
            return item.get(merge_key)
        return item

    wanted = [ident(o) for o in order]
    position = {}
    for i, w in enumerate(wanted):
        try:
            position.setdefault(w, i)
        except TypeError:
            continue
    def rank(pair: tuple[int, Any]) -> tuple[int, int]:
        i, item = pair
        try:
            return (position.get(ident(item), len(wanted)), i)
        except TypeError:
            return (len(wanted), i)
    return [item for _, item in sorted(enumerate(items), key=rank)]


def _strip(value: Any, depth: int) -> Any:
    """A patch value inserted as is: directives removed, ``null`` entries dropped."""
    if depth >= MAX_DEPTH:  # depth counts from 0: MAX_DEPTH levels at most
        raise errors.BadRequest("the patch is nested too deeply")
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in (_DIRECTIVE, _RETAIN_KEYS) or k.startswith(_SET_ORDER) \
                    or k.startswith(_DELETE_PRIMITIVE) or v is None:
                continue
            out[k] = _strip(v, depth + 1)
        return out
    if isinstance(value, list):
        return [_strip(v, depth + 1) for v in value
                if not (isinstance(v, dict) and v.get(_DIRECTIVE) == "delete")]
    return value
