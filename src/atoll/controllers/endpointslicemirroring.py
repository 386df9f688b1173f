"""EndpointSlices mirrored from the Endpoints of selectorless Services, as
kube-controller-manager's endpointslicemirroring controller writes them.

Whoever fills a selectorless Service's Endpoints (a user, the VM operator's
VirtualMachineService controller), the dataplane and DNS read EndpointSlices: each subset of
the Endpoints (canonical layout) becomes one slice per address type with its ports, ready from
``addresses`` vs ``notReadyAddresses``, targetRef, nodeName and hostname carried over, at most
1000 addresses per subset; labels and annotations copied, owned by the Endpoints, managed by
``endpointslicemirroring-controller.k8s.io``.  Endpoints labelled
``endpointslice.kubernetes.io/skip-mirror: "true"``, leader-election ones and the API server's
``default/kubernetes`` (which writes its own slice) are not mirrored.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any, ClassVar

from atoll.api import errors
from atoll.api.resources.discovery_v1 import MANAGED_BY_LABEL, SERVICE_NAME_LABEL
from atoll.client.controller import DONE, Builder, Controller, Result, TemporaryError
from atoll.client.events import WARNING
from atoll.client.informer import object_key
from atoll.controllers import endpointutil as eu
from atoll.controllers import slicepacking as sp

CONTROLLER_NAME = "endpointslicemirroring-controller.k8s.io"
DEFAULT_MAX_ENDPOINTS_PER_SUBSET = 1000
SLICES = "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
Obj = dict[str, Any]
GroupKey = tuple[tuple[Any, ...], str]


def should_mirror(endpoints: Obj) -> bool:
    meta = endpoints.get("metadata") or {}
    if (meta.get("labels") or {}).get(eu.SKIP_MIRROR_LABEL) == "true":
        return False
    if eu.LEADER_ANNOTATION in (meta.get("annotations") or {}):
        return False
    return (meta.get("namespace"), meta.get("name")) != ("default", "kubernetes")


def mirrored_endpoint(address: Obj, ready: bool) -> Obj:
    ep: Obj = {"addresses": [address["ip"]], "conditions": {"ready": ready}}
    if isinstance(address.get("targetRef"), dict):
        ep["targetRef"] = address["targetRef"]
    if address.get("nodeName"):
        ep["nodeName"] = address["nodeName"]
    if address.get("hostname"):
        ep["hostname"] = address["hostname"]
    return ep


def desired_groups(endpoints: Obj, most: int = DEFAULT_MAX_ENDPOINTS_PER_SUBSET
                   ) -> tuple[dict[GroupKey, sp.PortGroup], int, int]:
    """The endpoints to mirror by (port set, address type), and how many addresses were
    skipped as invalid and in all (invalid or beyond ``most`` in their subset)."""
    groups: dict[GroupKey, sp.PortGroup] = {}
    invalid = skipped = 0
    for subset in eu.repack_subsets(endpoints.get("subsets")):
        ports = []
        for p in subset.get("ports") or []:
            port: Obj = {"name": p.get("name") or "", "protocol": p.get("protocol") or "TCP",
                         "port": p.get("port")}
            if p.get("appProtocol"):
                port["appProtocol"] = p["appProtocol"]
            ports.append(port)
        total = len(subset.get("addresses") or []) + len(subset.get("notReadyAddresses") or [])
        added = 0
        for field, ready in (("addresses", True), ("notReadyAddresses", False)):
            for address in subset.get(field) or []:
                if added >= most:
                    break
                family = eu.address_type(address.get("ip"))
                if family is None:
                    invalid += 1
                    continue
                ep = mirrored_endpoint(address, ready)
                group = groups.setdefault((eu.ports_key(ports), family), sp.PortGroup(ports))
                group.endpoints[eu.endpoint_key(ep)] = ep
                added += 1
        skipped += total - added
    return groups, invalid, skipped


def mirror_labels(endpoints: Obj) -> dict[str, str]:
    labels = dict(endpoints["metadata"].get("labels") or {})
    labels[SERVICE_NAME_LABEL] = endpoints["metadata"]["name"]
    labels[MANAGED_BY_LABEL] = CONTROLLER_NAME
    return labels


def mirror_annotations(endpoints: Obj) -> dict[str, str]:
    return {k: v for k, v in (endpoints["metadata"].get("annotations") or {}).items()
            if k not in (eu.TRIGGER_TIME_ANNOTATION, eu.LAST_APPLIED_ANNOTATION)}


def endpoints_owner(endpoints: Obj) -> Obj:
    return {"apiVersion": "v1", "kind": "Endpoints", "name": endpoints["metadata"]["name"],
            "uid": endpoints["metadata"].get("uid", ""), "controller": True,
            "blockOwnerDeletion": True}


def owned_by(slice_: Obj, endpoints: Obj) -> bool:
    uid = endpoints["metadata"].get("uid")
    return any(isinstance(r, dict) and r.get("kind") == "Endpoints" and r.get("uid") == uid
               for r in (slice_.get("metadata") or {}).get("ownerReferences") or [])


def mirror_slice(endpoints: Obj, group: sp.PortGroup, family: str, most: int,
                 existing: Obj | None) -> Obj:
    meta = endpoints["metadata"]
    slice_meta: Obj = {"namespace": meta.get("namespace", ""),
                       "labels": mirror_labels(endpoints),
                       "ownerReferences": [endpoints_owner(endpoints)]}
    annotations = mirror_annotations(endpoints)
    if annotations:
        slice_meta["annotations"] = annotations
    if existing is None:
        slice_meta["generateName"] = eu.slice_prefix(meta["name"])
    else:
        for k in ("name", "uid", "resourceVersion"):
            if existing["metadata"].get(k):
                slice_meta[k] = existing["metadata"][k]
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": slice_meta, "addressType": family,
            "ports": copy.deepcopy(group.ports),
            "endpoints": list(group.endpoints.values())[:most]}


def _same(slice_: Obj, want: Obj) -> bool:
    have_meta, want_meta = slice_.get("metadata") or {}, want["metadata"]
    return sorted((sp.normal_endpoint(e) for e in slice_.get("endpoints") or []),
                  key=repr) == sorted((sp.normal_endpoint(e) for e in want["endpoints"]),
                                      key=repr) and \
        (have_meta.get("labels") or {}) == want_meta["labels"] and \
        (have_meta.get("annotations") or {}) == want_meta.get("annotations", {}) and \
        have_meta.get("ownerReferences") == want_meta["ownerReferences"]


def plan_mirror(endpoints: Obj, existing: list[Obj], groups: dict[GroupKey, sp.PortGroup],
                most: int = DEFAULT_MAX_ENDPOINTS_PER_SUBSET) -> sp.Plan:
    """One slice per group: the first existing slice of that group rewritten if it differs,
    the group's other slices deleted, slices of groups no longer there deleted."""
    by_key: dict[GroupKey, list[Obj]] = {}
    for s in sorted(existing, key=lambda s: s["metadata"].get("name", "")):
        by_key.setdefault((eu.ports_key(s.get("ports")), str(s.get("addressType"))),
                          []).append(s)
    plan = sp.Plan()
    for key, group in groups.items():
        slices = by_key.get(key, [])
        first = slices[0] if slices else None
        plan.delete += slices[1:]
        want = mirror_slice(endpoints, group, key[1], most, first)
        if first is None:
            plan.create.append(want)
        elif not _same(first, want):
            plan.update.append(want)
    for key, slices in by_key.items():
        if key not in groups:
            plan.delete += slices
    return sp.reuse_deleted(plan, lambda s: owned_by(s, endpoints))


class EndpointSliceMirroringController(Controller):
    """Endpoints (primary); Services mapped to their Endpoints when they come, go, or gain or
    lose a selector; mirrored slices changed by someone else mapped back."""

    name = "endpointslicemirroring"
    default_workers = 2
    events_component = "endpoint-slice-mirroring-controller"
    backoff = (0.1, 30.0)
    controller_name: ClassVar[str] = CONTROLLER_NAME

    def __init__(self, *args: Any, max_endpoints_per_subset: int | None = None,
                 **kwargs: Any) -> None:
        self.max_endpoints_per_subset = max_endpoints_per_subset or \
            DEFAULT_MAX_ENDPOINTS_PER_SUBSET
        self.tracker = eu.SliceTracker()
        super().__init__(*args, **kwargs)

    def declare(self, b: Builder) -> None:
        self.endpoints = b.primary("", "v1", "endpoints")
        self.services = b.watches("", "v1", "services", self._on_service)
        self.slices = b.watches("discovery.k8s.io", "v1", "endpointslices", self._on_slice,
                                indexers={eu.SERVICE_INDEX: eu.by_slice_service})

    def _on_service(self, kind: str, svc: Obj, old: Obj | None) -> Iterable[str]:
        if kind == "MODIFIED" and old is not None and \
                (eu.selector_of(svc) is None) == (eu.selector_of(old) is None):
            return ()
        return [object_key(svc)]

    def _on_slice(self, kind: str, slice_: Obj, old: Obj | None) -> Iterable[str]:
        if eu.slice_managed_by(slice_) != CONTROLLER_NAME and \
                (old is None or eu.slice_managed_by(old) != CONTROLLER_NAME):
            return ()
        keys = eu.by_slice_service(slice_)
        if kind == "DELETED":
            return [k for k in keys if not self.tracker.observed_deletion(k, slice_)]
        return [k for k in keys if not self.tracker.own_write(k, slice_)]

    def _mirrored(self, key: str) -> list[Obj]:
        return [s for s in self.slices.by_index(eu.SERVICE_INDEX, key)
                if eu.slice_managed_by(s) == CONTROLLER_NAME
                and not s["metadata"].get("deletionTimestamp")]

    async def reconcile(self, key: str) -> Result:
        slices = self._mirrored(key)
        if self.tracker.stale(key, slices):
            raise TemporaryError("EndpointSlice informer cache is out of date")
        svc = self.services.get(key)
        endpoints = self.endpoints.get(key)
        if svc is None or eu.selector_of(svc) is not None or endpoints is None or \
                not should_mirror(endpoints):
            if svc is None:
                self.tracker.forget(key)
            await self._write(key, sp.Plan(delete=slices), creating=False)
            return DONE
        groups, invalid, skipped = desired_groups(endpoints, self.max_endpoints_per_subset)
        if invalid:
            self.events.record(endpoints, WARNING, "InvalidIPAddress",
                               f"Skipped {invalid} invalid IP addresses when mirroring to "
                               "EndpointSlices")
        if skipped > invalid:
            self.events.record(endpoints, WARNING, "TooManyAddressesToMirror",
                               f"A max of {self.max_endpoints_per_subset} addresses can be "
                               "mirrored to EndpointSlices per Endpoints subset. "
                               f"{skipped} addresses were skipped")
        plan = plan_mirror(endpoints, slices, groups, self.max_endpoints_per_subset)
        try:
            await self._write(key, plan,
                              creating=not endpoints["metadata"].get("deletionTimestamp"))
        except errors.ApiError as exc:
            if not isinstance(exc, errors.Conflict):
                self.events.record(endpoints, WARNING, "FailedToUpdateEndpointSlices",
                                   f"Error updating EndpointSlices for Endpoints {key}: {exc}")
            raise
        return DONE

    async def _write(self, key: str, plan: sp.Plan, creating: bool) -> None:
        collection = SLICES.format(ns=key.split("/", 1)[0])
        if creating:
            for body in plan.create:
                try:
                    created = await self.client.create(collection, body)
                except errors.Forbidden as exc:
                    if any(c.reason == "NamespaceTerminating" for c in exc.causes):
                        return
                    raise
                self.tracker.wrote(key, created)
        for body in plan.update:
            updated = await self.client.update(f"{collection}/{body['metadata']['name']}", body)
            self.tracker.wrote(key, updated)
        for doomed in plan.delete:
            try:
                await self.client.delete(f"{collection}/{doomed['metadata']['name']}")
            except errors.NotFound:
                pass
            self.tracker.deleted(key, doomed)
