"""StatefulSets: pods with stable names and claims, created and removed in order.

Pod ``i`` is ``<set>-<i>`` with hostname ``<set>-<i>``, the ``serviceName``
as subdomain, and a PersistentVolumeClaim ``<template>-<set>-<i>`` per
``volumeClaimTemplates`` entry, created once and kept.  ``OrderedReady`` makes
pod i+1 only once pod i runs and is ready, and removes from the highest
ordinal down, one at a time; ``Parallel`` does both at once.  A template
change replaces pods from the highest ordinal down to ``partition``, one at a
time, each after the others are ready.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from typing import Any

from atoll.api import errors, selectors
from atoll.client.controller import DONE, Builder, Controller, Result
from atoll.client.events import NORMAL, WARNING
from atoll.controllers import podcontrol

log = logging.getLogger(__name__)
HASH_LABEL = "controller-revision-hash"
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"


def revision_name(sts: dict[str, Any]) -> str:
    template = (sts.get("spec") or {}).get("template") or {}
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    return f"{sts['metadata']['name']}-{hashlib.sha256(data).hexdigest()[:10]}"


def claim_name(template: dict[str, Any], sts: dict[str, Any], ordinal: int) -> str:
    return f"{(template.get('metadata') or {}).get('name')}-{sts['metadata']['name']}-{ordinal}"


class StatefulSetController(Controller):
    """StatefulSets (primary) own pods; no expectations: pod names are fixed, so a second
    create of the same ordinal is an AlreadyExists, not a duplicate."""

    name = "statefulset"
    default_workers = 2
    backoff = (0.05, 10.0)

    def declare(self, b: Builder) -> None:
        self.sets = b.primary("apps", "v1", "statefulsets")
        self.pods = b.owns("", "v1", "pods", owner_kind="StatefulSet")

    def _pods(self, sts: dict[str, Any]) -> dict[int, dict[str, Any]]:
        """The set's pods by ordinal (``<set>-<i>``)."""
        name = sts["metadata"]["name"]
        out = {}
        for pod in podcontrol.controlled_by(self.pods, sts):
            prefix, _, ordinal = pod["metadata"].get("name", "").rpartition("-")
            if prefix == name and ordinal.isdigit():
                out[int(ordinal)] = pod
        return out

    async def reconcile(self, key: str) -> Result:
        sts = self.sets.get(key)
        if sts is None or sts["metadata"].get("deletionTimestamp"):
            return DONE
        spec = sts.get("spec") or {}
        try:
            selectors.label_selector_from_dict(spec.get("selector"))
        except errors.ApiError:
            return DONE
        replicas = int(spec.get("replicas", 1) or 0)
        start = int(((spec.get("ordinals") or {}).get("start")) or 0)
        wanted = range(start, start + replicas)
        ordered = (spec.get("podManagementPolicy") or "OrderedReady") == "OrderedReady"
        update = revision_name(sts)
        pods = self._pods(sts)
        # failed pods are replaced
        for i, pod in list(pods.items()):
            if (pod.get("status") or {}).get("phase") == "Failed" and \
                    not pod["metadata"].get("deletionTimestamp"):
                await self._delete(sts, pod)
                return DONE
        for i in wanted:
            pod = pods.get(i)
            if pod is None:
                await self._create(sts, i, update)
                if ordered:
                    break
                continue
            if ordered and not _running_and_ready(pod):
                break
        else:
            # everything wanted exists (and, ordered, is ready): scale down, then roll
            extra = sorted((i for i in pods if i not in wanted), reverse=True)
            if extra:
                targets = extra[:1] if ordered else extra
                for i in targets:
                    if not pods[i]["metadata"].get("deletionTimestamp"):
                        await self._delete(sts, pods[i])
            elif all(_running_and_ready(pods[i]) for i in wanted if i in pods):
                await self._roll(sts, pods, wanted, update)
        await self._status(sts, pods, update)
        return DONE

    async def _create(self, sts: dict[str, Any], ordinal: int, revision: str) -> None:
        spec = sts["spec"]
        ns, name = sts["metadata"]["namespace"], sts["metadata"]["name"]
        pod_name = f"{name}-{ordinal}"
        template = copy.deepcopy(spec.get("template") or {})
        pod = podcontrol.pod_from_template(sts, template, name=pod_name, extra_labels={
            POD_NAME_LABEL: pod_name, POD_INDEX_LABEL: str(ordinal), HASH_LABEL: revision})
        pod["spec"]["hostname"] = pod_name
        if spec.get("serviceName"):
            pod["spec"]["subdomain"] = spec["serviceName"]
        volumes = [v for v in pod["spec"].get("volumes") or []]
        for claim in spec.get("volumeClaimTemplates") or []:
            cname = claim_name(claim, sts, ordinal)
            await self._ensure_claim(sts, claim, cname)
            vol_name = (claim.get("metadata") or {}).get("name")
            volumes = [v for v in volumes if v.get("name") != vol_name]
            volumes.append({"name": vol_name, "persistentVolumeClaim": {"claimName": cname}})
        if volumes:
            pod["spec"]["volumes"] = volumes
        try:
            created = await podcontrol.create_pod(self.client, ns, pod)
        except errors.ApiError as e:
            self.events.record(sts, WARNING, "FailedCreate", f"create Pod {pod_name} in "
                                                             f"StatefulSet {name} failed error: {e}")
            raise
        if created is not None:
            self.events.record(sts, NORMAL, "SuccessfulCreate",
                               f"create Pod {pod_name} in StatefulSet {name} successful")

    async def _delete(self, sts: dict[str, Any], pod: dict[str, Any]) -> None:
        """Delete a pod, recorded in upstream's words."""
        await podcontrol.delete_pod(self.client, pod)
        self.events.record(sts, NORMAL, "SuccessfulDelete",
                           f"delete Pod {pod['metadata']['name']} in StatefulSet "
                           f"{sts['metadata']['name']} successful")

    async def _ensure_claim(self, sts: dict[str, Any], claim: dict[str, Any], name: str) -> None:
        ns = sts["metadata"]["namespace"]
        labels = ((sts.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        body = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": ns,
                             "labels": {**((claim.get("metadata") or {}).get("labels") or {}),
                                        **labels}},
                "spec": copy.deepcopy(claim.get("spec") or {})}
        try:
            await self.client.create(f"/api/v1/namespaces/{ns}/persistentvolumeclaims", body)
        except errors.AlreadyExists:
            pass

    async def _roll(self, sts: dict[str, Any], pods: dict[int, dict[str, Any]],
                    wanted: range, update: str) -> None:
        strategy = (sts["spec"].get("updateStrategy") or {})
        if strategy.get("type", "RollingUpdate") != "RollingUpdate":
            return  # OnDelete: users delete pods themselves
        partition = int(((strategy.get("rollingUpdate") or {}).get("partition")) or 0)
        for i in sorted(wanted, reverse=True):
            if i < partition or i not in pods:
                continue
            if (pods[i]["metadata"].get("labels") or {}).get(HASH_LABEL) != update:
                if not pods[i]["metadata"].get("deletionTimestamp"):
                    await self._delete(sts, pods[i])
                return

    async def _status(self, sts: dict[str, Any], pods: dict[int, dict[str, Any]],
                      update: str) -> None:
        live = [p for p in pods.values() if podcontrol.is_active(p)]
        min_ready = int((sts.get("spec") or {}).get("minReadySeconds") or 0)
        now = self.clock()
        updated = sum(1 for p in live if (p["metadata"].get("labels") or {}).get(HASH_LABEL)
                      == update)
        current = dict(sts.get("status") or {})
        current_revision = current.get("currentRevision") or update
        replicas = int((sts.get("spec") or {}).get("replicas", 1) or 0)
        if updated == len(live) == replicas:
            current_revision = update
        status = {
            "observedGeneration": sts["metadata"].get("generation", 1),
            "replicas": len(live),
            "readyReplicas": sum(1 for p in live if podcontrol.is_ready(p)),
            "availableReplicas": sum(1 for p in live
                                     if podcontrol.is_available(p, min_ready, now)),
            "currentReplicas": sum(1 for p in live if (p["metadata"].get("labels") or {})
                                   .get(HASH_LABEL) == current_revision),
            "updatedReplicas": updated,
            "currentRevision": current_revision,
            "updateRevision": update,
        }
        if all(current.get(k) == v for k, v in status.items()):
            return
        ns, name = sts["metadata"]["namespace"], sts["metadata"]["name"]
        try:
            await self.client.patch(
                f"/apis/apps/v1/namespaces/{ns}/statefulsets/{name}/status", {"status": status})
        except errors.NotFound:
            pass


def _running_and_ready(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running" and podcontrol.is_ready(pod) \
        and not pod["metadata"].get("deletionTimestamp")

