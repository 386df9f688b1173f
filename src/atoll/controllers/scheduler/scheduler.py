"""The scheduler controller: pending pods get a node, the way kube-scheduler assigns them.

The process's shared informers on pods, nodes and namespaces (from the
``InformerFactory``; every pod is seen, bound ones feed the cache and unscheduled
ones the queue) keep the ``Cache`` current; pending pods
(no ``spec.nodeName``, our ``schedulerName``) wait in the ``SchedulingQueue``.  One
loop takes them one at a time (decisions are serial, so each sees the previous
one) and runs the ``Algorithm``:

- a node is found: the pod is *assumed* on it in the cache at once, and the
  Binding is sent by its own task (bounded), so the loop goes on to the next pod
  without waiting for the API; a failed binding forgets the pod and retries it;
- no node fits: the pod gets ``PodScheduled=False``/``Unschedulable`` with
  upstream's message, a ``FailedScheduling`` event, and waits for a node or pod
  change (or its back-off) to be tried again;
- a node is found but some of the pod's claims wait for their first consumer: the node
  is written to them (``volume.kubernetes.io/selected-node``) and the pod is parked,
  not bound, until they are all bound (upstream's PreBind wait, without holding the
  loop): then it is tried again and goes where its volumes are.

Events and status writes are fire-and-forget and bounded; they never hold up
a binding.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from atoll.api import errors
from atoll.api.timestamps import rfc3339
from atoll.api.vmoperator.names import GROUP as VM_GROUP
from atoll.api.vmoperator.names import VERSION as VM_VERSION
from atoll.client.events import NORMAL, WARNING, EventRecorder
from atoll.client.factory import InformerFactory
from atoll.client.informer import object_key
from atoll.client.rest import ApiClient
from atoll.controllers import capacity
from atoll.controllers.scheduler.algorithm import MIN_FEASIBLE_NODES, Algorithm
from atoll.controllers.scheduler.cache import Cache
from atoll.controllers.scheduler.podinfo import PodInfo, parse_pod
from atoll.controllers.scheduler.queue import SchedulingQueue
from atoll.controllers.scheduler.volumes import Lookups, PodVolumes
from atoll.controllers.scheduler.volumes import prefilter as volume_prefilter
from atoll.controllers.volume import binder

log = logging.getLogger(__name__)
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
DEFAULT_SCHEDULER = "default-scheduler"


@dataclass(frozen=True)
class SchedulerConfig:
    #: pods naming this ``spec.schedulerName`` (or none) are ours
    scheduler_name: str = DEFAULT_SCHEDULER
    #: share of the nodes to find feasible before scoring (0: upstream's adaptive rule,
    #: 42% of 1,000 nodes); 5 (upstream's floor, at least 100 nodes) keeps a decision
    #: well under a millisecond in Python, and the rotating start still visits every node
    percentage_of_nodes_to_score: int = 5
    #: clusters up to this size are always searched whole (upstream: 100)
    min_feasible_nodes: int = MIN_FEASIBLE_NODES
    #: bindings in flight at once; the loop waits beyond that (back-pressure, not a pile-up)
    parallel_binds: int = 48
    #: status patches of unschedulable pods in flight at once
    parallel_status_writes: int = 4
    #: back-off of a pod that failed, doubling per attempt (upstream: 1 s to 10 s)
    initial_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 10.0
    #: an unschedulable pod is retried after this long even if nothing changed (upstream: 5 min)
    unschedulable_timeout_seconds: float = 300.0
    #: events waiting to be written; more are dropped
    max_pending_events: int = 1000


def _spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def _status(obj: dict[str, Any]) -> dict[str, Any]:
    status = obj.get("status")
    return status if isinstance(status, dict) else {}


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _terminal(obj: dict[str, Any]) -> bool:
    return _status(obj).get("phase") in ("Succeeded", "Failed")


def scheduled_condition(pod: dict[str, Any]) -> dict[str, Any] | None:
    for c in _status(pod).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == "PodScheduled":
            return c
    return None


class Scheduler:
    name = "scheduler"

    def __init__(self, client: ApiClient, factory: InformerFactory,
                 config: SchedulerConfig | None = None) -> None:
        # its own connection pool for bindings and status writes: the manager's is mostly
        # held by the shared informers' watches, and bindings must not queue behind them
        self.client = ApiClient(client.config, user_agent="atoll-scheduler")
        self.config = config or SchedulerConfig()
        self.factory = factory
        self._reset()
        # the shared informers (same options as every other controller's, so one watch each)
        self.pods = factory.informer("", "v1", "pods")
        self.nodes = factory.informer("", "v1", "nodes")
        self.namespaces = factory.informer("", "v1", "namespaces")
        #: VMs and their classes: what guaranteed VMs reserve on their hosts
        self.vms = factory.informer(VM_GROUP, VM_VERSION, "virtualmachines",
                                    indexers={capacity.VM_CLASS: capacity.by_vm_class})
        self.vm_classes = factory.informer(VM_GROUP, VM_VERSION, "virtualmachineclasses")
        #: what volume binding reads
        self.claims = factory.informer("", "v1", "persistentvolumeclaims")
        self.volumes = factory.informer("", "v1", "persistentvolumes")
        self.storage_classes = factory.informer("storage.k8s.io", "v1", "storageclasses")
        self.capacities = factory.informer("storage.k8s.io", "v1", "csistoragecapacities")
        self.lookups = Lookups(claim=self.claims.get, volume=self.volumes.get,
                               storage_class=self.storage_classes.get, volumes=self.volumes.list,
                               capacities=self.capacities.list)
        self.claims.add_handler(self._on_claim)
        for inf in (self.volumes, self.storage_classes, self.capacities):
            inf.add_handler(self._on_storage)
        self.vms.add_handler(self._on_vm)
        self.vm_classes.add_handler(self._on_vm_class)
        self.pods.add_handler(self._on_pod)
        self.nodes.add_handler(self._on_node)
        self.namespaces.add_handler(self._on_namespace)
        self._runs = 0

    def _reset(self) -> None:
        """A fresh cache and queue (the informers are the process's and stay)."""
        cfg = self.config
        self.cache = Cache()
        self.queue = SchedulingQueue(initial_backoff=cfg.initial_backoff_seconds,
                                     max_backoff=cfg.max_backoff_seconds,
                                     unschedulable_timeout=cfg.unschedulable_timeout_seconds)
        self.algorithm = Algorithm(percentage_of_nodes_to_score=cfg.percentage_of_nodes_to_score,
                                   min_feasible_nodes=cfg.min_feasible_nodes)
        self.events = EventRecorder(self.client, cfg.scheduler_name,
                                    max_pending=cfg.max_pending_events)
        #: parsed pending pods (a parse is reused while the resourceVersion is unchanged)
        self._infos: dict[str, PodInfo] = {}
        #: pod key -> the Unschedulable message waiting to be written to its status
        self._status_wanted: dict[str, str] = {}
        self._bind_slots = asyncio.Semaphore(cfg.parallel_binds)
        self._status_slots = asyncio.Semaphore(cfg.parallel_status_writes)
        self._tasks: set[asyncio.Task[None]] = set()
        #: pods parked until their claims are bound -> those claims' keys
        self._parked: dict[str, set[str]] = {}
        self.scheduled = 0

    # -- informer handlers (synchronous: they only update the cache and the queue) ------------
    def _responsible(self, pod: dict[str, Any]) -> bool:
        name = _spec(pod).get("schedulerName")
        return (name in (None, "", self.config.scheduler_name)
                and not _meta(pod).get("deletionTimestamp") and not _terminal(pod))

    def _on_pod(self, kind: str, pod: dict[str, Any], old: dict[str, Any] | None) -> None:
        key = object_key(pod)
        node_name = _spec(pod).get("nodeName")
        if kind == "DELETED":
            self.queue.delete(key)
            self._infos.pop(key, None)
            self._parked.pop(key, None)
            if self.cache.remove_pod(key) is not None:
                self.queue.move_all()  # its resources, ports and anti-affinity are free now
            return
        if isinstance(node_name, str) and node_name:
            self._on_assigned_pod(key, pod, old)
            return
        if self.cache.is_assumed(key):
            return  # our binding is in flight
        if not self._responsible(pod):
            self.queue.delete(key)
            self._infos.pop(key, None)
            return
        priority = _spec(pod).get("priority")
        priority = priority if isinstance(priority, int) else 0
        if key not in self.queue or old is None or _spec(old) != _spec(pod) or \
                _meta(old).get("labels") != _meta(pod).get("labels"):
            self.queue.add(key, priority)

    def _on_assigned_pod(self, key: str, pod: dict[str, Any], old: dict[str, Any] | None) -> None:
        self.queue.delete(key)
        self._infos.pop(key, None)
        self._parked.pop(key, None)
        if _terminal(pod):
            if self.cache.remove_pod(key) is not None:
                self.queue.move_all()
            return
        known = self.cache.pods.get(key)
        uid = _meta(pod).get("uid")
        if known is not None and known.uid == uid and known.node_name == _spec(pod).get(
                "nodeName"):
            if self.cache.is_assumed(key):
                self.cache.confirm(key)  # our binding, now seen: the parse is still right
                return
            if old is not None and _spec(old) == _spec(pod) and \
                    _meta(old).get("labels") == _meta(pod).get("labels") and \
                    bool(_meta(pod).get("deletionTimestamp")) == known.terminating:
                return  # a status update: nothing the scheduler counts changed
        info = parse_pod(pod)
        self.cache.add_pod(info)
        if known is None or known.labels != info.labels:
            # a new or relabelled pod can satisfy pending pods' affinity or spreading
            self.queue.move_all(self._waits_for_pods)

    def _waits_for_pods(self, key: str) -> bool:
        info = self._infos.get(key)
        return info is not None and (bool(info.affinity) or bool(info.spread))

    def _on_node(self, kind: str, node: dict[str, Any], old: dict[str, Any] | None) -> None:
        if kind == "DELETED":
            self.cache.remove_node(_meta(node).get("name", ""))
            return
        if self.cache.set_node(node):
            self.queue.move_all()

    def _on_namespace(self, kind: str, ns: dict[str, Any], old: dict[str, Any] | None) -> None:
        if old is None or _meta(old).get("labels") != _meta(ns).get("labels"):
            # namespaceSelector of affinity terms may now select other pods
            self.queue.move_all(self._has_affinity)

    def _has_affinity(self, key: str) -> bool:
        info = self._infos.get(key)
        return info is not None and info.has_pod_affinity

    def _on_vm(self, kind: str, vm: dict[str, Any], old: dict[str, Any] | None) -> None:
        key = object_key(vm)
        host = capacity.vm_host(vm)
        amount = None
        if kind != "DELETED" and host:
            amount = capacity.class_reservation(self.vm_classes.get(capacity.vm_class_key(vm)))
        if self.cache.set_reservation(key, host, amount) and amount is None:
            self.queue.move_all()  # room was given back

    def _on_vm_class(self, kind: str, klass: dict[str, Any], old: dict[str, Any] | None) -> None:
        for vm in self.vms.by_index(capacity.VM_CLASS, object_key(klass)):
            self._on_vm("MODIFIED", vm, None)

    def _on_claim(self, kind: str, claim: dict[str, Any], old: dict[str, Any] | None) -> None:
        """A claim changed: parked pods go on once all their claims are bound (or one of
        them went away or lost its node); pods waiting for a missing or unbound claim get
        another try."""
        key = binder.claim_key(claim)
        for pod_key, claim_keys in list(self._parked.items()):
            if key not in claim_keys:
                continue
            done = all((c := self.claims.get(k)) is not None and binder.is_fully_bound(c)
                       for k in claim_keys)
            if kind == "DELETED" or done or \
                    not binder.annotations(claim).get(binder.SELECTED_NODE):
                del self._parked[pod_key]
                self.queue.wake(pod_key)
        self.queue.move_all(self._waits_for_volumes)

    def _on_storage(self, kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        self.queue.move_all(self._waits_for_volumes)

    def _waits_for_volumes(self, key: str) -> bool:
        info = self._infos.get(key)
        return info is not None and bool(info.claims) and key not in self._parked

    def _namespace_labels(self, name: str) -> dict[str, str]:
        ns = self.namespaces.get(name)
        labels = _meta(ns).get("labels") if ns else None
        return labels if isinstance(labels, dict) else {}

    # -- the scheduling loop ------------------------------------------------------------------
    async def run(self) -> None:
        self._runs += 1
        if self._runs > 1:
            self._restart()
        self.factory.start()
        await self.factory.wait_for_sync([self.nodes, self.namespaces, self.pods, self.claims,
                                          self.volumes, self.storage_classes, self.capacities])
        log.info("scheduler: started with %d nodes, %d pods bound, %d pending",
                 len(self.cache.order), len(self.cache.pods), len(self.queue))
        try:
            await asyncio.gather(self._loop(), self.events.run())
        finally:
            for t in list(self._tasks):
                t.cancel()
            await self.client.close()

    def _restart(self) -> None:
        """Restarted by the manager: a fresh cache and queue, rebuilt from what the shared
        informers hold now (their later events arrive through the handlers as before)."""
        for t in list(self._tasks):
            t.cancel()
        self._reset()
        for node in self.nodes.list():
            self._on_node("ADDED", node, None)
        for vm in self.vms.list():
            self._on_vm("ADDED", vm, None)
        for pod in self.pods.list():
            self._on_pod("ADDED", pod, None)

    async def _loop(self) -> None:
        while True:
            key = await self.queue.pop()
            try:
                await self._schedule_one(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduler: scheduling pod %s failed", key)
                self.queue.retry(key)
            await asyncio.sleep(0)  # let the informers deliver between decisions

    def _pod_info(self, key: str, pod: dict[str, Any]) -> PodInfo:
        info = self._infos.get(key)
        meta = _meta(pod)
        if info is None or info.resource_version != meta.get("resourceVersion") or \
                info.uid != meta.get("uid"):
            info = self._infos[key] = parse_pod(pod)
        return info

    async def _schedule_one(self, key: str) -> None:
        pod = self.pods.get(key)
        if pod is None or _spec(pod).get("nodeName") or not self._responsible(pod):
            self.queue.delete(key)
            return
        info = self._pod_info(key, pod)
        volumes = volume_prefilter(info, self.lookups)
        decision = self.algorithm.schedule(info, self.cache, self._namespace_labels, volumes)
        if decision.node is None:
            log.debug("scheduler: %s: %s", key, decision.message)
            self.queue.unschedulable(key)
            self._report_unschedulable(key, pod, decision.message)
            return
        if volumes is not None and volumes.unbound:
            self._park(key, info, volumes, decision.node)
            return
        self.cache.assume(info, decision.node)
        await self._bind_slots.acquire()
        self._spawn(self._bind(key, pod, info, decision.node))

    def _park(self, key: str, info: PodInfo, volumes: PodVolumes, node: str) -> None:
        """Record ``node`` on the pod's waiting claims; the pod waits until they are bound."""
        claims = [c for c, _ in volumes.unbound]
        self._parked[key] = {binder.claim_key(c) for c in claims}
        self.queue.unschedulable(key)
        self._spawn(self._select_node(key, info, claims, node))

    async def _select_node(self, key: str, info: PodInfo, claims: list[dict[str, Any]],
                           node: str) -> None:
        for claim in claims:
            m = claim.get("metadata") or {}
            if binder.annotations(claim).get(binder.SELECTED_NODE) == node:
                continue
            try:
                await self.client.patch(
                    f"/api/v1/namespaces/{m.get('namespace')}/persistentvolumeclaims/"
                    f"{m.get('name')}",
                    {"metadata": {"resourceVersion": m.get("resourceVersion", ""),
                                  "annotations": {binder.SELECTED_NODE: node}}})
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("scheduler: %s: claim %s not given node %s: %s", key, m.get("name"),
                         node, exc)
                self._parked.pop(key, None)
                self.queue.wake(key)
                return

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _bind(self, key: str, pod: dict[str, Any], info: PodInfo, node: str) -> None:
        body = {"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": info.name, "namespace": info.namespace, "uid": info.uid},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        try:
            await self.client.create(f"/api/v1/namespaces/{info.namespace}/pods/{info.name}"
                                     "/binding", body)
        except asyncio.CancelledError:
            self.cache.forget(key)
            raise
        except Exception as exc:
            self.cache.forget(key)
            self.queue.move_all()  # what it had taken on the node is free again
            if isinstance(exc, errors.NotFound):
                self.queue.delete(key)
                return
            log.warning("scheduler: binding %s to %s failed: %s", key, node, exc)
            self.queue.retry(key)
            self.events.record(pod, WARNING, "FailedScheduling", f"Binding rejected: {exc}")
            return
        finally:
            self._bind_slots.release()
        self.scheduled += 1
        self.queue.done(key)
        self.events.record(pod, NORMAL, "Scheduled",
                           f"Successfully assigned {info.namespace}/{info.name} to {node}")

    # -- reporting unschedulable pods ---------------------------------------------------------
    def _report_unschedulable(self, key: str, pod: dict[str, Any], message: str) -> None:
        self.events.record(pod, WARNING, "FailedScheduling", message)
        cond = scheduled_condition(pod)
        if cond is not None and cond.get("status") == "False" and \
                cond.get("reason") == "Unschedulable" and cond.get("message") == message:
            return
        pending = key in self._status_wanted
        self._status_wanted[key] = message
        if not pending:
            self._spawn(self._write_status(key))

    async def _write_status(self, key: str) -> None:
        async with self._status_slots:
            message = self._status_wanted.pop(key, None)
            pod = self.pods.get(key)
            if message is None or pod is None:
                return
            meta = _meta(pod)
            path = f"/api/v1/namespaces/{meta.get('namespace')}/pods/{meta.get('name')}"
            for _ in range(2):  # once more, from a fresh read, if the pod changed meanwhile
                if _spec(pod).get("nodeName") or self.cache.is_assumed(key):
                    return  # bound meanwhile: PodScheduled=True must stay
                cond = scheduled_condition(pod) or {}
                since = cond.get("lastTransitionTime") if cond.get("status") == "False" else None
                patch = {"metadata": {"resourceVersion": _meta(pod).get("resourceVersion")},
                         "status": {"conditions": [{
                             "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                             "message": message, "lastProbeTime": None,
                             "lastTransitionTime": since or rfc3339()}]}}
                try:
                    await self.client.patch(path + "/status", patch,
                                            content_type=STRATEGIC_MERGE_PATCH)
                    return
                except errors.Conflict:
                    try:
                        pod = await self.client.get(path)
                    except Exception:
                        return
                except errors.NotFound:
                    return
                except Exception as exc:
                    log.warning("scheduler: status of %s not written: %s", key, exc)
                    return
