"""The generic write pipeline every kind goes through, around its kind's ``Strategy``.

Decoding checks, metadata rules, custom resources' schemas, the carry-over of
server-owned fields on update, generation bumps and field ownership are the same
for every kind (upstream's generic registry); what a kind does differently is its
``Strategy`` (``atoll.api.strategy``), declared beside the kind in
``atoll.api.resources`` and found here with ``for_type``.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from atoll.api import errors, managedfields, resources, schemas, validation
from atoll.api.resourcetype import STANDARD_FINALIZERS, ResourceType
from atoll.api.strategy import ObjectReader, Strategy, WriteOptions
from atoll.api.timestamps import rfc3339
from atoll.apiserver import builtin_schema, http

IMMUTABLE_META = ("uid", "creationTimestamp", "name", "namespace")

SERVER_META = ("generation", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink")

log = logging.getLogger(__name__)


# -- generic steps ----------------------------------------------------------------------------
def decode_check(rt: ResourceType, obj: dict[str, Any], opts: WriteOptions) -> None:
    """What decoding into Go types refuses (wrong JSON types: 400) and drops (unknown fields).

    Runs before any kind-specific defaulting, so that code only sees well-typed objects.
    """
    if rt.custom is None:
        builtin_schema.check(rt, obj, opts)


def validate_common(svc: ObjectReader, rt: ResourceType, obj: dict[str, Any],
                    opts: WriteOptions) -> None:
    """Metadata rules for every kind, then custom resources' schemas."""
    meta = obj["metadata"]
    causes = validation.validate_object_meta(meta, namespaced=rt.namespaced,
                                             name_rule=rt.name_rule)
    name = meta.get("name", "") if isinstance(meta.get("name"), str) else ""
    if causes:
        raise errors.invalid(rt.kind, name, causes, rt.group)
    if rt.custom is not None:
        rt.custom.admit(rt, obj, opts)


def prepare_update(svc: ObjectReader, rt: ResourceType, old: dict[str, Any], new: dict[str, Any],
                   opts: WriteOptions, *, subresource: str = "") -> None:
    """Carry server-owned fields over, apply status-subresource rules, bump generation."""
    if not isinstance(new.get("metadata"), dict):
        raise errors.BadRequest("metadata must be an object")
    old_meta, new_meta = old["metadata"], new["metadata"]
    causes = validation.validate_update_meta(old_meta, new_meta)
    if causes:
        raise errors.invalid(rt.kind, old_meta.get("name", ""), causes, rt.group)
    if subresource == "status":
        status = new.get("status")
        new.clear()
        new.update(orjson.loads(orjson.dumps(old)))
        if status is None:
            new.pop("status", None)
        else:
            new["status"] = status
        new_meta = new["metadata"]
    elif subresource in ("", "scale") and rt.has_status:
        if "status" in old:
            new["status"] = old["status"]
        else:
            new.pop("status", None)
    for f in IMMUTABLE_META:
        if f in old_meta:
            new_meta[f] = old_meta[f]
    for f in SERVER_META:
        if f in old_meta:
            new_meta[f] = old_meta[f]
        else:
            new_meta.pop(f, None)
    if old_meta.get("deletionTimestamp"):
        added = set(new_meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
        if added:
            raise errors.invalid(rt.kind, old_meta.get("name", ""), [errors.forbidden_field(
                "metadata.finalizers",
                f"no new finalizers can be added if the object is being deleted, found new "
                f"finalizers {sorted(added)}")], rt.group)
    if subresource != "status":
        decode_check(rt, new, opts)
    for_type(rt).prepare_update(rt, old, new, subresource)
    if subresource != "status":
        validate_common(svc, rt, new, opts)
    if (rt.generation or rt.custom is not None) and spec_changed(old, new):
        new_meta["generation"] = int(old_meta.get("generation") or 1) + 1


def spec_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    for key in set(old) | set(new):
        if key in ("metadata", "status", "apiVersion", "kind"):
            continue
        if old.get(key) != new.get(key):
            return True
    return False


async def track_managed_fields_async(rt: ResourceType, old: dict[str, Any] | None,
                                     new: dict[str, Any], opts: WriteOptions,
                                     **kwargs: Any) -> None:
    """``track_managed_fields``, on a worker thread for large bodies: computing the field sets
    of an object with tens of thousands of keys takes a few hundred milliseconds.  Safe there:
    it reads only ``old`` and ``new``, which belong to this request alone."""
    if opts.large:
        await http.offload(track_managed_fields, rt, old, new, opts, **kwargs)
    else:
        track_managed_fields(rt, old, new, opts, **kwargs)


def track_managed_fields(rt: ResourceType, old: dict[str, Any] | None, new: dict[str, Any],
                         opts: WriteOptions, *, operation: str = "Update",
                         subresource: str = "") -> None:
    """Record field ownership for non-apply writes (apply records its own).

    Bindings are not recorded, as upstream: the scheduler's ``nodeName`` is not a
    field anyone applies, and skipping it halves what a binding costs.
    """
    if operation == "Apply" or subresource == "binding":
        return
    manager = opts.field_manager or "unknown"
    try:
        managed = managedfields.track_update(
            old, new, manager=manager, api_version=opts.api_version or rt.group_version,
            now=rfc3339(),
            schema=schema_for(rt), subresource=subresource)
    except errors.ApiError:
        raise
    except Exception:  # ownership bookkeeping must never fail a write
        log.exception("cannot track managed fields of %s", rt.kind)
        return
    if managed:
        new["metadata"]["managedFields"] = managed
    else:
        new["metadata"].pop("managedFields", None)


def schema_for(rt: ResourceType) -> dict[str, Any] | None:
    """The schema that drives merges and field ownership: upstream's, or the CRD version's."""
    if rt.custom is not None:
        return rt.custom.schema.raw if rt.custom.schema is not None else None
    return schemas.schema_for(rt.group, rt.version, rt.kind)


class CustomResourceStrategy(Strategy):
    """Custom resources: schema work happens in ``custom.admit``; nothing kind-specific."""


_DEFAULT = Strategy()


def for_type(rt: ResourceType) -> Strategy:
    """The kind's strategy (built-ins, and CRD-served kinds that declare one), else the default."""
    return resources.strategy_for(rt.kind_key) or _DEFAULT


__all__ = [
    "STANDARD_FINALIZERS",
    "Strategy",
    "decode_check",
    "for_type",
    "prepare_update",
    "track_managed_fields",
    "validate_common",
]
