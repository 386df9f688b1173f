"""EndpointSlices for every Service with a selector, as kube-controller-manager's
endpointslice controller writes them.

For each such Service (not ExternalName): the pods its selector picks in its namespace, as
IPv4 endpoints (ready/serving/terminating, nodeName, zone, targetRef, hostname for a pod whose
subdomain names the Service), grouped by the ports they resolve to and packed into slices
named ``<service>-<random>`` (``slicepacking``), labelled with the Service's labels, its name
and this controller as manager, owned by the Service (so the garbage collector removes them
with it).  Only slices whose content changes are written; slices managed by anyone else are
never touched.  A pod change wakes the Services selecting it (before or after the change), and
only when something an endpoint shows changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from atoll.api import errors
from atoll.api.timestamps import rfc3339
from atoll.client import indexers as ix
from atoll.client.controller import DONE, Builder, Controller, Result, TemporaryError
from atoll.client.events import WARNING
from atoll.client.informer import object_key
from atoll.controllers import endpointutil as eu
from atoll.controllers import slicepacking as sp

SLICES = "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"


def set_trigger_time(slice_: dict[str, Any], at: float | None) -> None:
    """Stamp the change's trigger time on a slice being written (or clear a stale one)."""
    meta = slice_["metadata"]
    annotations = dict(meta.get("annotations") or {})
    if at is not None:
        annotations[eu.TRIGGER_TIME_ANNOTATION] = rfc3339(at)
    else:
        annotations.pop(eu.TRIGGER_TIME_ANNOTATION, None)
    meta["annotations"] = annotations or None
    if meta["annotations"] is None:
        del meta["annotations"]


class EndpointSliceController(Controller):
    """Services (primary); pods mapped to the Services selecting them; this controller's
    slices mapped to their Service when someone else changed them."""

    name = "endpointslice"
    default_workers = 4
    events_component = "endpoint-slice-controller"
    backoff = (0.1, 30.0)
    controller_name: ClassVar[str] = sp.CONTROLLER_NAME

    def __init__(self, *args: Any, max_endpoints_per_slice: int | None = None,
                 **kwargs: Any) -> None:
        #: upstream's --max-endpoints-per-slice (1 to 1000)
        self.max_endpoints_per_slice = max(1, min(1000, max_endpoints_per_slice or
                                                  sp.DEFAULT_MAX_ENDPOINTS_PER_SLICE))
        self.tracker = eu.SliceTracker()
        self.triggers = eu.TriggerTimeTracker()
        super().__init__(*args, **kwargs)

    def declare(self, b: Builder) -> None:
        self.services = b.primary("", "v1", "services",
                                  indexers={eu.SELECTOR_INDEX: eu.by_selector_first_pair})
        self.pods = b.watches("", "v1", "pods", self._services_of_pod)
        self.slices = b.watches("discovery.k8s.io", "v1", "endpointslices", self._service_of_slice,
                                indexers={eu.SERVICE_INDEX: eu.by_slice_service})
        self.nodes = b.reads("", "v1", "nodes")

    def _services_of_pod(self, kind: str, pod: dict[str, Any],
                         old: dict[str, Any] | None) -> Iterable[str]:
        if kind == "MODIFIED" and not eu.pod_endpoints_changed(pod, old):
            return ()
        labels = [pod["metadata"].get("labels")]
        if old is not None:
            labels.append(old["metadata"].get("labels"))
        return eu.services_selecting(self.services.by_index,
                                     pod["metadata"].get("namespace", ""), labels)

    def _service_of_slice(self, kind: str, slice_: dict[str, Any],
                          old: dict[str, Any] | None) -> Iterable[str]:
        if eu.slice_managed_by(slice_) != self.controller_name and \
                (old is None or eu.slice_managed_by(old) != self.controller_name):
            return ()
        keys = eu.by_slice_service(slice_)
        if kind == "DELETED":
            # a deletion this controller asked for needs no look; one by someone else does
            return [k for k in keys if not self.tracker.observed_deletion(k, slice_)]
        return [k for k in keys if not self.tracker.own_write(k, slice_)]

    def _slices_of(self, key: str) -> list[dict[str, Any]]:
        return [s for s in self.slices.by_index(eu.SERVICE_INDEX, key)
                if eu.slice_managed_by(s) == self.controller_name
                and not s["metadata"].get("deletionTimestamp")]

    async def reconcile(self, key: str) -> Result:
        svc = self.services.get(key)
        if svc is None:
            self.tracker.forget(key)
            self.triggers.forget(key)
            return DONE  # its slices go with it (owner references)
        slices = self._slices_of(key)
        if self.tracker.stale(key, slices):
            raise TemporaryError("EndpointSlice informer cache is out of date")
        if not eu.selects_pods(svc):
            # no longer ours to fill (upstream leaves such slices behind, kubernetes#91072;
            # a dataplane would keep sending traffic to them)
            await self._write(svc, sp.Plan(delete=[s for s in slices if sp.owned_by(s, svc)]),
                              None)
            return DONE
        selector = eu.selector_of(svc)
        pods = [p for p in self.pods.by_index(ix.NAMESPACE, svc["metadata"]["namespace"])
                if eu.matches(selector, p["metadata"].get("labels"))]
        trigger = self.triggers.compute(key, svc, pods)
        groups, skipped = sp.desired_endpoints(svc, pods, self.nodes.get)
        plan = sp.plan_slices(svc, slices, groups, self.max_endpoints_per_slice,
                              self.controller_name)
        try:
            await self._write(svc, plan, trigger)
            if skipped:
                raise TemporaryError(f"skipping Pods {', '.join(skipped)} for Service {key}: "
                                     "their Node is not found")
        except (errors.ApiError, TemporaryError) as exc:
            if not isinstance(exc, errors.Conflict):
                self.events.record(svc, WARNING, "FailedToUpdateEndpointSlices",
                                   f"Error updating Endpoint Slices for Service {key}: {exc}")
            raise
        return DONE

    async def _write(self, svc: dict[str, Any], plan: sp.Plan, trigger: float | None) -> None:
        ns = svc["metadata"]["namespace"]
        key = object_key(svc)
        collection = SLICES.format(ns=ns)
        if not svc["metadata"].get("deletionTimestamp"):  # no race with the garbage collector
            for body in plan.create:
                set_trigger_time(body, trigger)
                try:
                    created = await self.client.create(collection, body)
                except errors.Forbidden as exc:
                    if any(c.reason == "NamespaceTerminating" for c in exc.causes):
                        return  # creates keep failing until the namespace is gone
                    raise
                self.tracker.wrote(key, created)
        for body in plan.update:
            set_trigger_time(body, trigger)
            updated = await self.client.update(f"{collection}/{body['metadata']['name']}", body)
            self.tracker.wrote(key, updated)
        for doomed in plan.delete:
            try:
                await self.client.delete(f"{collection}/{doomed['metadata']['name']}")
            except errors.NotFound:
                pass
            self.tracker.deleted(key, doomed)
