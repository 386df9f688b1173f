"""DaemonSets: one pod on every node that fits, as upstream's controller does.

A node fits when it matches the template's ``nodeSelector`` and required
node affinity and the pod tolerates its NoSchedule/NoExecute taints (daemon
pods get upstream's extra tolerations for not-ready, unreachable, pressure
and unschedulable nodes).  Each pod is pinned to its node by a required
``matchFields metadata.name`` affinity, and the scheduler binds it.  A
template change replaces pods (``controller-revision-hash`` label) at most
``maxUnavailable`` at a time.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
from collections.abc import Iterable
from typing import Any

from atoll.api import errors, selectors
from atoll.client.controller import DONE, Builder, Controller, Result
from atoll.client.informer import object_key
from atoll.controllers import podcontrol
from atoll.controllers.deployment import resolve
from atoll.controllers.scheduler.podinfo import parse_pod, parse_taints, tolerated

log = logging.getLogger(__name__)
HASH_LABEL = "controller-revision-hash"
DAEMON_TOLERATIONS = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
]


def template_hash(template: dict[str, Any]) -> str:
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()[:10]


def _with_daemon_tolerations(spec: dict[str, Any]) -> dict[str, Any]:
    tolerations = [t for t in spec.get("tolerations") or [] if isinstance(t, dict)]
    for t in DAEMON_TOLERATIONS:
        if not any(x.get("key") == t["key"] and x.get("effect") == t["effect"]
                   for x in tolerations):
            tolerations.append(dict(t))
    return {**spec, "tolerations": tolerations}


def daemon_pod(ds: dict[str, Any], node_name: str, revision: str) -> dict[str, Any]:
    """The template's pod for one node, pinned there by a required ``matchFields`` affinity."""
    template = (ds.get("spec") or {}).get("template") or {}
    pod = podcontrol.pod_from_template(ds, template,
                                       generate_name=f"{ds['metadata']['name']}-",
                                       extra_labels={HASH_LABEL: revision})
    spec = _with_daemon_tolerations(pod["spec"])
    affinity = copy.deepcopy(spec.get("affinity") or {})
    affinity.setdefault("nodeAffinity", {})["requiredDuringSchedulingIgnoredDuringExecution"] = {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In",
                                                "values": [node_name]}]}]}
    spec["affinity"] = affinity
    pod["spec"] = spec
    return pod


def should_run(ds: dict[str, Any], node: dict[str, Any]) -> bool:
    """The template's node selection and the node's taints allow a daemon pod here."""
    template_spec = ((ds.get("spec") or {}).get("template") or {}).get("spec") or {}
    info = parse_pod({"metadata": {"name": "probe", "uid": "probe", "labels": {},
                                   "namespace": ds["metadata"].get("namespace", "")},
                      "spec": _with_daemon_tolerations(template_spec)})
    if info.problems:
        return False
    labels = node["metadata"].get("labels") or {}
    name = node["metadata"]["name"]
    if any(labels.get(k) != v for k, v in info.node_selector.items()):
        return False
    if info.required_node_terms is not None and not any(
            t.matches(name, labels) for t in info.required_node_terms):
        return False
    return all(tolerated(info.tolerations, taint)
               for taint in parse_taints((node.get("spec") or {}).get("taints"))
               if taint.effect in ("NoSchedule", "NoExecute"))


class DaemonSetController(Controller):
    """DaemonSets (primary); pods watched for their owner's expectations; nodes watched, since
    a node's arrival, labels or taints change where every DaemonSet runs."""

    name = "daemonset"
    default_workers = 2
    backoff = (0.05, 10.0)

    def declare(self, b: Builder) -> None:
        self.expectations = podcontrol.Expectations()
        self.sets = b.primary("apps", "v1", "daemonsets")
        self.nodes = b.watches("", "v1", "nodes", self._map_node)
        self.pods = b.watches("", "v1", "pods",
                              podcontrol.observe_pods(self.expectations, "DaemonSet"))

    def _map_node(self, kind: str, node: dict[str, Any], old: dict[str, Any] | None
                  ) -> Iterable[str]:
        """Every DaemonSet, when a node comes, goes, or changes its labels or taints."""
        if old is not None and kind == "MODIFIED" and \
                (old.get("spec") or {}).get("taints") == (node.get("spec") or {}).get("taints") \
                and old["metadata"].get("labels") == node["metadata"].get("labels"):
            return ()  # heartbeats do not change where daemons run
        return [object_key(ds) for ds in self.sets.list()]

    async def reconcile(self, key: str) -> Result:
        ds = self.sets.get(key)
        if ds is None:
            self.expectations.forget(key)
            return DONE
        spec = ds.get("spec") or {}
        try:
            selector = selectors.label_selector_from_dict(spec.get("selector"))
        except errors.ApiError:
            return DONE
        ns = ds["metadata"]["namespace"]
        revision = template_hash(spec.get("template") or {})
        owned: dict[str, list[dict[str, Any]]] = {}
        for pod in podcontrol.controlled_by(self.pods, ds):
            if selector.matches(pod["metadata"].get("labels")) and podcontrol.is_active(pod):
                owned.setdefault(_target_node(pod), []).append(pod)
        nodes = {n["metadata"]["name"]: n for n in self.nodes.list()}
        wanted = {name for name, node in nodes.items() if should_run(ds, node)}
        creates, deletes = [], []
        if not ds["metadata"].get("deletionTimestamp") and self.expectations.satisfied(key):
            for name in sorted(wanted):
                pods = owned.get(name, [])
                if not pods:
                    creates.append(daemon_pod(ds, name, revision))
                else:
                    deletes.extend(sorted(pods, key=podcontrol.deletion_rank)[:-1] if
                                   len(pods) > 1 else [])
            for name, pods in owned.items():
                if name not in wanted:
                    deletes.extend(pods)
            deletes.extend(self._rollout(ds, owned, wanted, revision, len(wanted)))
            if creates or deletes:
                self.expectations.expect(key, adds=len(creates),
                                         dels={object_key(p) for p in deletes})
            results = await asyncio.gather(
                *(podcontrol.create_pod(self.client, ns, p, events=self.events, owner=ds)
                  for p in creates),
                *(podcontrol.delete_pod(self.client, p, events=self.events, owner=ds)
                  for p in deletes),
                return_exceptions=True)
            failures = [r for r in results if isinstance(r, Exception)]
            if failures:
                self.expectations.forget(key)
                raise failures[0]
        await self._status(ds, owned, wanted, revision)
        return DONE

    def _rollout(self, ds: dict[str, Any], owned: dict[str, list[dict[str, Any]]],
                 wanted: set[str], revision: str, desired: int) -> list[dict[str, Any]]:
        """Old-template pods to replace now, keeping at most maxUnavailable down."""
        strategy = (ds.get("spec") or {}).get("updateStrategy") or {}
        if strategy.get("type", "RollingUpdate") != "RollingUpdate":
            return []
        max_unavailable = max(1, resolve((strategy.get("rollingUpdate") or {})
                                         .get("maxUnavailable", 1), desired, False))
        current = [pods[0] for name, pods in owned.items() if name in wanted and pods]
        unavailable = sum(1 for p in current if not podcontrol.is_ready(p)) + \
            len(wanted - set(owned))
        old = [p for p in current if (p["metadata"].get("labels") or {}).get(HASH_LABEL)
               != revision]
        budget = max(0, max_unavailable - unavailable)
        # not-ready old pods go first: replacing them costs no availability
        old.sort(key=lambda p: podcontrol.is_ready(p))
        doomed = [p for p in old if not podcontrol.is_ready(p)]
        doomed += [p for p in old if podcontrol.is_ready(p)][:budget]
        return doomed

    async def _status(self, ds: dict[str, Any], owned: dict[str, list[dict[str, Any]]],
                      wanted: set[str], revision: str) -> None:
        scheduled = [pods[0] for name, pods in owned.items() if name in wanted and pods]
        ready = [p for p in scheduled if podcontrol.is_ready(p)]
        status = {
            "desiredNumberScheduled": len(wanted),
            "currentNumberScheduled": len(scheduled),
            "numberMisscheduled": sum(1 for name in owned if name not in wanted),
            "numberReady": len(ready),
            "updatedNumberScheduled": sum(1 for p in scheduled
                                          if (p["metadata"].get("labels") or {})
                                          .get(HASH_LABEL) == revision),
            "numberAvailable": len(ready),
            "numberUnavailable": max(0, len(wanted) - len(ready)),
            "observedGeneration": ds["metadata"].get("generation", 1),
        }
        current = ds.get("status") or {}
        if all(current.get(k, 0) == v for k, v in status.items()):
            return
        ns, name = ds["metadata"]["namespace"], ds["metadata"]["name"]
        try:
            await self.client.patch(f"/apis/apps/v1/namespaces/{ns}/daemonsets/{name}/status",
                                    {"status": status})
        except errors.NotFound:
            pass


def _target_node(pod: dict[str, Any]) -> str:
    """The node a daemon pod is for: where it runs, or where its affinity pins it."""
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return str(spec["nodeName"])
    terms = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
             .get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get(
        "nodeSelectorTerms") or []
    for term in terms:
        for field in term.get("matchFields") or []:
            if field.get("key") == "metadata.name" and field.get("values"):
                return str(field["values"][0])
    return ""

