"""Where stored custom resources change version: the hook between the HTTP handlers and
the store for CRDs that have an in-process converter (``atoll.api.crdconversion``).

Objects are stored in the CRD's storage version and leave the server in the version the
client asked for: ``serve`` on every read (get, list, watch events, tables, the answers to
writes), ``store`` on every write.  The request's own version schema checks the body first
(``admit_request``: unknown fields, defaults, validation, with that version's field paths),
as apiextensions does before converting to the storage version.  ``migrate`` rewrites
objects stored in older versions and then trims the CRD's ``status.storedVersions``, as
kube-storage-version-migrator does after a storage version changes.
"""

from __future__ import annotations

import logging
from typing import Any

from atoll.api import errors
from atoll.api.crdconversion import Converter
from atoll.api.resourcetype import ResourceType
from atoll.api.strategy import WriteOptions

log = logging.getLogger(__name__)


def converter(rt: ResourceType) -> Converter | None:
    return getattr(rt.custom, "converter", None) if rt.custom is not None else None


def serve(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    """A stored object (any version) as ``rt``'s version."""
    conv = converter(rt)
    if conv is None or obj.get("apiVersion") == rt.group_version:
        return obj
    try:
        return conv.convert(obj, rt.group_version)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        log.exception("cannot convert %s %s", rt.kind, (obj.get("metadata") or {}).get("name"))
        raise errors.InternalError(f"conversion of {rt.kind} to {rt.group_version} failed: "
                                   f"{e}") from None


def store(rt: ResourceType, st: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    """A request body of ``rt``'s version as the storage version ``st``."""
    conv = converter(rt)
    assert conv is not None
    try:
        return conv.convert(obj, st.group_version)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise errors.BadRequest(f"cannot convert {rt.kind} from {rt.group_version} to "
                                f"{st.group_version}: {e}") from None


def admit_request(rt: ResourceType, obj: dict[str, Any], opts: WriteOptions,
                  subresource: str = "") -> None:
    """Prune, default and validate in the request's version (status writes skip it, as the
    write pipeline does for them)."""
    if rt.custom is None or subresource == "status":
        return
    rt.custom.admit(rt, obj, opts)


async def migrate(svc: Any, registry: Any, crd_type: ResourceType, crd_name: str) -> int:
    """Rewrite every object of a CRD not stored in its storage version; then record that
    only the storage version is in storage.  Returns how many objects were rewritten."""
    types = registry.custom_types(crd_name)
    if not types:
        return 0
    st = registry.storage_type(types[0])
    conv = converter(st)
    if conv is None:
        return 0
    opts = WriteOptions(field_manager="atoll-storage-version-migrator")
    rewritten = 0
    for cached in svc.cacher.list(st.prefix("")):
        if cached.obj.get("apiVersion") == st.group_version:
            continue
        meta = cached.obj.get("metadata") or {}

        def mutate(current: dict[str, Any]) -> dict[str, Any]:
            return conv.convert(current, st.group_version)
        try:
            await svc.guaranteed_update(st, meta.get("namespace", ""), meta["name"], mutate, opts)
            rewritten += 1
        except errors.NotFound:
            continue
        except errors.ApiError:
            log.exception("cannot migrate %s %s/%s", st.kind, meta.get("namespace"),
                          meta.get("name"))
            return rewritten  # keep storedVersions as they are: an old object remains

    def trim(crd: dict[str, Any]) -> dict[str, Any]:
        crd.setdefault("status", {})["storedVersions"] = [st.version]
        return crd
    crd = svc.get(crd_type, "", crd_name).obj
    if (crd.get("status") or {}).get("storedVersions") != [st.version]:
        await svc.guaranteed_update(crd_type, "", crd_name, trim, opts, subresource="status")
    return rewritten
