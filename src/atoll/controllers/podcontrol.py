"""What workload controllers share: pods from templates, expectations, readiness.

Expectations are upstream's answer to a controller racing its own informer:
after asking for N creations, a controller must not count again until its
informer has seen them (or a timeout passed), or it would create them twice.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

from atoll.api import errors
from atoll.client.rest import ApiClient

EXPECTATIONS_TTL = 30.0


@dataclass
class _Expected:
    adds: int = 0
    dels: set[str] = field(default_factory=set)
    at: float = field(default_factory=time.monotonic)


class Expectations:
    def __init__(self) -> None:
        self._by_key: dict[str, _Expected] = {}

    def satisfied(self, key: str) -> bool:
        e = self._by_key.get(key)
        if e is None or (e.adds <= 0 and not e.dels):
            return True
        return time.monotonic() - e.at > EXPECTATIONS_TTL  # lost events: count afresh

    def expect(self, key: str, adds: int = 0, dels: set[str] | None = None) -> None:
        self._by_key[key] = _Expected(adds=adds, dels=set(dels or ()))

    def created(self, key: str) -> None:
        e = self._by_key.get(key)
        if e is not None:
            e.adds -= 1

    def deleted(self, key: str, pod_key: str) -> None:
        e = self._by_key.get(key)
        if e is not None:
            e.dels.discard(pod_key)

    def forget(self, key: str) -> None:
        self._by_key.pop(key, None)


def controller_ref(obj: dict[str, Any]) -> dict[str, Any] | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return ref
    return None


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"],
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": True}


def pod_from_template(owner: dict[str, Any], template: dict[str, Any], *,
                      generate_name: str = "", name: str = "",
                      extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta = copy.deepcopy(template.get("metadata") or {})
    pod_meta: dict[str, Any] = {
        "labels": {**(meta.get("labels") or {}), **(extra_labels or {})},
        "ownerReferences": [owner_reference(owner)],
    }
    if meta.get("annotations"):
        pod_meta["annotations"] = meta["annotations"]
    if name:
        pod_meta["name"] = name
    else:
        pod_meta["generateName"] = generate_name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta,
            "spec": copy.deepcopy(template.get("spec") or {})}


async def create_pod(client: ApiClient, namespace: str, pod: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return await client.create(f"/api/v1/namespaces/{namespace}/pods", pod)
    except errors.AlreadyExists:
        return None


async def delete_pod(client: ApiClient, pod: dict[str, Any]) -> None:
    meta = pod["metadata"]
    try:
        await client.delete(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                            {"apiVersion": "v1", "kind": "DeleteOptions",
                             "preconditions": {"uid": meta["uid"]}})
    except (errors.NotFound, errors.Conflict):
        pass


def is_active(pod: dict[str, Any]) -> bool:
    """Counts toward replicas: not finished, not being deleted."""
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed") and \
        not pod["metadata"].get("deletionTimestamp")


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [] if isinstance(c, dict))


def ready_since(pod: dict[str, Any]) -> float | None:
    import datetime as dt

    for c in (pod.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True":
            try:
                return dt.datetime.fromisoformat(str(c.get("lastTransitionTime"))
                                                 .replace("Z", "+00:00")).timestamp()
            except ValueError:
                return time.time()
    return None


def is_available(pod: dict[str, Any], min_ready_seconds: int, now: float) -> bool:
    since = ready_since(pod)
    return since is not None and (min_ready_seconds <= 0 or now - since >= min_ready_seconds)


def deletion_rank(pod: dict[str, Any]) -> tuple[int, int, int, int, float]:
    """Upstream's order for scale-down: unscheduled, pending, not ready, restarts, newest."""
    import datetime as dt

    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}.get(status.get("phase", ""), 0)
    restarts = sum(int(c.get("restartCount", 0)) for c in status.get("containerStatuses") or [])
    try:
        created = dt.datetime.fromisoformat(str(pod["metadata"].get("creationTimestamp"))
                                            .replace("Z", "+00:00")).timestamp()
    except ValueError:
        created = 0.0
    return (1 if spec.get("nodeName") else 0, phase_rank, 1 if is_ready(pod) else 0, -restarts,
            -created)
