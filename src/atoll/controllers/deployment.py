"""Deployments: a ReplicaSet per pod template, rolled over as upstream's controller does.

The ReplicaSet for the current template is ``<deployment>-<template hash>``
(the hash also labels its pods as ``pod-template-hash``) and carries the
revision annotation.  ``RollingUpdate`` grows it and shrinks the old ones
within ``maxSurge``/``maxUnavailable``; ``Recreate`` empties the old ones
first.  ``kubectl rollout undo`` works by writing an old template back: its
ReplicaSet becomes the new one again, with the next revision.  Old
ReplicaSets beyond ``revisionHistoryLimit`` are deleted.  Status and the
``Available``/``Progressing`` conditions are what ``kubectl rollout status``
reads.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
from typing import Any

from atoll.api import errors, selectors
from atoll.api.timestamps import parse_rfc3339, rfc3339
from atoll.client.controller import DONE, Builder, Controller, Result, requeue_after
from atoll.controllers import podcontrol

log = logging.getLogger(__name__)
HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
_SAFE = "bcdfghjklmnpqrstvwxz2456789"  # upstream's SafeEncodeString alphabet: no vowels


def template_hash(template: dict[str, Any], collisions: int = 0) -> str:
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256(data + str(collisions).encode()).digest()
    return "".join(_SAFE[b % len(_SAFE)] for b in digest[:10])


def _strip_hash(template: dict[str, Any]) -> dict[str, Any]:
    t = copy.deepcopy(template)
    labels = (t.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
    return t


def resolve(value: Any, total: int, round_up: bool) -> int:
    """maxSurge/maxUnavailable: an int, or a percentage of the replicas."""
    if isinstance(value, int):
        return max(0, value)
    if isinstance(value, str) and value.endswith("%"):
        try:
            pct = float(value[:-1])
        except ValueError:
            return 0
        amount = total * pct / 100
        return max(0, math.ceil(amount) if round_up else math.floor(amount))
    return 0


class DeploymentController(Controller):
    """Deployments (primary) own ReplicaSets: a ReplicaSet's change wakes its Deployment."""

    name = "deployment"
    default_workers = 4
    events_component = "deployment-controller"
    backoff = (0.05, 10.0)

    def declare(self, b: Builder) -> None:
        self.deployments = b.primary("apps", "v1", "deployments")
        self.sets = b.owns("apps", "v1", "replicasets", owner_kind="Deployment")

    def _now(self) -> str:
        return rfc3339(self.clock())

    async def reconcile(self, key: str) -> Result:
        d = self.deployments.get(key)
        if d is None or d["metadata"].get("deletionTimestamp"):
            return DONE
        spec = d.get("spec") or {}
        try:
            selectors.label_selector_from_dict(spec.get("selector"))
        except errors.ApiError:
            return DONE
        sets = podcontrol.controlled_by(self.sets, d)
        template = spec.get("template") or {}
        wanted_hash = template_hash(_strip_hash(template),
                                    int((d.get("status") or {}).get("collisionCount") or 0))
        new = next((rs for rs in sets if _strip_hash((rs.get("spec") or {}).get("template")
                                                     or {}) == _strip_hash(template)), None)
        old = [rs for rs in sets if rs is not new]
        replicas = int(spec.get("replicas", 1) or 0)
        if spec.get("paused"):
            return await self._status(d, new, old)
        if new is None:
            new = await self._create_new(d, wanted_hash, old, replicas)
            if new is None:
                return requeue_after(0.5)
        else:
            await self._sync_revision(d, new, old)
        strategy = (spec.get("strategy") or {}).get("type") or "RollingUpdate"
        if strategy == "Recreate":
            await self._recreate(d, new, old, replicas)
        else:
            await self._rolling(d, new, old, replicas)
        await self._cleanup(d, old)
        return await self._status(d, new, old)

    # -- the new ReplicaSet ---------------------------------------------------------------------
    async def _create_new(self, d: dict[str, Any], h: str, old: list[dict[str, Any]],
                          replicas: int) -> dict[str, Any] | None:
        spec = d["spec"]
        ns, name = d["metadata"]["namespace"], d["metadata"]["name"]
        template = copy.deepcopy(spec.get("template") or {})
        tmeta = template.setdefault("metadata", {})
        tmeta["labels"] = {**(tmeta.get("labels") or {}), HASH_LABEL: h}
        selector = copy.deepcopy(spec.get("selector") or {})
        selector["matchLabels"] = {**(selector.get("matchLabels") or {}), HASH_LABEL: h}
        revision = max([_revision(rs) for rs in old] + [0]) + 1
        surge = resolve((spec.get("strategy") or {}).get("rollingUpdate", {}).get("maxSurge",
                                                                                  "25%"),
                        replicas, True)
        first = not any(int((rs.get("spec") or {}).get("replicas") or 0) for rs in old)
        rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
              "metadata": {"name": f"{name}-{h}", "namespace": ns,
                           "labels": dict(tmeta["labels"]),
                           "annotations": {REVISION: str(revision), DESIRED: str(replicas),
                                           MAX_REPLICAS: str(replicas + surge)},
                           "ownerReferences": [podcontrol.owner_reference(d)]},
              "spec": {"replicas": replicas if first else 0, "selector": selector,
                       "minReadySeconds": int(spec.get("minReadySeconds") or 0),
                       "template": template}}
        try:
            created = await self.client.create(f"/apis/apps/v1/namespaces/{ns}/replicasets", rs)
        except errors.AlreadyExists:
            # a ReplicaSet of that name with another template: count a collision, try again
            count = int((d.get("status") or {}).get("collisionCount") or 0) + 1
            await self._patch_status(d, {"collisionCount": count})
            return None
        await self._emit(d, "Normal", "ScalingReplicaSet",
                         f"Scaled up replica set {rs['metadata']['name']} from 0 to "
                         f"{rs['spec']['replicas']}")
        return created

    async def _sync_revision(self, d: dict[str, Any], new: dict[str, Any],
                             old: list[dict[str, Any]]) -> None:
        """A rolled-back template's ReplicaSet becomes the newest revision again."""
        highest = max([_revision(rs) for rs in old] + [0])
        if _revision(new) <= highest:
            await self._patch_rs(new, annotations={REVISION: str(highest + 1)})

    # -- strategies ---------------------------------------------------------------------------------
    async def _recreate(self, d: dict[str, Any], new: dict[str, Any],
                        old: list[dict[str, Any]], replicas: int) -> None:
        running_old = [rs for rs in old if int((rs.get("spec") or {}).get("replicas") or 0)]
        for rs in running_old:
            await self._scale(d, rs, 0)
        if any(int((rs.get("status") or {}).get("replicas") or 0) for rs in old):
            return  # wait until the old pods are gone
        if int((new.get("spec") or {}).get("replicas") or 0) != replicas:
            await self._scale(d, new, replicas)

    async def _rolling(self, d: dict[str, Any], new: dict[str, Any],
                       old: list[dict[str, Any]], replicas: int) -> None:
        ru = ((d["spec"].get("strategy") or {}).get("rollingUpdate") or {})
        surge = resolve(ru.get("maxSurge", "25%"), replicas, True)
        unavailable = resolve(ru.get("maxUnavailable", "25%"), replicas, False)
        if surge == 0 and unavailable == 0:
            unavailable = 1
        new_spec = int((new.get("spec") or {}).get("replicas") or 0)
        old_specs = [int((rs.get("spec") or {}).get("replicas") or 0) for rs in old]
        total = new_spec + sum(old_specs)
        # scale the new ReplicaSet up within the surge
        if new_spec < replicas:
            room = replicas + surge - total
            target = min(replicas, new_spec + max(0, room))
            if target > new_spec:
                await self._scale(d, new, target)
                new_spec = target
        elif new_spec > replicas:
            await self._scale(d, new, replicas)
            new_spec = replicas
        if not any(old_specs):
            return
        # scale old ones down as far as availability allows
        min_available = replicas - unavailable
        available = sum(int((rs.get("status") or {}).get("availableReplicas") or 0)
                        for rs in [new, *old])
        new_unavailable = max(0, new_spec - int((new.get("status") or {})
                                                 .get("availableReplicas") or 0))
        all_pods = new_spec + sum(old_specs)
        budget = max(0, all_pods - min_available - new_unavailable)
        # old pods that are not available anyway can go at once
        for rs, count in sorted(zip(old, old_specs), key=lambda x: _revision(x[0])):
            if count == 0:
                continue
            unhealthy = max(0, count - int((rs.get("status") or {})
                                           .get("availableReplicas") or 0))
            cut = min(count, max(unhealthy, budget))
            if available - (cut - unhealthy) < min_available:
                cut = min(count, unhealthy + max(0, available - min_available))
            if cut > 0:
                await self._scale(d, rs, count - cut)
                budget = max(0, budget - cut)
                available -= max(0, cut - unhealthy)

    async def _scale(self, d: dict[str, Any], rs: dict[str, Any], replicas: int) -> None:
        before = int((rs.get("spec") or {}).get("replicas") or 0)
        if before == replicas:
            return
        await self._patch_rs(rs, replicas=replicas,
                             annotations={DESIRED: str(int(d["spec"].get("replicas", 1) or 0))})
        verb = "up" if replicas > before else "down"
        await self._emit(d, "Normal", "ScalingReplicaSet",
                         f"Scaled {verb} replica set {rs['metadata']['name']} from {before} to "
                         f"{replicas}")

    async def _patch_rs(self, rs: dict[str, Any], *, replicas: int | None = None,
                        annotations: dict[str, str] | None = None) -> None:
        body: dict[str, Any] = {"metadata": {"resourceVersion": rs["metadata"]["resourceVersion"]}}
        if annotations:
            body["metadata"]["annotations"] = annotations
        if replicas is not None:
            body["spec"] = {"replicas": replicas}
        ns, name = rs["metadata"]["namespace"], rs["metadata"]["name"]
        await self.client.patch(f"/apis/apps/v1/namespaces/{ns}/replicasets/{name}", body)

    async def _cleanup(self, d: dict[str, Any], old: list[dict[str, Any]]) -> None:
        limit = d["spec"].get("revisionHistoryLimit", 10)
        if not isinstance(limit, int):
            return
        idle = sorted((rs for rs in old if not int((rs.get("spec") or {}).get("replicas") or 0)
                       and not int((rs.get("status") or {}).get("replicas") or 0)),
                      key=_revision)
        for rs in idle[:max(0, len(idle) - limit)]:
            ns, name = rs["metadata"]["namespace"], rs["metadata"]["name"]
            try:
                await self.client.delete(f"/apis/apps/v1/namespaces/{ns}/replicasets/{name}")
            except errors.NotFound:
                pass

    # -- status -----------------------------------------------------------------------------------------
    async def _status(self, d: dict[str, Any], new: dict[str, Any] | None,
                      old: list[dict[str, Any]]) -> Result:
        spec = d.get("spec") or {}
        replicas = int(spec.get("replicas", 1) or 0)
        sets = ([new] if new else []) + old
        total = sum(int((rs.get("status") or {}).get("replicas") or 0) for rs in sets)
        ready = sum(int((rs.get("status") or {}).get("readyReplicas") or 0) for rs in sets)
        available = sum(int((rs.get("status") or {}).get("availableReplicas") or 0)
                        for rs in sets)
        updated = int(((new or {}).get("status") or {}).get("replicas") or 0)
        ru = ((spec.get("strategy") or {}).get("rollingUpdate") or {})
        max_unavailable = resolve(ru.get("maxUnavailable", "25%"), replicas, False) \
            if (spec.get("strategy") or {}).get("type", "RollingUpdate") == "RollingUpdate" \
            else 0
        previous = {c.get("type"): c for c in (d.get("status") or {}).get("conditions") or []
                    if isinstance(c, dict)}
        complete = (new is not None and updated == replicas and total == replicas
                    and available >= replicas
                    and int(((new.get("status") or {}).get("observedGeneration")) or 0)
                    >= int(new["metadata"].get("generation") or 1))
        now = self._now()
        conditions = [
            _condition(now, previous.get("Available"), "Available",
                       available >= replicas - max_unavailable,
                       "MinimumReplicasAvailable" if available >= replicas - max_unavailable
                       else "MinimumReplicasUnavailable",
                       "Deployment has minimum availability." if available >= replicas -
                       max_unavailable else "Deployment does not have minimum availability."),
            self._progressing(d, new, previous.get("Progressing"), complete,
                              progressed=(updated, ready, available) != _counts(d)),
        ]
        status: dict[str, Any] = {
            "observedGeneration": d["metadata"].get("generation", 1),
            "replicas": total, "updatedReplicas": updated, "readyReplicas": ready,
            "availableReplicas": available,
            "unavailableReplicas": max(0, replicas - available) if total else replicas,
            "conditions": conditions,
        }
        if (d.get("status") or {}).get("collisionCount"):
            status["collisionCount"] = d["status"]["collisionCount"]
        await self._patch_status(d, status)
        deadline = spec.get("progressDeadlineSeconds")
        if not complete and isinstance(deadline, int):
            return requeue_after(min(deadline, 30))  # look again for the progress deadline
        return DONE

    def _progressing(self, d: dict[str, Any], new: dict[str, Any] | None,
                     old: dict[str, Any] | None, complete: bool, *,
                     progressed: bool) -> dict[str, Any]:
        """Progressing, as upstream: its lastUpdateTime moves whenever the rollout moves."""
        name = (new or {}).get("metadata", {}).get("name", "")
        now = self._now()
        if d["spec"].get("paused"):
            paused = _condition(now, old, "Progressing", True, "DeploymentPaused",
                                "Deployment is paused")
            paused["status"] = "Unknown"
            return paused
        if complete:
            return _condition(now, old, "Progressing", True, "NewReplicaSetAvailable",
                              f'ReplicaSet "{name}" has successfully progressed.')
        deadline = d["spec"].get("progressDeadlineSeconds")
        if old and isinstance(deadline, int) and old.get("status") == "True":
            since = parse_rfc3339(old.get("lastUpdateTime"))
            if since is not None and self.clock() - since > deadline:
                return _condition(now, old, "Progressing", False, "ProgressDeadlineExceeded",
                                  f'ReplicaSet "{name}" has timed out progressing.')
        cond = _condition(now, old, "Progressing", True, "ReplicaSetUpdated",
                          f'ReplicaSet "{name}" is progressing.')
        if progressed:
            cond["lastUpdateTime"] = now
        return cond

    async def _patch_status(self, d: dict[str, Any], status: dict[str, Any]) -> None:
        current = d.get("status") or {}
        if all(current.get(k) == v for k, v in status.items()):
            return
        ns, name = d["metadata"]["namespace"], d["metadata"]["name"]
        try:
            await self.client.patch(f"/apis/apps/v1/namespaces/{ns}/deployments/{name}/status",
                                    {"status": status})
        except errors.NotFound:
            pass

    async def _emit(self, d: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.record(d, type_, reason, message)


def _condition(now: str, old: dict[str, Any] | None, type_: str, ok: bool, reason: str,
               message: str) -> dict[str, Any]:
    """A condition keeping its times while nothing about it changes (a Deployment's carry
    ``lastUpdateTime`` too, which ``atoll.api.conditions`` does not keep)."""
    status = "True" if ok else "False"
    same_status = old is not None and old.get("status") == status
    unchanged = same_status and old is not None and old.get("reason") == reason
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "lastUpdateTime": (old or {}).get("lastUpdateTime", now) if unchanged else now,
            "lastTransitionTime": (old or {}).get("lastTransitionTime", now) if same_status
            else now}


def _counts(d: dict[str, Any]) -> tuple[int, int, int]:
    """(updated, ready, available) replicas last reported: progress is a change in them."""
    status = d.get("status") or {}
    return (int(status.get("updatedReplicas") or 0), int(status.get("readyReplicas") or 0),
            int(status.get("availableReplicas") or 0))


def _revision(rs: dict[str, Any]) -> int:
    try:
        return int(((rs.get("metadata") or {}).get("annotations") or {}).get(REVISION, 0))
    except (TypeError, ValueError):
        return 0

