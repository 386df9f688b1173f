"""The scheduler's view of the cluster: per node, what is allocatable and what is taken.

Every pod bound to a node (seen by the informer) or *assumed* on it (a binding
sent, not yet seen) adds its requests, host ports and owner to that node's
``NodeInfo``; so the next decision already accounts for the previous one, as
kube-scheduler's cache does.  A failed binding ``forget``s the assumed pod.
Pods may name a node the cache has not seen (yet): they are kept on a "ghost"
NodeInfo that is never offered for scheduling.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from atoll.controllers.capacity import Resources, node_allocatable
from atoll.controllers.scheduler.podinfo import (NO_EXECUTE, NO_SCHEDULE, PREFER_NO_SCHEDULE,
                                                 PodInfo, Taint, parse_taints)

log = logging.getLogger(__name__)


class NodeInfo:
    """One node's scheduling-relevant fields, parsed, plus the sums of the pods on it."""

    __slots__ = ("name", "present", "labels", "taints", "hard_taints", "soft_taints",
                 "allocatable", "ready", "unschedulable", "requested", "nonzero_cpu",
                 "nonzero_memory", "pods", "ports", "owners", "plain", "_raw")

    def __init__(self, name: str) -> None:
        self.name = name
        #: False for a ghost (pods name it, the Node object is not known)
        self.present = False
        self.labels: dict[str, str] = {}
        self.taints: tuple[Taint, ...] = ()
        #: NoSchedule and NoExecute taints: the pod must tolerate them
        self.hard_taints: tuple[Taint, ...] = ()
        #: PreferNoSchedule taints: only lower the score
        self.soft_taints: tuple[Taint, ...] = ()
        self.allocatable = Resources()
        self.ready = False
        self.unschedulable = False
        self.requested = Resources()
        self.nonzero_cpu = 0
        self.nonzero_memory = 0
        self.pods: dict[str, PodInfo] = {}
        #: (hostIP, protocol, port) -> pods using it
        self.ports: dict[tuple[str, str, int], int] = {}
        #: controlling owner uid -> pods of that owner here
        self.owners: dict[str, int] = {}
        #: ready, schedulable and without NoSchedule/NoExecute taints: only resources matter
        self.plain = False
        self._raw: tuple[Any, ...] = ()

    def set_node(self, obj: dict[str, Any]) -> bool:
        """Take a Node object's fields; True when anything scheduling looks at changed."""
        meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
        ready = _is_ready(status.get("conditions"))
        raw = (meta.get("labels"), spec.get("taints"), spec.get("unschedulable"),
               status.get("allocatable"), status.get("capacity"), ready)
        if self.present and raw == self._raw:
            return False
        self.present = True
        self._raw = raw
        labels = meta.get("labels")
        self.labels = {k: v for k, v in labels.items() if isinstance(k, str)
                       and isinstance(v, str)} if isinstance(labels, dict) else {}
        self.taints = parse_taints(spec.get("taints"))
        self.hard_taints = tuple(t for t in self.taints if t.effect in (NO_SCHEDULE, NO_EXECUTE))
        self.soft_taints = tuple(t for t in self.taints if t.effect == PREFER_NO_SCHEDULE)
        self.unschedulable = spec.get("unschedulable") is True
        self.ready = ready
        self.plain = ready and not self.unschedulable and not self.hard_taints
        problems: list[str] = []
        self.allocatable = node_allocatable(obj, problems)
        if problems:
            log.warning("node %s: %s (counted as zero)", self.name, "; ".join(problems))
        return True

    def add_pod(self, pod: PodInfo) -> None:
        self.pods[pod.key] = pod
        self.requested.add(pod.requests)
        self.nonzero_cpu += pod.nonzero.milli_cpu
        self.nonzero_memory += pod.nonzero.memory
        for port in pod.host_ports:
            self.ports[port] = self.ports.get(port, 0) + 1
        if pod.owner_uid:
            self.owners[pod.owner_uid] = self.owners.get(pod.owner_uid, 0) + 1

    def remove_pod(self, pod: PodInfo) -> None:
        if self.pods.pop(pod.key, None) is None:
            return
        self.requested.subtract(pod.requests)
        self.nonzero_cpu -= pod.nonzero.milli_cpu
        self.nonzero_memory -= pod.nonzero.memory
        for port in pod.host_ports:
            left = self.ports.get(port, 0) - 1
            if left > 0:
                self.ports[port] = left
            else:
                self.ports.pop(port, None)
        if pod.owner_uid:
            left = self.owners.get(pod.owner_uid, 0) - 1
            if left > 0:
                self.owners[pod.owner_uid] = left
            else:
                self.owners.pop(pod.owner_uid, None)


def _is_ready(conditions: Any) -> bool:
    for c in conditions if isinstance(conditions, list) else []:
        if isinstance(c, dict) and c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


class Cache:
    """Nodes by name, and every bound or assumed pod by ``namespace/name``."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeInfo] = {}
        #: names of the present nodes, in a stable order (sampling rotates through it)
        self.order: list[str] = []
        self.pods: dict[str, PodInfo] = {}
        self.assumed: set[str] = set()
        #: pods with pod (anti-)affinity terms: what inter-pod checks must look at
        self.with_affinity: dict[str, PodInfo] = {}
        #: VM key -> (host, what its class reserves there): counted like pod requests
        self.reservations: dict[str, tuple[str, Resources]] = {}
        self._present: list[NodeInfo] | None = None

    # -- nodes --------------------------------------------------------------------------------
    def set_node(self, obj: dict[str, Any]) -> bool:
        name = (obj.get("metadata") or {}).get("name")
        if not isinstance(name, str) or not name:
            return False
        node = self.nodes.get(name)
        if node is None:
            node = self.nodes[name] = NodeInfo(name)
        was_present = node.present
        changed = node.set_node(obj)
        if not was_present:
            self.order.append(name)
            self._present = None
        return changed

    def remove_node(self, name: str) -> None:
        node = self.nodes.get(name)
        if node is None or not node.present:
            return
        node.present = False
        self.order.remove(name)
        self._present = None
        if not node.pods and not self._reserved_on(name):
            del self.nodes[name]

    def present_nodes(self) -> list[NodeInfo]:
        """The nodes pods can be offered to (do not modify the list)."""
        if self._present is None:
            nodes = self.nodes
            self._present = [nodes[n] for n in self.order]
        return self._present

    # -- pods ---------------------------------------------------------------------------------
    def add_pod(self, pod: PodInfo) -> None:
        """A pod the informer shows bound to ``pod.node_name`` (confirms an assumed one)."""
        self.remove_pod(pod.key)
        self.pods[pod.key] = pod
        node = self.nodes.get(pod.node_name)
        if node is None:
            node = self.nodes[pod.node_name] = NodeInfo(pod.node_name)
        node.add_pod(pod)
        if pod.has_pod_affinity:
            self.with_affinity[pod.key] = pod

    def remove_pod(self, key: str) -> PodInfo | None:
        pod = self.pods.pop(key, None)
        self.assumed.discard(key)
        if pod is None:
            return None
        self.with_affinity.pop(key, None)
        node = self.nodes.get(pod.node_name)
        if node is not None:
            node.remove_pod(pod)
            if not node.present and not node.pods and not self._reserved_on(pod.node_name):
                del self.nodes[pod.node_name]
        return pod

    # -- VM reservations ------------------------------------------------------------------------
    def set_reservation(self, key: str, node_name: str, amount: Resources | None) -> bool:
        """What VM ``key`` on ``node_name`` reserves (None: nothing); True if it changed.

        A guaranteed VM class's requests are taken from the host like a pod's requests, so
        pods never fill the room a VM was promised; the VM is not a pod otherwise."""
        old = self.reservations.get(key)
        new = (node_name, amount) if amount is not None and node_name else None
        if old == new:
            return False
        if old is not None:
            del self.reservations[key]
            node = self.nodes.get(old[0])
            if node is not None:
                node.requested.subtract(old[1])
        if new is not None:
            node = self.nodes.get(node_name)
            if node is None:
                node = self.nodes[node_name] = NodeInfo(node_name)
            node.requested.add(new[1])
            self.reservations[key] = new
        return True

    def _reserved_on(self, node_name: str) -> bool:
        return any(host == node_name for host, _ in self.reservations.values())

    def assume(self, pod: PodInfo, node_name: str) -> PodInfo:
        """Count ``pod`` on ``node_name`` now, before its binding is confirmed."""
        assumed = dataclasses.replace(pod, node_name=node_name)
        self.add_pod(assumed)
        self.assumed.add(pod.key)
        return assumed

    def forget(self, key: str) -> None:
        """Undo ``assume`` (the binding failed); a pod the informer confirmed stays."""
        if key in self.assumed:
            self.remove_pod(key)

    def confirm(self, key: str) -> None:
        """The informer shows the assumed pod bound where we put it."""
        self.assumed.discard(key)

    def is_assumed(self, key: str) -> bool:
        return key in self.assumed
