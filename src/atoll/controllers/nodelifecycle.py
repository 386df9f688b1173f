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

import logging
from collections.abc import Iterable
from typing import Any

from atoll.api import errors
from atoll.api.timestamps import parse_rfc3339, rfc3339
from atoll.client import indexers as ix
from atoll.client.controller import DONE, Builder, Controller, Result, requeue_after
from atoll.client.events import NORMAL, WARNING

log = logging.getLogger(__name__)
LEASE_NAMESPACE = "kube-node-lease"
UNREACHABLE = "node.kubernetes.io/unreachable"
#: extra time past a Lease's duration before a node counts as gone (absorbs a slow renewal)
GRACE_SECONDS = 1.0
#: past a due time before looking again, so the check lands after it, not just before
SLACK_SECONDS = 0.05


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


class NodeLifecycleController(Controller):
    name = "node-lifecycle"
    default_workers = 2
    backoff = (0.2, 5.0)
    events_component = "node-controller"

    def declare(self, b: Builder) -> None:
        self.nodes = b.primary("", "v1", "nodes")
        # every namespace's Leases (a few beside the nodes'): the process's one leases watch,
        # which the garbage collector shares
        self.leases = b.watches("coordination.k8s.io", "v1", "leases", self._lease_changed)
        self.pods = b.watches("", "v1", "pods", self._pod_changed,
                              indexers={ix.NODE_NAME: ix.by_node_name})

    @staticmethod
    def _lease_changed(kind: str, lease: dict[str, Any],
                       old: dict[str, Any] | None) -> Iterable[str]:
        meta = lease.get("metadata") or {}
        return [meta["name"]] if meta.get("namespace") == LEASE_NAMESPACE else []

    def _pod_changed(self, kind: str, pod: dict[str, Any],
                     old: dict[str, Any] | None) -> Iterable[str]:
        """A pod arriving on an unreachable node is looked at (evicted when due)."""
        node = (pod.get("spec") or {}).get("nodeName")
        if kind != "DELETED" and node and self._tainted(node):
            return [node]
        return []

    def _tainted(self, name: str) -> bool:
        node = self.nodes.get(name)
        return any(t.get("key") == UNREACHABLE for t in ((node or {}).get("spec") or {})
                   .get("taints") or [])

    async def reconcile(self, name: str) -> Result:
        node = self.nodes.get(name)
        if node is None:
            await self._collect_pods(name)
            return DONE
        lease = self.leases.get(f"{LEASE_NAMESPACE}/{name}")
        if lease is None:
            return DONE
        spec = lease.get("spec") or {}
        renewed = parse_rfc3339(spec.get("renewTime"))
        duration = spec.get("leaseDurationSeconds")
        if renewed is None or not isinstance(duration, int):
            return DONE
        expires = renewed + duration + GRACE_SECONDS
        now = self.clock()
        if now < expires:
            if self._tainted(name):
                await self._set_taints(node, reachable=True)
                self._node_event(node, "NodeReady")
            return requeue_after(expires - now + SLACK_SECONDS)
        if not self._tainted(name):
            log.info("node %s: Lease expired %.1fs ago; marking it unreachable", name,
                     now - expires)
            await self._mark_unknown(node)
            self._node_event(node, "NodeNotReady")
            for pod in self.pods.by_index(ix.NODE_NAME, name):
                if not pod["metadata"].get("deletionTimestamp"):
                    self.events.record(_as_kind(pod, "Pod"), WARNING, "NodeNotReady",
                                       "Node is not ready")
            node = await self._set_taints(node, reachable=False) or node
        return await self._evict(name, node, now)

    def _node_event(self, node: dict[str, Any], state: str) -> None:
        """upstream's RecordNodeStatusChange."""
        name = node["metadata"]["name"]
        self.events.record(_as_kind(node, "Node", uid=name), NORMAL, state,
                           f"Node {name} status is now: {state}")

    async def _mark_unknown(self, node: dict[str, Any]) -> None:
        now = rfc3339(self.clock())
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
            added = rfc3339(self.clock())
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

    async def _evict(self, name: str, node: dict[str, Any], now: float) -> Result:
        """Delete the pods whose toleration of the taint has run out; look again at the next."""
        tainted_at = next((parse_rfc3339(t.get("timeAdded"))
                           for t in (node.get("spec") or {}).get("taints") or []
                           if t.get("key") == UNREACHABLE and t.get("effect") == "NoExecute"),
                          None) or now
        next_check: float | None = None
        for pod in self.pods.by_index(ix.NODE_NAME, name):
            if pod["metadata"].get("deletionTimestamp"):
                continue
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            tolerated = toleration_seconds(pod)
            if tolerated is None:
                continue
            due = tainted_at + tolerated
            if due > now:
                next_check = due - now if next_check is None else min(next_check, due - now)
                continue
            ns, pod_name = pod["metadata"]["namespace"], pod["metadata"]["name"]
            log.info("evicting pod %s/%s from unreachable node %s", ns, pod_name, name)
            self.events.record(_as_kind(pod, "Pod"), NORMAL, "TaintManagerEviction",
                               f"Marking for deletion Pod {ns}/{pod_name}")
            try:
                await self.client.delete(f"/api/v1/namespaces/{ns}/pods/{pod_name}",
                                         {"apiVersion": "v1", "kind": "DeleteOptions",
                                          "preconditions": {"uid": pod["metadata"]["uid"]}})
            except (errors.NotFound, errors.Conflict):
                continue
        return requeue_after(next_check + SLACK_SECONDS) if next_check is not None else DONE

    async def _collect_pods(self, name: str) -> None:
        """Pods bound to a node that no longer exists are deleted at once (upstream's pod GC)."""
        for pod in self.pods.by_index(ix.NODE_NAME, name):
            ns, pod_name = pod["metadata"]["namespace"], pod["metadata"]["name"]
            log.info("deleting pod %s/%s: its node %s is gone", ns, pod_name, name)
            try:
                await self.client.delete(f"/api/v1/namespaces/{ns}/pods/{pod_name}",
                                         {"apiVersion": "v1", "kind": "DeleteOptions",
                                          "gracePeriodSeconds": 0,
                                          "preconditions": {"uid": pod["metadata"]["uid"]}})
            except (errors.NotFound, errors.Conflict):
                continue


def _as_kind(obj: dict[str, Any], kind: str, uid: str | None = None) -> dict[str, Any]:
    """``obj`` with its kind (cached list items may lack it) for an Event's reference."""
    out = {**obj, "kind": kind, "apiVersion": "v1"}
    if uid is not None:
        out["metadata"] = {**obj["metadata"], "uid": uid}
    return out
