"""ReplicaSets: keep ``spec.replicas`` pods matching the selector, as kube-controller-manager does.

Pods are created from the template (``generateName: <rs>-``, the ReplicaSet as
controller owner), in growing batches (1, 2, 4, ...) so a broken template
fails fast; surplus pods go in upstream's order (unscheduled, pending, not
ready first).  Matching orphans are adopted, owned pods that stop matching are
released.  Status counts replicas, fully labelled, ready and available pods.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any, ClassVar

from atoll.api import errors, selectors
from atoll.client import indexers as ix
from atoll.client.controller import DONE, Builder, Controller, Result, requeue_after
from atoll.client.events import NORMAL, WARNING
from atoll.client.informer import object_key
from atoll.controllers import podcontrol

log = logging.getLogger(__name__)
BURST = 500


class ReplicaSetController(Controller):
    """ReplicaSets (primary); pods watched for their owner's expectations and, for orphans,
    the sets of their namespace whose selector matches (adoption)."""

    name = "replicaset"
    default_workers = 4
    events_component = "replicaset-controller"
    backoff = (0.05, 10.0)
    #: the kind kept and its (group, version, plural): ReplicationControllers reuse all this
    owner_kind: ClassVar[str] = "ReplicaSet"
    resource: ClassVar[tuple[str, str, str]] = ("apps", "v1", "replicasets")

    def declare(self, b: Builder) -> None:
        self.expectations = podcontrol.Expectations()
        self.sets = b.primary(*self.resource)
        self._owned_pods = podcontrol.observe_pods(self.expectations, self.owner_kind)
        self.pods = b.watches("", "v1", "pods", self._map_pod,
                              indexers={podcontrol.ORPHANS: podcontrol.by_orphan_namespace})

    def _map_pod(self, kind: str, pod: dict[str, Any], old: dict[str, Any] | None
                 ) -> Iterable[str]:
        """The pod's owners, or for an orphan the sets of its namespace that may adopt it."""
        keys = set(self._owned_pods(kind, pod, old))
        if podcontrol.controller_ref(pod) is None and kind != "DELETED":
            labels = pod["metadata"].get("labels")
            for rs in self.sets.by_index(ix.NAMESPACE, pod["metadata"].get("namespace", "")):
                try:
                    if self.selector_of(rs).matches(labels):
                        keys.add(object_key(rs))
                except errors.ApiError:
                    continue
        return keys

    async def reconcile(self, key: str) -> Result:
        rs = self.sets.get(key)
        if rs is None:
            self.expectations.forget(key)
            return DONE
        try:
            selector = self.selector_of(rs)
        except errors.ApiError:
            return DONE  # the API server validates selectors; nothing sane to do here
        pods = await podcontrol.claim(self.client, self.pods, rs, selector, podcontrol.pod_path)
        active = [p for p in pods if podcontrol.is_active(p)]
        wanted = int((rs.get("spec") or {}).get("replicas", 1) or 0)
        if not rs["metadata"].get("deletionTimestamp") and self.expectations.satisfied(key):
            diff = len(active) - wanted
            if diff < 0:
                await self._create(rs, key, -diff)
            elif diff > 0:
                doomed = sorted(active, key=podcontrol.deletion_rank)[:diff]
                self.expectations.expect(key, dels={object_key(p) for p in doomed})
                await asyncio.gather(*(podcontrol.delete_pod(self.client, p) for p in doomed))
                for p in doomed:
                    self.events.record(rs, NORMAL, "SuccessfulDelete",
                                       f"Deleted pod: {p['metadata']['name']}")
        return await self._update_status(rs, active)

    async def _create(self, rs: dict[str, Any], key: str, count: int) -> None:
        count = min(count, BURST)
        self.expectations.expect(key, adds=count)
        template = (rs.get("spec") or {}).get("template") or {}
        ns = rs["metadata"]["namespace"]
        batch, done = 1, 0
        while done < count:
            n = min(batch, count - done)
            pods = [podcontrol.pod_from_template(rs, template,
                                                 generate_name=f"{rs['metadata']['name']}-")
                    for _ in range(n)]
            results = await asyncio.gather(*(podcontrol.create_pod(self.client, ns, p)
                                             for p in pods), return_exceptions=True)
            failures = [r for r in results if isinstance(r, BaseException)]
            done += n
            for r in results:
                if isinstance(r, dict):
                    self.events.record(rs, NORMAL, "SuccessfulCreate",
                                       f"Created pod: {r['metadata']['name']}")
            if failures:
                self.events.record(rs, WARNING, "FailedCreate", f"Error creating: {failures[0]}")
                for _ in range(count - done + len(failures)):
                    self.expectations.created(key)  # those will never be observed
                log.warning("replicaset %s: creating pods failed: %s", key, failures[0])
                raise failures[0] if isinstance(failures[0], Exception) else RuntimeError()
            batch *= 2

    async def _update_status(self, rs: dict[str, Any], active: list[dict[str, Any]]) -> Result:
        spec = rs.get("spec") or {}
        min_ready = int(spec.get("minReadySeconds") or 0)
        now = self.clock()
        template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        ready = [p for p in active if podcontrol.is_ready(p)]
        available = [p for p in ready if podcontrol.is_available(p, min_ready, now)]
        status = {
            "replicas": len(active),
            "fullyLabeledReplicas": sum(
                1 for p in active
                if all((p["metadata"].get("labels") or {}).get(k) == v
                       for k, v in template_labels.items())),
            "readyReplicas": len(ready),
            "availableReplicas": len(available),
            "observedGeneration": rs["metadata"].get("generation", 1),
        }
        current = rs.get("status") or {}
        if any(current.get(k, 0) != v for k, v in status.items()):
            ns, name = rs["metadata"]["namespace"], rs["metadata"]["name"]
            group, version, plural = self.resource
            base = f"/apis/{group}/{version}" if group else f"/api/{version}"
            try:
                await self.client.patch(f"{base}/namespaces/{ns}/{plural}/{name}/status",
                                        {"status": status})
            except errors.NotFound:
                return DONE
        if len(available) < len(ready) and min_ready:
            return requeue_after(min_ready / 2)  # pods become available with time alone
        return DONE


    @staticmethod
    def selector_of(rs: dict[str, Any]) -> selectors.LabelSelector:
        return selectors.label_selector_from_dict((rs.get("spec") or {}).get("selector"))

