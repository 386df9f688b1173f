"""The legacy core/v1 Endpoints of every Service with a selector, as kube-controller-manager's
endpoints controller keeps them.

One Endpoints object named as the Service: the pods its selector picks, ready ones under
``addresses`` and the others under ``notReadyAddresses`` (all under ``addresses`` when the
Service publishes not-ready addresses; terminating pods only then), per resolved port set in
the canonical subset layout, the Service's labels (and the headless mark), and at most 1000
addresses (``over-capacity: truncated`` when more).  Not owned by the Service: the Endpoints
go when a Service deletion is seen, and at start any Endpoints without a Service go too.
Endpoints of selectorless Services belong to whoever writes them (users, the VM operator's
VirtualMachineService controller) and are never touched.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from typing import Any

from atoll.api import errors
from atoll.api.timestamps import rfc3339
from atoll.client import indexers as ix
from atoll.client.controller import DONE, Builder, Controller, Result
from atoll.client.events import WARNING
from atoll.client.informer import object_key
from atoll.controllers import endpointutil as eu

MAX_CAPACITY = 1000
TRUNCATED = "truncated"
Obj = dict[str, Any]


def _address(pod: Obj, service: Obj, ip: str) -> Obj:
    meta, spec = pod["metadata"], pod.get("spec") or {}
    addr: Obj = {"ip": ip, "targetRef": {"kind": "Pod", "namespace": meta.get("namespace", ""),
                                         "name": meta.get("name", ""),
                                         "uid": meta.get("uid", "")}}
    if spec.get("nodeName"):
        addr["nodeName"] = spec["nodeName"]
    if eu.should_set_hostname(pod, service):
        addr["hostname"] = spec["hostname"]
    return addr


def desired_subsets(service: Obj, pods: Iterable[Obj]) -> list[Obj]:
    """The pods as subsets, repacked (upstream's syncService loop)."""
    spec = service.get("spec") or {}
    publish = bool(spec.get("publishNotReadyAddresses"))
    ports = [p for p in spec.get("ports") or [] if isinstance(p, dict)]
    headless = spec.get("clusterIP") == "None"
    subsets: list[Obj] = []
    for pod in pods:
        if not eu.should_pod_be_in_endpoints(pod, publish):
            continue
        ip = eu.ipv4_of(pod)
        if ip is None:
            continue
        addr = _address(pod, service, ip)
        field = "addresses" if publish or eu.pod_ready(pod) else "notReadyAddresses"
        if not ports:
            if headless:  # a headless Service may have no ports
                subsets.append({field: [addr]})
            continue
        for sp in ports:
            number = eu.find_port(pod, sp)
            if number is None:
                continue
            port: Obj = {"port": number, "protocol": sp.get("protocol") or "TCP"}
            if sp.get("name"):
                port["name"] = sp["name"]
            if sp.get("appProtocol"):
                port["appProtocol"] = sp["appProtocol"]
            subsets.append({field: [copy.deepcopy(addr)], "ports": [port]})
    return eu.repack_subsets(subsets)


def truncate(subsets: list[Obj], most: int = MAX_CAPACITY) -> bool:
    """Cut ``subsets`` down to ``most`` addresses in place, each subset keeping its share
    (rounded up), ready addresses first (upstream's truncateEndpoints); True if it cut."""
    ready = sum(len(s.get("addresses") or []) for s in subsets)
    not_ready = sum(len(s.get("notReadyAddresses") or []) for s in subsets)
    if ready + not_ready <= most:
        return False
    cut_ready = ready > most
    room, total = (most, ready) if cut_ready else (most - ready, not_ready)
    left = room
    for s in subsets:
        field = "addresses" if cut_ready else "notReadyAddresses"
        have = s.get(field) or []
        share = min(left, math.ceil(len(have) / total * room)) if total else 0
        kept = have[:share]
        if kept:
            s[field] = kept
        else:
            s.pop(field, None)
        if cut_ready:
            s.pop("notReadyAddresses", None)
        left -= len(kept)
    subsets[:] = [s for s in subsets if s.get("addresses") or s.get("notReadyAddresses")]
    return True


def desired_labels(service: Obj) -> dict[str, str]:
    labels = dict(service["metadata"].get("labels") or {})
    labels.pop(eu.HEADLESS_LABEL, None)
    if not eu.cluster_ip_set(service):
        labels[eu.HEADLESS_LABEL] = ""
    return labels


class EndpointsController(Controller):
    """Services (primary); pods mapped to the Services selecting them; Endpoints changed or
    deleted by someone else mapped back to their Service."""

    name = "endpoints"
    default_workers = 4
    events_component = "endpoint-controller"
    backoff = (0.1, 30.0)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.triggers = eu.TriggerTimeTracker()
        super().__init__(*args, **kwargs)

    def declare(self, b: Builder) -> None:
        self.services = b.primary("", "v1", "services",
                                  indexers={eu.SELECTOR_INDEX: eu.by_selector_first_pair})
        self.pods = b.watches("", "v1", "pods", self._services_of_pod)
        self.endpoints = b.watches("", "v1", "endpoints", self._service_of_endpoints)

    def _services_of_pod(self, kind: str, pod: Obj, old: Obj | None) -> Iterable[str]:
        if kind == "MODIFIED" and not eu.pod_endpoints_changed(pod, old):
            return ()
        labels = [pod["metadata"].get("labels")]
        if old is not None:
            labels.append(old["metadata"].get("labels"))
        return eu.services_selecting(self.services.by_index,
                                     pod["metadata"].get("namespace", ""), labels)

    def _service_of_endpoints(self, kind: str, ep: Obj, old: Obj | None) -> Iterable[str]:
        """Only for Services this controller fills: an Endpoints object written before its
        Service (or for a selectorless one) is not ours to judge."""
        key = object_key(ep)
        svc = self.services.get(key)
        return [key] if svc is not None and eu.selects_pods(svc) else []

    async def on_synced(self) -> None:
        """Endpoints left behind by Services deleted while no manager ran (upstream's
        checkLeftoverEndpoints)."""
        for ep in self.endpoints.list():
            key = object_key(ep)
            if self.services.get(key) is None and \
                    eu.LEADER_ANNOTATION not in (ep["metadata"].get("annotations") or {}):
                self.queue.add(key)

    async def reconcile(self, key: str) -> Result:
        svc = self.services.get(key)
        current = self.endpoints.get(key)
        if svc is None:
            self.triggers.forget(key)
            if current is not None and \
                    eu.LEADER_ANNOTATION not in (current["metadata"].get("annotations") or {}):
                ns, name = key.split("/", 1)
                try:
                    await self.client.delete(f"/api/v1/namespaces/{ns}/endpoints/{name}",
                                             {"apiVersion": "v1", "kind": "DeleteOptions",
                                              "preconditions": {
                                                  "uid": current["metadata"].get("uid")}})
                except (errors.NotFound, errors.Conflict):
                    pass
            return DONE
        if not eu.selects_pods(svc):
            return DONE
        meta = svc["metadata"]
        selector = eu.selector_of(svc)
        pods = sorted((p for p in self.pods.by_index(ix.NAMESPACE, meta["namespace"])
                       if eu.matches(selector, p["metadata"].get("labels"))),
                      key=lambda p: p["metadata"].get("name", ""))
        trigger = self.triggers.compute(key, svc, pods)
        subsets = desired_subsets(svc, pods)
        truncated = truncate(subsets)
        labels = desired_labels(svc)
        if current is not None:
            annotations = current["metadata"].get("annotations") or {}
            if eu.repack_subsets(current.get("subsets")) == subsets and \
                    (current["metadata"].get("labels") or {}) == labels and \
                    (annotations.get(eu.OVER_CAPACITY_ANNOTATION) == TRUNCATED) == truncated:
                return DONE
        body = copy.deepcopy(current) if current is not None else {
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]}}
        annotations = dict(body["metadata"].get("annotations") or {})
        if trigger is not None:
            annotations[eu.TRIGGER_TIME_ANNOTATION] = rfc3339(trigger)
        else:
            annotations.pop(eu.TRIGGER_TIME_ANNOTATION, None)
        if truncated:
            annotations[eu.OVER_CAPACITY_ANNOTATION] = TRUNCATED
        else:
            annotations.pop(eu.OVER_CAPACITY_ANNOTATION, None)
        body["metadata"]["annotations"] = annotations or None
        body["metadata"]["labels"] = labels or None
        body["metadata"] = {k: v for k, v in body["metadata"].items() if v is not None}
        body["subsets"] = subsets
        await self._write(body, create=current is None)
        return DONE

    async def _write(self, body: Obj, create: bool) -> None:
        meta = body["metadata"]
        collection = f"/api/v1/namespaces/{meta['namespace']}/endpoints"
        try:
            if create:
                await self.client.create(collection, body)
            else:
                await self.client.update(f"{collection}/{meta['name']}", body)
        except errors.Conflict:
            raise  # the cache was behind; retried on a fresh look
        except errors.ApiError as exc:
            if create and isinstance(exc, errors.Forbidden) and \
                    any(c.reason == "NamespaceTerminating" for c in exc.causes):
                return
            if create and isinstance(exc, errors.AlreadyExists):
                raise errors.Conflict(str(exc)) from exc  # the cache had not seen it yet
            self.events.record(body, WARNING,
                               "FailedToCreateEndpoint" if create else "FailedToUpdateEndpoint",
                               f"Failed to {'create' if create else 'update'} endpoint "
                               f"{meta['namespace']}/{meta['name']}: {exc}")
            raise
