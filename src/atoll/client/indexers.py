"""The indexes controllers share (names as client-go's where it has one).

Each is a function from an object to the values it is filed under; register them on an
informer with ``add_indexer(NAME, fn)`` (the factory's ``informer(..., indexers=...)`` does).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

NAMESPACE = "namespace"
OWNER_UID = "owner-uid"
CONTROLLER_UID = "controller-uid"
NODE_NAME = "node-name"


def by_namespace(obj: dict[str, Any]) -> Iterable[str]:
    ns = (obj.get("metadata") or {}).get("namespace")
    return [ns] if ns else []


def by_owner_uid(obj: dict[str, Any]) -> Iterable[str]:
    """Every owner's uid (garbage collection: who depends on this owner)."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return [r["uid"] for r in refs if isinstance(r, dict) and isinstance(r.get("uid"), str)]


def by_controller_uid(obj: dict[str, Any]) -> Iterable[str]:
    """The managing controller's uid (``controller: true``), as workload controllers claim."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return [r["uid"] for r in refs if isinstance(r, dict) and r.get("controller")
            and isinstance(r.get("uid"), str)]


def by_node_name(obj: dict[str, Any]) -> Iterable[str]:
    """A pod's ``spec.nodeName`` (unscheduled pods are filed under "")."""
    spec = obj.get("spec") or {}
    name = spec.get("nodeName") if isinstance(spec, dict) else None
    return [name if isinstance(name, str) else ""]


STANDARD = {NAMESPACE: by_namespace, OWNER_UID: by_owner_uid,
            CONTROLLER_UID: by_controller_uid}
