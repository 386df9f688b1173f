"""The ``scale`` subresource: an ``autoscaling/v1 Scale`` view of an object's replicas.

``kubectl scale`` PATCHes ``{"spec":{"replicas":N}}`` here; the write lands in
the parent object's replica field (``spec.replicas`` for built-ins, the CRD's
``specReplicasPath`` for custom resources).
"""

from __future__ import annotations

from typing import Any

from atoll.api import errors, patch as patching, selectors
from atoll.api.kinds import ResourceType
from atoll.apiserver.objects import ObjectService, WriteOptions, conflict


def _paths(rt: ResourceType) -> tuple[str, str, str]:
    if rt.custom is not None and rt.custom.scale:
        s = rt.custom.scale
        return (s.get("specReplicasPath", ".spec.replicas"),
                s.get("statusReplicasPath", ".status.replicas"),
                s.get("labelSelectorPath", ""))
    return ".spec.replicas", ".status.replicas", ""


def _get_path(obj: dict[str, Any], path: str) -> Any:
    cur: Any = obj
    for part in path.lstrip(".").split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def _set_path(obj: dict[str, Any], path: str, value: Any) -> None:
    parts = path.lstrip(".").split(".")
    cur = obj
    for part in parts[:-1]:
        nxt = cur.get(part)
        if not isinstance(nxt, dict):
            nxt = cur[part] = {}
        cur = nxt
    cur[parts[-1]] = value


def to_scale(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    spec_path, status_path, selector_path = _paths(rt)
    meta = obj["metadata"]
    if selector_path:
        selector = _get_path(obj, selector_path) or ""
    else:
        sel = (obj.get("spec") or {}).get("selector")
        if rt.kind_key == "/ReplicationController" and isinstance(sel, dict):
            sel = {"matchLabels": sel}  # a plain label map
        selector = selectors.selector_to_string(sel) if isinstance(sel, dict) else ""
    status: dict[str, Any] = {"replicas": int(_get_path(obj, status_path) or 0)}
    if selector:
        status["selector"] = selector
    return {
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                          "creationTimestamp") if k in meta},
        "spec": {"replicas": int(_get_path(obj, spec_path) or 0)},
        "status": status,
    }


def get(svc: ObjectService, rt: ResourceType, namespace: str, name: str) -> dict[str, Any]:
    return to_scale(rt, svc.get(rt, namespace, name).obj)


async def update(svc: ObjectService, rt: ResourceType, namespace: str, name: str,
                 body: dict[str, Any], opts: WriteOptions) -> dict[str, Any]:
    replicas = (body.get("spec") or {}).get("replicas") if isinstance(body.get("spec"), dict) else None
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise errors.invalid("Scale", name, [errors.invalid_value(
            "spec.replicas", replicas, "must be greater than or equal to 0")], "autoscaling")
    expected = (body.get("metadata") or {}).get("resourceVersion") if isinstance(
        body.get("metadata"), dict) else None
    spec_path = _paths(rt)[0]

    def mutate(current: dict[str, Any]) -> dict[str, Any]:
        if expected and expected != current["metadata"].get("resourceVersion"):
            raise conflict(rt, name)
        _set_path(current, spec_path, replicas)
        return current

    obj = await svc.guaranteed_update(rt, namespace, name, mutate, opts, subresource="scale",
                                      has_precondition=bool(expected))
    return to_scale(rt, obj)


async def patch(svc: ObjectService, rt: ResourceType, namespace: str, name: str, kind: str,
                doc: Any, opts: WriteOptions) -> dict[str, Any]:
    current = get(svc, rt, namespace, name)
    if kind == "json":
        new = patching.json_patch(current, doc)
    elif kind in ("merge", "strategic", "apply"):
        if not isinstance(doc, dict):
            raise errors.BadRequest("the patch must be a JSON object")
        new = patching.merge_patch(current, doc)
    else:  # pragma: no cover - callers only pass known kinds
        raise errors.UnsupportedMediaType("unsupported patch type")
    if not isinstance(new, dict):
        raise errors.BadRequest("the patched Scale must be an object")
    if (new.get("metadata") or {}).get("resourceVersion") == current["metadata"].get("resourceVersion"):
        new.setdefault("metadata", {}).pop("resourceVersion", None)
    return await update(svc, rt, namespace, name, new, opts)
