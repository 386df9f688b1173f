"""Writing part of an object's status (or its finalizers) when others write the rest.

A merge patch replaces lists whole, so two writers of ``status.conditions`` (the
VM controller and the host agent, say) would erase each other's conditions.
Each write here is computed from the object as last read and pinned to its
``resourceVersion``; on a conflict the object is read again and the change
recomputed, as client-go's ``RetryOnConflict`` does.
"""

from __future__ import annotations

from typing import Any, Callable

from atoll.api import errors
from atoll.client.rest import ApiClient

#: given the current object, the merge patch to apply, or None when nothing needs changing
Change = Callable[[dict[str, Any]], dict[str, Any] | None]


async def patch_with_retry(client: ApiClient, path: str, current: dict[str, Any], change: Change,
                           *, subresource: str = "", attempts: int = 8) -> dict[str, Any]:
    """Apply ``change`` to ``current`` (re-read on conflicts); the object as written."""
    url = f"{path}/{subresource}" if subresource else path
    obj = current
    for _ in range(attempts):
        body = change(obj)
        if body is None:
            return obj
        body = dict(body)
        body["metadata"] = dict(body.get("metadata") or {},
                                resourceVersion=obj["metadata"].get("resourceVersion", ""))
        try:
            return await client.patch(url, body)
        except errors.Conflict:
            obj = await client.get(path)
    raise errors.Conflict(f"{path}: still conflicting after {attempts} attempts")


def without_finalizer(finalizer: str) -> Change:
    def change(obj: dict[str, Any]) -> dict[str, Any] | None:
        finalizers = obj["metadata"].get("finalizers") or []
        if finalizer not in finalizers:
            return None
        return {"metadata": {"finalizers": [f for f in finalizers if f != finalizer]}}
    return change


def with_finalizer(finalizer: str) -> Change:
    def change(obj: dict[str, Any]) -> dict[str, Any] | None:
        finalizers = obj["metadata"].get("finalizers") or []
        if finalizer in finalizers or obj["metadata"].get("deletionTimestamp"):
            return None
        return {"metadata": {"finalizers": [*finalizers, finalizer]}}
    return change


async def patch_status_if_changed(client: ApiClient, path: str, current: dict[str, Any],
                                  status: dict[str, Any]) -> None:
    """Merge-patch ``status`` (a value None removes a field) to ``path`` unless the object's
    status already says so; an object deleted meanwhile is fine.  For controllers that own
    the fields they write (Jobs, CronJobs), so no pinning is needed."""
    have = current.get("status") or {}
    if all(have.get(k) == v for k, v in status.items() if v is not None) and \
            not any(have.get(k) is not None for k, v in status.items() if v is None):
        return
    try:
        await client.patch(path, {"status": status})
    except errors.NotFound:
        pass
