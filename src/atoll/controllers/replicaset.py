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
import time
from typing import Any

from atoll.api import errors, selectors
from atoll.client.informer import Informer, object_key
from atoll.client.rest import ApiClient
from atoll.client.workqueue import WorkQueue
from atoll.controllers import podcontrol
from atoll.controllers.runner import run_workers

log = logging.getLogger(__name__)
BURST = 500


class ReplicaSetController:
    name = "replicaset"

    def __init__(self, client: ApiClient, *, workers: int = 4, pods: Informer | None = None) -> None:
        self.client = client
        self.workers = workers
        self.sets = Informer(client, "apps", "v1", "replicasets")
        self.pods = pods or Informer(client, "", "v1", "pods")
        self._own_pods = pods is None
        self.queue: WorkQueue[str] = WorkQueue(base_delay=0.05, max_delay=10.0)
        self.expectations = podcontrol.Expectations()
        self.sets.add_handler(lambda kind, obj, old: self.queue.add(object_key(obj)))
        self.pods.add_handler(self._on_pod)

    def _on_pod(self, kind: str, pod: dict[str, Any], old: dict[str, Any] | None) -> None:
        ns = pod["metadata"].get("namespace", "")
        for obj, is_new in ((pod, True), (old, False)):
            if obj is None:
                continue
            ref = podcontrol.controller_ref(obj)
            if ref is None or ref.get("kind") != "ReplicaSet":
                continue
            key = f"{ns}/{ref.get('name')}"
            if is_new and kind == "ADDED":
                self.expectations.created(key)
            if is_new and (kind == "DELETED" or pod["metadata"].get("deletionTimestamp")):
                self.expectations.deleted(key, object_key(pod))
            self.queue.add(key)
        if podcontrol.controller_ref(pod) is None and kind != "DELETED":
            for rs in self.sets.list():  # an orphan: a ReplicaSet may adopt it
                if rs["metadata"].get("namespace") == ns and _selector(rs).matches(
                        pod["metadata"].get("labels")):
                    self.queue.add(object_key(rs))

    async def run(self) -> None:
        tasks = [asyncio.create_task(self.sets.run())]
        if self._own_pods:
            tasks.append(asyncio.create_task(self.pods.run()))
        await asyncio.gather(self.sets.synced.wait(), self.pods.synced.wait())
        await asyncio.gather(*tasks, run_workers(self.name, self.queue, self.reconcile,
                                                 self.workers))

    async def reconcile(self, key: str) -> float | None:
        rs = self.sets.get(key)
        if rs is None:
            self.expectations.forget(key)
            return None
        try:
            selector = _selector(rs)
        except errors.ApiError:
            return None  # the API server validates selectors; nothing sane to do here
        pods = await self._claim(rs, selector)
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
        return await self._update_status(rs, active)

    async def _claim(self, rs: dict[str, Any], selector: selectors.LabelSelector
                     ) -> list[dict[str, Any]]:
        """Pods this ReplicaSet controls, adopting matching orphans and releasing strays."""
        ns, uid = rs["metadata"]["namespace"], rs["metadata"]["uid"]
        out = []
        for pod in self.pods.list():
            if pod["metadata"].get("namespace") != ns:
                continue
            ref = podcontrol.controller_ref(pod)
            matches = selector.matches(pod["metadata"].get("labels"))
            if ref is not None and ref.get("uid") == uid:
                if matches:
                    out.append(pod)
                elif not pod["metadata"].get("deletionTimestamp"):
                    await self._set_owner(pod, None)
            elif ref is None and matches and not pod["metadata"].get("deletionTimestamp") \
                    and not rs["metadata"].get("deletionTimestamp"):
                if await self._set_owner(pod, rs):
                    out.append(pod)
        return out

    async def _set_owner(self, pod: dict[str, Any], rs: dict[str, Any] | None) -> bool:
        meta = pod["metadata"]
        refs = [r for r in meta.get("ownerReferences") or [] if not r.get("controller")]
        if rs is not None:
            refs.append(podcontrol.owner_reference(rs))
        try:
            await self.client.patch(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                                    {"metadata": {"ownerReferences": refs or None,
                                                  "resourceVersion": meta["resourceVersion"]}})
            return True
        except (errors.NotFound, errors.Conflict):
            return False

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
            if failures:
                for _ in range(count - done + len(failures)):
                    self.expectations.created(key)  # those will never be observed
                log.warning("replicaset %s: creating pods failed: %s", key, failures[0])
                raise failures[0] if isinstance(failures[0], Exception) else RuntimeError()
            batch *= 2

    async def _update_status(self, rs: dict[str, Any], active: list[dict[str, Any]]
                             ) -> float | None:
        spec = rs.get("spec") or {}
        min_ready = int(spec.get("minReadySeconds") or 0)
        now = time.time()
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
            try:
                await self.client.patch(
                    f"/apis/apps/v1/namespaces/{ns}/replicasets/{name}/status",
                    {"status": status})
            except errors.NotFound:
                return None
        if len(available) < len(ready) and min_ready:
            return min_ready / 2  # pods become available with time alone
        return None



def _selector(rs: dict[str, Any]) -> selectors.LabelSelector:
    return selectors.label_selector_from_dict((rs.get("spec") or {}).get("selector"))
