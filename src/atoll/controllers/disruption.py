"""PodDisruptionBudgets: how many of a budget's pods may be disrupted now, as
kube-controller-manager's disruption controller computes it.

For each budget: the pods its selector picks, how many are expected (the pods themselves for
an integer ``minAvailable``; the scale of their controllers for ``maxUnavailable`` or a
percentage), how many must stay healthy, how many are (Ready, not being deleted, not just
evicted), and so ``status.disruptionsAllowed``.  The eviction subresource reads that number
and takes one off it (recording the pod in ``status.disruptedPods``) before it deletes a pod;
entries there expire after ``DISRUPTED_POD_TIMEOUT`` if the deletion never shows up, so a lost
eviction cannot hold a budget down forever.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from atoll.api import conditions, errors
from atoll.api.labelselector import label_selector_from_dict
from atoll.api.timestamps import parse_rfc3339
from atoll.client import indexers as ix
from atoll.client.controller import DONE, Builder, Controller, Result, requeue_after
from atoll.client.events import WARNING
from atoll.client.informer import object_key

#: as upstream's DeletionTimeout: an evicted pod still not deleted after this counts again
DISRUPTED_POD_TIMEOUT = 120.0
#: workload kinds whose replica count is read from the cache (others through ``/scale``)
_CACHED_SCALES = {("apps", "ReplicaSet"): "replicasets", ("apps", "Deployment"): "deployments",
                  ("apps", "StatefulSet"): "statefulsets"}


def ready(pod: dict[str, Any]) -> bool:
    return conditions.is_true((pod.get("status") or {}).get("conditions"), "Ready")


def scaled(value: Any, total: int, round_up: bool) -> int | None:
    """An IntOrString (``2`` or ``"30%"``) against ``total``; None when it is neither."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.endswith("%") and value[:-1].isdigit():
        amount = total * int(value[:-1]) / 100
        return math.ceil(amount) if round_up else math.floor(amount)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def desired_healthy(spec: dict[str, Any], expected: int) -> int:
    """How many pods must stay healthy, given how many are expected."""
    if spec.get("maxUnavailable") is not None:
        unavailable = scaled(spec["maxUnavailable"], expected, True) or 0
        return max(0, expected - unavailable)
    value = spec.get("minAvailable", 1)
    return max(0, scaled(value, expected, True) or 0)


def _group(api_version: str) -> str:
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


class DisruptionController(Controller):
    """PodDisruptionBudgets (primary); pod changes wake the budgets that select them."""

    name = "disruption"
    default_workers = 2
    events_component = "controllermanager"
    backoff = (0.2, 30.0)

    def declare(self, b: Builder) -> None:
        self.pdbs = b.primary("policy", "v1", "poddisruptionbudgets")
        self.pods = b.watches("", "v1", "pods", self._budgets_of)
        self.scales = {kind: b.reads(group, "v1", plural)
                       for (group, kind), plural in _CACHED_SCALES.items()}

    def _budgets_of(self, kind: str, pod: dict[str, Any],
                    old: dict[str, Any] | None) -> Iterable[str]:
        ns = pod["metadata"].get("namespace", "")
        labels = [(p or {}).get("metadata", {}).get("labels") or {} for p in (pod, old)]
        for pdb in self.pdbs.by_index(ix.NAMESPACE, ns):
            selector = label_selector_from_dict((pdb.get("spec") or {}).get("selector"))
            if any(selector.matches(lb) for lb in labels):
                yield object_key(pdb)

    async def reconcile(self, key: str) -> Result:
        pdb = self.pdbs.get(key)
        if pdb is None or pdb["metadata"].get("deletionTimestamp"):
            return DONE
        meta, spec = pdb["metadata"], pdb.get("spec") or {}
        status = dict(pdb.get("status") or {})
        selector = label_selector_from_dict(spec.get("selector"))
        pods = [p for p in self.pods.by_index(ix.NAMESPACE, meta["namespace"])
                if selector.matches(p["metadata"].get("labels"))]
        now = self.clock()
        disrupted, recheck = self._disrupted(status.get("disruptedPods") or {}, pods, now)
        try:
            expected = await self._expected(spec, pods)
        except errors.ApiError as e:
            self.events.record(pdb, WARNING, "CalculateExpectedPodCountFailed",
                               f"Failed to calculate the number of expected pods: {e}")
            await self._fail(pdb, status, str(e))
            return DONE
        healthy = sum(1 for p in pods if ready(p) and not p["metadata"].get("deletionTimestamp")
                      and p["metadata"]["name"] not in disrupted)
        desired = desired_healthy(spec, expected)
        allowed = max(0, healthy - desired) if expected > 0 else 0  # as upstream
        status.update({
            "currentHealthy": healthy, "desiredHealthy": desired, "expectedPods": expected,
            "disruptionsAllowed": allowed, "observedGeneration": meta.get("generation", 1),
            "disruptedPods": disrupted or None,
            "conditions": conditions.merge(status.get("conditions"), [conditions.condition(
                "DisruptionAllowed", allowed > 0,
                "SufficientPods" if allowed > 0 else "InsufficientPods",
                generation=meta.get("generation", 1))])})
        await self._write(pdb, status)
        return requeue_after(recheck) if recheck is not None else DONE

    @staticmethod
    def _disrupted(current: dict[str, Any], pods: list[dict[str, Any]],
                   now: float) -> tuple[dict[str, str], float | None]:
        """The evictions still pending (pod present, not yet deleting, not expired), and when
        the earliest of them expires."""
        by_name = {p["metadata"]["name"]: p for p in pods}
        kept: dict[str, str] = {}
        recheck = None
        for name, stamp in current.items():
            pod = by_name.get(name)
            at = parse_rfc3339(stamp) if isinstance(stamp, str) else None
            if pod is None or pod["metadata"].get("deletionTimestamp") or at is None:
                continue
            left = at + DISRUPTED_POD_TIMEOUT - now
            if left <= 0:
                continue
            kept[name] = stamp
            recheck = left if recheck is None else min(recheck, left)
        return kept, recheck

    async def _expected(self, spec: dict[str, Any], pods: list[dict[str, Any]]) -> int:
        """The pods themselves for an integer minAvailable; else the controllers' scale."""
        min_available = spec.get("minAvailable")
        if spec.get("maxUnavailable") is None and (
                min_available is None or isinstance(min_available, int)
                or (isinstance(min_available, str) and min_available.isdigit())):
            return len(pods)
        total, seen = 0, set()
        for pod in pods:
            ref = next((r for r in pod["metadata"].get("ownerReferences") or []
                        if r.get("controller")), None)
            if ref is None:
                raise errors.BadRequest(f"found no controller for pod "
                                        f"\"{pod['metadata']['name']}\"")
            if ref.get("uid") in seen:
                continue
            seen.add(ref.get("uid"))
            total += await self._replicas(pod["metadata"]["namespace"], ref)
        return total

    async def _replicas(self, ns: str, ref: dict[str, Any]) -> int:
        group, kind = _group(str(ref.get("apiVersion", ""))), str(ref.get("kind", ""))
        informer = self.scales.get(kind) if group == "apps" else None
        if informer is not None:
            owner = informer.get(f"{ns}/{ref.get('name')}")
            if owner is None:
                raise errors.NotFound(f"{kind} {ref.get('name')} not found")
            if kind == "ReplicaSet":  # a Deployment's ReplicaSet: the Deployment's scale
                parent = next((r for r in owner["metadata"].get("ownerReferences") or []
                               if r.get("controller") and r.get("kind") == "Deployment"), None)
                if parent is not None:
                    return await self._replicas(ns, parent)
            return int((owner.get("spec") or {}).get("replicas", 1) or 0)
        # any other workload with a scale subresource (the plural is the kind's, lower-cased
        # with an s, as for every such built-in and VM Operator kind)
        base = f"/apis/{ref.get('apiVersion')}" if group else "/api/v1"
        scale = await self.client.get(f"{base}/namespaces/{ns}/{kind.lower()}s/"
                                      f"{ref.get('name')}/scale")
        return int((scale.get("spec") or {}).get("replicas", 0) or 0)

    async def _fail(self, pdb: dict[str, Any], status: dict[str, Any], message: str) -> None:
        meta = pdb["metadata"]
        status.update({"disruptionsAllowed": 0,
                       "observedGeneration": meta.get("generation", 1),
                       "conditions": conditions.merge(status.get("conditions"), [
                           conditions.condition("DisruptionAllowed", False, "SyncFailed",
                                                message, generation=meta.get("generation", 1))])})
        await self._write(pdb, status)

    async def _write(self, pdb: dict[str, Any], status: dict[str, Any]) -> None:
        """A merge patch pinned to the budget's resourceVersion: the eviction subresource
        writes ``disruptedPods`` too, so a race is a Conflict (the framework retries on a
        fresh read); pods gone from ``disruptedPods`` are removed key by key."""
        meta, have = pdb["metadata"], pdb.get("status") or {}
        if {k: v for k, v in have.items() if v is not None} == \
                {k: v for k, v in status.items() if v is not None}:
            return
        body = dict(status)
        old, new = have.get("disruptedPods") or {}, status.get("disruptedPods") or {}
        if old:
            body["disruptedPods"] = {**{k: None for k in old if k not in new}, **new} \
                if new else None
        await self.client.patch(
            f"/apis/policy/v1/namespaces/{meta['namespace']}/poddisruptionbudgets/"
            f"{meta['name']}/status",
            {"metadata": {"resourceVersion": meta.get("resourceVersion", "")},
             "status": body})
