"""What workload controllers share: pods from templates, expectations, readiness.

Expectations are upstream's answer to a controller racing its own informer:
after asking for N creations, a controller must not count again until its
informer has seen them (or a timeout passed), or it would create them twice.
``observe_pods`` is the pod-watch mapper that records what the informer saw.

Owned pods are found through the informer's controller-uid index and adoptable
ones through ``ORPHANS`` (pods without a controller, by namespace), never by
scanning every pod.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from atoll.api import errors
from atoll.api.timestamps import parse_rfc3339
from atoll.client import indexers as ix
from atoll.client.controller import Mapper, controller_owner
from atoll.client.events import NORMAL, WARNING, EventRecorder
from atoll.client.informer import Informer, object_key
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


def observe_pods(expectations: Expectations, owner_kind: str) -> Mapper:
    """A pod-watch mapper: the controlling owners (of ``owner_kind``) before and after the
    change, with the pod's arrival or departure counted against its owner's expectations."""

    def mapper(kind: str, pod: dict[str, Any], old: dict[str, Any] | None) -> Iterable[str]:
        keys = set()
        ns = pod["metadata"].get("namespace", "")
        ref = controller_owner(pod, owner_kind)
        if ref is not None:
            key = f"{ns}/{ref.get('name')}"
            if kind == "ADDED":
                expectations.created(key)
            if kind == "DELETED" or pod["metadata"].get("deletionTimestamp"):
                expectations.deleted(key, object_key(pod))
            keys.add(key)
        ref = controller_owner(old, owner_kind)
        if ref is not None:
            keys.add(f"{ns}/{ref.get('name')}")
        return keys

    return mapper


#: pods without a controller, by namespace: what a ReplicaSet may adopt
ORPHANS = "orphans-by-namespace"


def by_orphan_namespace(pod: dict[str, Any]) -> Iterable[str]:
    meta = pod.get("metadata") or {}
    return [meta["namespace"]] if meta.get("namespace") and controller_ref(pod) is None else []


def controlled_by(informer: Informer, owner: dict[str, Any]) -> list[dict[str, Any]]:
    """Objects in ``owner``'s namespace whose controller is ``owner`` (by uid, from the index)."""
    ns, uid = owner["metadata"].get("namespace"), owner["metadata"]["uid"]
    return [o for o in informer.by_index(ix.CONTROLLER_UID, uid)
            if o["metadata"].get("namespace") == ns]


def controller_ref(obj: dict[str, Any]) -> dict[str, Any] | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return ref
    return None


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"],
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": True}


def pod_path(pod: dict[str, Any]) -> str:
    meta = pod["metadata"]
    return f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"


async def claim(client: ApiClient, informer: Informer, owner: dict[str, Any], selector: Any,
                path_of: Callable[[dict[str, Any]], str]) -> list[dict[str, Any]]:
    """The objects ``owner`` controls (pods of a ReplicaSet, VMs of a VM replica set), as
    upstream's ControllerRefManager: owned ones that stop matching ``selector`` are released,
    matching orphans (``ORPHANS`` index) adopted; ``path_of`` is an object's API path."""
    out = []
    for obj in controlled_by(informer, owner):
        if selector.matches(obj["metadata"].get("labels")):
            out.append(obj)
        elif not obj["metadata"].get("deletionTimestamp"):
            await set_controller(client, obj, None, path_of(obj))
    if owner["metadata"].get("deletionTimestamp"):
        return out
    for obj in informer.by_index(ORPHANS, owner["metadata"]["namespace"]):
        if selector.matches(obj["metadata"].get("labels")) and \
                not obj["metadata"].get("deletionTimestamp") and \
                await set_controller(client, obj, owner, path_of(obj)):
            out.append(obj)
    return out


async def set_controller(client: ApiClient, obj: dict[str, Any], owner: dict[str, Any] | None,
                         path: str) -> bool:
    """Make ``owner`` the object's controller (None: release it), at the object's
    resourceVersion so a concurrent adopter loses; whether it took."""
    meta = obj["metadata"]
    refs = [r for r in meta.get("ownerReferences") or [] if not r.get("controller")]
    if owner is not None:
        refs.append(owner_reference(owner))
    try:
        await client.patch(path, {"metadata": {"ownerReferences": refs or None,
                                               "resourceVersion": meta["resourceVersion"]}})
        return True
    except (errors.NotFound, errors.Conflict):
        return False


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


async def create_pod(client: ApiClient, namespace: str, pod: dict[str, Any], *,
                     events: EventRecorder | None = None,
                     owner: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Create a pod; with ``events``, record it on ``owner`` as upstream's pod control does
    (SuccessfulCreate "Created pod: NAME", FailedCreate "Error creating: ...")."""
    try:
        created = await client.create(f"/api/v1/namespaces/{namespace}/pods", pod)
    except errors.AlreadyExists:
        return None
    except errors.ApiError as e:
        if events is not None and owner is not None:
            events.record(owner, WARNING, "FailedCreate", f"Error creating: {e}")
        raise
    if events is not None and owner is not None:
        events.record(owner, NORMAL, "SuccessfulCreate",
                      f"Created pod: {created['metadata']['name']}")
    return created


async def delete_pod(client: ApiClient, pod: dict[str, Any], *,
                     events: EventRecorder | None = None,
                     owner: dict[str, Any] | None = None) -> None:
    """Delete a pod (this incarnation only); with ``events``, SuccessfulDelete on ``owner``."""
    meta = pod["metadata"]
    try:
        await client.delete(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                            {"apiVersion": "v1", "kind": "DeleteOptions",
                             "preconditions": {"uid": meta["uid"]}})
    except (errors.NotFound, errors.Conflict):
        return
    if events is not None and owner is not None:
        events.record(owner, NORMAL, "SuccessfulDelete", f"Deleted pod: {meta['name']}")


def is_active(pod: dict[str, Any]) -> bool:
    """Counts toward replicas: not finished, not being deleted."""
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed") and \
        not pod["metadata"].get("deletionTimestamp")


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [] if isinstance(c, dict))


def ready_since(pod: dict[str, Any], now: float) -> float | None:
    """When the pod became ready (``now`` if its condition has no readable time)."""
    for c in (pod.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True":
            since = parse_rfc3339(c.get("lastTransitionTime"))
            return now if since is None else since
    return None


def is_available(pod: dict[str, Any], min_ready_seconds: int, now: float) -> bool:
    since = ready_since(pod, now)
    return since is not None and (min_ready_seconds <= 0 or now - since >= min_ready_seconds)


def deletion_rank(pod: dict[str, Any]) -> tuple[int, int, int, int, float]:
    """Upstream's order for scale-down: unscheduled, pending, not ready, restarts, newest."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}.get(status.get("phase", ""), 0)
    restarts = sum(int(c.get("restartCount", 0)) for c in status.get("containerStatuses") or [])
    created = parse_rfc3339(pod["metadata"].get("creationTimestamp")) or 0.0
    return (1 if spec.get("nodeName") else 0, phase_rank, 1 if is_ready(pod) else 0, -restarts,
            -created)
