"""Node lifecycle: hosts whose agent stopped renewing its Lease lose their pods.

As upstream's node lifecycle controller: a node whose Lease in
``kube-node-lease`` is older than its ``leaseDurationSeconds`` gets its
conditions set to ``Unknown`` (``NodeStatusUnknown``) and the
``node.kubernetes.io/unreachable`` taints (NoSchedule, NoExecute).  Pods on it
are then evicted as their tolerations allow (the API server's default
toleration is short, see ``--default-toleration-seconds``), so their
controllers create replacements on healthy hosts.  When the Lease is renewed
again the taints go away and the agent reports Ready itself.

Each node is looked at when its Node, Lease or pods change, and again exactly
when its Lease would expire or a pod's toleration runs out (a delayed requeue,
not a polling loop).  Nodes that never had a Lease (objects without an agent)
are left alone.  Pods bound to a deleted Node are deleted (upstream's pod GC).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import Any

from atoll.api import errors
from atoll.client.informer import Informer
from atoll.client.rest import ApiClient
from atoll.client.workqueue import WorkQueue
from atoll.controllers.runner import run_workers

log = logging.getLogger(__name__)
LEASE_NAMESPACE = "kube-node-lease"
UNREACHABLE = "node.kubernetes.io/unreachable"
#: extra time past a Lease's duration before a node counts as gone (absorbs a slow renewal)
GRACE_SECONDS = 1.0


def _parse_time(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def toleration_seconds(pod: dict[str, Any], effect: str = "NoExecute") -> float | None:
    """How long a pod tolerates the unreachable taint: 0 (not at all), seconds, or None (ever)."""
    best: float | None = 0.0
    for t in (pod.get("spec") or {}).get("tolerations") or []:
        if not isinstance(t, dict):
            continue
        if t.get("effect") not in (effect, None, ""):
            continue
        key, op = t.get("key") or "", t.get("operator") or "Equal"
        if not ((op == "Exists" and key in ("", UNREACHABLE)) or
                (op == "Equal" and key == UNREACHABLE and not t.get("value"))):
            continue
        seconds = t.get("tolerationSeconds")
        if not isinstance(seconds, (int, float)):
            return None
        best = max(best or 0.0, float(max(seconds, 0)))
    return best


class NodeLifecycleController:
    name = "node-lifecycle"

    def __init__(self, client: ApiClient, *, workers: int = 2) -> None:
        self.client = client
        self.workers = workers
        self.nodes = Informer(client, "", "v1", "nodes")
        self.leases = Informer(client, "coordination.k8s.io", "v1", "leases",
                               namespace=LEASE_NAMESPACE)
        self.pods = Informer(client, "", "v1", "pods")
        self.queue: WorkQueue[str] = WorkQueue(base_delay=0.2, max_delay=5.0)
        self.pods_by_node: dict[str, set[str]] = {}
        self.nodes.add_handler(lambda kind, obj, old: self.queue.add(obj["metadata"]["name"]))
        self.leases.add_handler(lambda kind, obj, old: self.queue.add(obj["metadata"]["name"]))
        self.pods.add_handler(self._on_pod)

    def _on_pod(self, kind: str, pod: dict[str, Any], old: dict[str, Any] | None) -> None:
        key = f"{pod['metadata'].get('namespace')}/{pod['metadata'].get('name')}"
        before = ((old or {}).get("spec") or {}).get("nodeName")
        node = (pod.get("spec") or {}).get("nodeName")
        if before and before != node:
            self.pods_by_node.get(before, set()).discard(key)
        if node:
            if kind == "DELETED":
                self.pods_by_node.get(node, set()).discard(key)
            else:
                self.pods_by_node.setdefault(node, set()).add(key)
                if self._tainted(node):
                    self.queue.add(node)

    def _tainted(self, name: str) -> bool:
        node = self.nodes.get(name)
        return any(t.get("key") == UNREACHABLE for t in ((node or {}).get("spec") or {})
                   .get("taints") or [])

    async def run(self) -> None:
        informers = [asyncio.create_task(i.run()) for i in (self.nodes, self.leases, self.pods)]
        await asyncio.gather(*(i.synced.wait() for i in (self.nodes, self.leases, self.pods)))
        await asyncio.gather(*informers,
                             run_workers(self.name, self.queue, self.reconcile, self.workers))

    async def reconcile(self, name: str) -> float | None:
        node = self.nodes.get(name)
        if node is None:
            await self._collect_pods(name)
            return None
        lease = self.leases.get(f"{LEASE_NAMESPACE}/{name}")
        if lease is None:
            return None
        spec = lease.get("spec") or {}
        renewed = _parse_time(spec.get("renewTime"))
        duration = spec.get("leaseDurationSeconds")
        if renewed is None or not isinstance(duration, int):
            return None
        expires = renewed + duration + GRACE_SECONDS
        now = time.time()
        if now < expires:
            if self._tainted(name):
                await self._set_taints(node, reachable=True)
            return expires - now + 0.05
        if not self._tainted(name):
            log.info("node %s: Lease expired %.1fs ago; marking it unreachable", name,
                     now - expires)
            await self._mark_unknown(node)
            node = await self._set_taints(node, reachable=False) or node
        return await self._evict(name, node, now)

    async def _mark_unknown(self, node: dict[str, Any]) -> None:
        now = _rfc3339(time.time())
        conditions = []
        for c in (node.get("status") or {}).get("conditions") or []:
            if not isinstance(c, dict):
                continue
            c = dict(c)
            if c.get("status") != "Unknown":
                c.update(status="Unknown", reason="NodeStatusUnknown", lastTransitionTime=now,
                         message="Kubelet stopped posting node status.")
            conditions.append(c)
        if not any(c.get("type") == "Ready" for c in conditions):
            conditions.append({"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
                               "message": "Kubelet stopped posting node status.",
                               "lastTransitionTime": now, "lastHeartbeatTime": now})
        try:
            await self.client.patch(f"/api/v1/nodes/{node['metadata']['name']}/status",
                                    {"status": {"conditions": conditions}})
        except errors.NotFound:
            pass

    async def _set_taints(self, node: dict[str, Any], *, reachable: bool) -> dict[str, Any] | None:
        name = node["metadata"]["name"]
        taints = [t for t in (node.get("spec") or {}).get("taints") or []
                  if isinstance(t, dict) and t.get("key") != UNREACHABLE]
        if not reachable:
            added = _rfc3339(time.time())
            taints += [{"key": UNREACHABLE, "effect": "NoSchedule", "timeAdded": added},
                       {"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": added}]
        else:
            log.info("node %s: Lease renewed; removing the unreachable taints", name)
        try:
            return await self.client.patch(f"/api/v1/nodes/{name}", {
                "metadata": {"resourceVersion": node["metadata"]["resourceVersion"]},
                "spec": {"taints": taints or None}})
        except errors.NotFound:
            return None

    async def _evict(self, name: str, node: dict[str, Any], now: float) -> float | None:
        tainted_at = next((_parse_time(t.get("timeAdded"))
                           for t in (node.get("spec") or {}).get("taints") or []
                           if t.get("key") == UNREACHABLE and t.get("effect") == "NoExecute"),
                          None) or now
        next_check: float | None = None
        for key in list(self.pods_by_node.get(name, ())):
            pod = self.pods.get(key)
            if pod is None or pod["metadata"].get("deletionTimestamp"):
                continue
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            tolerated = toleration_seconds(pod)
            if tolerated is None:
                continue
            due = tainted_at + tolerated
            if due > now:
                next_check = min(next_check or due - now, due - now)
                continue
            ns, pod_name = pod["metadata"]["namespace"], pod["metadata"]["name"]
            log.info("evicting pod %s from unreachable node %s", key, name)
            try:
                await self.client.delete(f"/api/v1/namespaces/{ns}/pods/{pod_name}",
                                         {"apiVersion": "v1", "kind": "DeleteOptions",
                                          "preconditions": {"uid": pod["metadata"]["uid"]}})
            except (errors.NotFound, errors.Conflict):
                continue
        return next_check + 0.05 if next_check is not None else None

    async def _collect_pods(self, name: str) -> None:
        """Pods bound to a node that no longer exists are deleted at once (upstream's pod GC)."""
        for key in list(self.pods_by_node.get(name, ())):
            pod = self.pods.get(key)
            if pod is None:
                continue
            ns, pod_name = pod["metadata"]["namespace"], pod["metadata"]["name"]
            log.info("deleting pod %s: its node %s is gone", key, name)
            try:
                await self.client.delete(f"/api/v1/namespaces/{ns}/pods/{pod_name}",
                                         {"apiVersion": "v1", "kind": "DeleteOptions",
                                          "gracePeriodSeconds": 0,
                                          "preconditions": {"uid": pod["metadata"]["uid"]}})
            except (errors.NotFound, errors.Conflict):
                continue
