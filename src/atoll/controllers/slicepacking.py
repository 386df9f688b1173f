"""How a Service's endpoints are packed into EndpointSlices (upstream's endpointslice
reconciler, as pure functions).

Endpoints are grouped by the exact set of ports they resolve to (a named target port may
resolve differently per pod), one group per slice set.  Existing slices keep the endpoints
still wanted (with their new content) and lose the others; a slice left empty goes.  New
endpoints first fill slices that are being rewritten anyway, then the unchanged slice they
fit best in, and only then new slices of at most ``max_per_slice``; so a change writes as few
slices as it can.  Creates that would come with deletes become updates of the slices that
would be deleted.  A Service with no endpoints at all keeps one empty placeholder slice.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

from atoll.api.resources.discovery_v1 import MANAGED_BY_LABEL, SERVICE_NAME_LABEL
from atoll.controllers import endpointutil as eu

Obj = dict[str, Any]
CONTROLLER_NAME = "endpointslice-controller.k8s.io"
ADDRESS_TYPE = "IPv4"
DEFAULT_MAX_ENDPOINTS_PER_SLICE = 100


@dataclass
class Plan:
    """The writes a reconcile makes: bodies to create, full bodies to update, slices to delete."""

    create: list[Obj] = field(default_factory=list)
    update: list[Obj] = field(default_factory=list)
    delete: list[Obj] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.create or self.update or self.delete)


@dataclass
class PortGroup:
    ports: list[Obj]
    endpoints: dict[tuple[Any, ...], Obj] = field(default_factory=dict)


# -- desired state -------------------------------------------------------------------------------
def endpoint_ports(service: Obj, pod: Obj) -> list[Obj]:
    """The Service's ports as resolved on this pod; ports the pod does not have are left out
    (a headless Service may have none at all)."""
    out = []
    for sp in (service.get("spec") or {}).get("ports") or []:
        if not isinstance(sp, dict):
            continue
        number = eu.find_port(pod, sp)
        if number is None:
            continue
        port: Obj = {"name": sp.get("name") or "", "protocol": sp.get("protocol") or "TCP",
                     "port": number}
        if sp.get("appProtocol"):
            port["appProtocol"] = sp["appProtocol"]
        out.append(port)
    return out


def pod_to_endpoint(pod: Obj, node: Obj | None, service: Obj) -> Obj | None:
    """The pod as an endpoint: ready only when Ready and not terminating (or when the Service
    publishes not-ready addresses), serving when Ready, terminating when being deleted."""
    ip = eu.ipv4_of(pod)
    if ip is None:
        return None
    meta, spec = pod["metadata"], pod.get("spec") or {}
    serving = eu.pod_ready(pod)
    terminating = bool(meta.get("deletionTimestamp"))
    publish = bool((service.get("spec") or {}).get("publishNotReadyAddresses"))
    ep: Obj = {"addresses": [ip],
               "conditions": {"ready": publish or (serving and not terminating),
                              "serving": serving, "terminating": terminating},
               "targetRef": {"kind": "Pod", "namespace": meta.get("namespace", ""),
                             "name": meta.get("name", ""), "uid": meta.get("uid", "")}}
    if spec.get("nodeName"):
        ep["nodeName"] = spec["nodeName"]
    zone = ((node or {}).get("metadata") or {}).get("labels", {}).get(eu.ZONE_LABEL)
    if zone:
        ep["zone"] = zone
    if eu.should_set_hostname(pod, service):
        ep["hostname"] = spec["hostname"]
    return ep


def desired_endpoints(service: Obj, pods: list[Obj], node_of: Callable[[str], Obj | None]
                      ) -> tuple[dict[tuple[Any, ...], PortGroup], list[str]]:
    """Endpoints by port set, and the pods skipped because their node is unknown (unless
    the Service publishes not-ready addresses, as upstream: a pod on a vanished node must not
    keep its slot)."""
    publish = bool((service.get("spec") or {}).get("publishNotReadyAddresses"))
    groups: dict[tuple[Any, ...], PortGroup] = {}
    skipped = []
    for pod in sorted(pods, key=lambda p: p["metadata"].get("name", "")):
        if not eu.should_pod_be_in_endpoints(pod, True):
            continue
        node_name = (pod.get("spec") or {}).get("nodeName") or ""
        node = node_of(node_name) if node_name else None
        if node is None and not publish:
            skipped.append(pod["metadata"].get("name", ""))
            continue
        ports = endpoint_ports(service, pod)
        ep = pod_to_endpoint(pod, node, service)
        if ep is None:
            continue
        group = groups.setdefault(eu.ports_key(ports), PortGroup(ports))
        group.endpoints[eu.endpoint_key(ep)] = ep
    return groups, skipped


def slice_labels(service: Obj, controller: str = CONTROLLER_NAME) -> dict[str, str]:
    """The Service's labels (but the reserved ones), the headless mark, service and manager."""
    reserved = {SERVICE_NAME_LABEL, MANAGED_BY_LABEL, eu.HEADLESS_LABEL}
    labels = {k: v for k, v in (service["metadata"].get("labels") or {}).items()
              if k not in reserved}
    if not eu.cluster_ip_set(service):
        labels[eu.HEADLESS_LABEL] = ""
    labels[SERVICE_NAME_LABEL] = service["metadata"]["name"]
    labels[MANAGED_BY_LABEL] = controller
    return labels


def service_owner(service: Obj) -> Obj:
    return {"apiVersion": "v1", "kind": "Service", "name": service["metadata"]["name"],
            "uid": service["metadata"].get("uid", ""), "controller": True,
            "blockOwnerDeletion": True}


def new_slice(service: Obj, ports: list[Obj], controller: str = CONTROLLER_NAME) -> Obj:
    meta = service["metadata"]
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"generateName": eu.slice_prefix(meta["name"]),
                         "namespace": meta.get("namespace", ""),
                         "labels": slice_labels(service, controller),
                         "ownerReferences": [service_owner(service)]},
            "addressType": ADDRESS_TYPE, "ports": copy.deepcopy(ports), "endpoints": []}


def owned_by(slice_: Obj, service: Obj) -> bool:
    uid = service["metadata"].get("uid")
    return any(isinstance(r, dict) and r.get("kind") == "Service" and r.get("uid") == uid
               for r in (slice_.get("metadata") or {}).get("ownerReferences") or [])


# -- comparing -----------------------------------------------------------------------------------
def normal_endpoint(ep: Obj) -> Obj:
    """An endpoint as compared: addresses sorted, absent and null fields alike."""
    out = {k: v for k, v in ep.items() if v is not None and k != "addresses"}
    out["addresses"] = sorted(str(a) for a in ep.get("addresses") or [])
    cond = {k: v for k, v in (ep.get("conditions") or {}).items() if v is not None}
    if cond:
        out["conditions"] = cond
    else:
        out.pop("conditions", None)
    return out


def _is_placeholder_of(slice_: Obj, labels: dict[str, str]) -> bool:
    return not slice_.get("endpoints") and not slice_.get("ports") and \
        slice_.get("addressType") == ADDRESS_TYPE and \
        ((slice_.get("metadata") or {}).get("labels") or {}) == labels


# -- planning --------------------------------------------------------------------------------------
def _slice_to_fill(slices: list[Obj], count: int, most: int) -> Obj | None:
    """The unchanged slice ``count`` more endpoints fit in most tightly."""
    best, best_gap = None, most
    for s in slices:
        gap = most - (count + len(s.get("endpoints") or []))
        if 0 <= gap < best_gap:
            best, best_gap = s, gap
            if gap == 0:
                break
    return best


def plan_port_group(service: Obj, existing: list[Obj], group: PortGroup, most: int,
                    labels: dict[str, str], controller: str = CONTROLLER_NAME) -> Plan:
    """One port set's slices: keep, refresh, empty out, fill up, and add slices."""
    desired = dict(group.endpoints)
    by_name: dict[str, Obj] = {}
    unchanged: list[str] = []
    to_update: list[str] = []
    to_delete: list[str] = []
    for s in existing:
        name = s["metadata"]["name"]
        by_name[name] = s
        kept, changed = [], False
        for ep in s.get("endpoints") or []:
            want = desired.pop(eu.endpoint_key(ep), None)
            if want is None:
                continue
            kept.append(want)
            changed = changed or normal_endpoint(want) != normal_endpoint(ep)
        labels_changed = (s["metadata"].get("labels") or {}) != labels
        if changed or len(kept) != len(s.get("endpoints") or []):
            if not kept:
                to_delete.append(name)
                continue
            fresh = copy.deepcopy(s)
            fresh["endpoints"], fresh["metadata"]["labels"] = kept, dict(labels)
            by_name[name] = fresh
            to_update.append(name)
        elif labels_changed:
            fresh = copy.deepcopy(s)
            fresh["metadata"]["labels"] = dict(labels)
            by_name[name] = fresh
            to_update.append(name)
        else:
            unchanged.append(name)

    remaining = list(desired.values())
    # fill the slices written anyway, fullest first
    for name in sorted(to_update, key=lambda n: -len(by_name[n]["endpoints"])):
        s = by_name[name]
        while remaining and len(s["endpoints"]) < most:
            s["endpoints"].append(remaining.pop(0))
    creates: list[Obj] = []
    while remaining:
        target = None
        if len(remaining) < most and unchanged:
            target = _slice_to_fill([by_name[n] for n in unchanged], len(remaining), most)
        if target is None:
            target = new_slice(service, group.ports, controller)
            target["metadata"]["labels"] = dict(labels)
        else:
            target = copy.deepcopy(target)
            by_name[target["metadata"]["name"]] = target
        while remaining and len(target["endpoints"]) < most:
            target["endpoints"].append(remaining.pop(0))
        name = target["metadata"].get("name")
        if name:
            unchanged.remove(name)
            to_update.append(name)
        else:
            creates.append(target)
    return Plan(creates, [by_name[n] for n in to_update], [by_name[n] for n in to_delete])


def plan_slices(service: Obj, existing: list[Obj], groups: dict[tuple[Any, ...], PortGroup],
                most: int = DEFAULT_MAX_ENDPOINTS_PER_SLICE,
                controller: str = CONTROLLER_NAME) -> Plan:
    """Every write that brings ``existing`` (this controller's slices of the Service) to the
    desired ``groups``."""
    plan = Plan()
    labels = slice_labels(service, controller)
    by_ports: dict[tuple[Any, ...], list[Obj]] = {}
    for s in sorted(existing, key=lambda s: s["metadata"].get("name", "")):
        if s.get("addressType") != ADDRESS_TYPE or not owned_by(s, service):
            plan.delete.append(s)  # another address type, or an old Service of that name's
            continue
        by_ports.setdefault(eu.ports_key(s.get("ports")), []).append(s)
    for key, group in groups.items():
        part = plan_port_group(service, by_ports.get(key, []), group, most, labels, controller)
        plan.create += part.create
        plan.update += part.update
        plan.delete += part.delete
    for key, slices in by_ports.items():
        if key not in groups:
            plan.delete += slices
    if len(plan.delete) == len(existing) and not plan.create:
        # nothing left: keep (or make) one empty placeholder slice
        if len(plan.delete) == 1 and _is_placeholder_of(plan.delete[0], labels):
            plan.delete = []
        else:
            placeholder = new_slice(service, [], controller)
            placeholder["metadata"]["labels"] = dict(labels)
            plan.create.append(placeholder)
    return reuse_deleted(plan, lambda s: owned_by(s, service))


def reuse_deleted(plan: Plan, reusable: Callable[[Obj], bool]) -> Plan:
    """Creates turned into updates of slices that would be deleted (same address type, same
    owner): one write instead of two, and no moment with neither slice."""
    creates, deletes, updates = list(plan.create), [], list(plan.update)
    for doomed in plan.delete:
        if creates and doomed.get("addressType") == creates[-1].get("addressType") and \
                reusable(doomed):
            body = creates.pop()
            meta = body["metadata"]
            meta.pop("generateName", None)
            meta["name"] = doomed["metadata"]["name"]
            for k in ("uid", "resourceVersion"):
                if doomed["metadata"].get(k):
                    meta[k] = doomed["metadata"][k]
            updates.append(body)
        else:
            deletes.append(doomed)
    return Plan(creates, updates, deletes)
