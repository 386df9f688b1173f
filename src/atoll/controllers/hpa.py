"""HorizontalPodAutoscalers: kube-controller-manager's HPA controller (autoscaling/v2).

Every sync period (15 s, upstream's --horizontal-pod-autoscaler-sync-period) each HPA is
looked at again: the target's ``/scale`` (any kind that serves one: Deployments,
StatefulSets, ReplicaSets, ReplicationControllers, custom resources with a scale
subresource), the pods its selector names, their usage from the resource metrics API, the
proposal per metric (``hpa_replicas``), the largest proposal normalised by stabilisation
windows, policies and limits (``hpa_behavior``), then the scale written and the status
(current metrics, conditions, replicas, last scale time) recorded, with upstream's events.

The memory the windows and policies need (recent proposals, recent changes) is kept per HPA
in this process, as upstream keeps it; a restarted controller starts it afresh.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from atoll.api import errors, quantity, selectors
from atoll.api.timestamps import rfc3339
from atoll.client import indexers as ix
from atoll.client.controller import DONE, Builder, Controller, Result, requeue_after
from atoll.client.events import NORMAL, WARNING
from atoll.client.status import patch_status_if_changed
from atoll.controllers import hpa_behavior, hpa_replicas
from atoll.controllers.hpa_replicas import MetricError

log = logging.getLogger(__name__)
METRICS_API = "/apis/metrics.k8s.io/v1beta1"
#: seconds before an unknown target kind is looked up in discovery again
DISCOVERY_RETRY = 30.0


class _MetricFailure(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class HorizontalPodAutoscalerController(Controller):
    """HPAs (primary, re-synced every period); pods read for the selector's pods."""

    name = "horizontal-pod-autoscaler"
    default_workers = 2
    events_component = "horizontal-pod-autoscaler"

    def declare(self, b: Builder) -> None:
        self.hpas = b.primary("autoscaling", "v2", "horizontalpodautoscalers")
        self.pods = b.reads("", "v1", "pods")
        self.histories: dict[str, hpa_behavior.History] = {}
        #: each HPA's target selector as last read, to find pods two HPAs would both scale
        self.selectors: dict[str, selectors.LabelSelector] = {}
        #: (group, version, kind) -> plural, from discovery
        self._plurals: dict[tuple[str, str, str], str] = {}
        self._looked_up: dict[tuple[str, str], float] = {}

    @property
    def sync_period(self) -> float:
        return self.settings.hpa_sync_period_seconds

    @property
    def downscale_window(self) -> float:
        return self.settings.hpa_downscale_stabilization_seconds

    @property
    def tolerance(self) -> float:
        return self.settings.hpa_tolerance

    async def reconcile(self, key: str) -> Result:
        hpa = self.hpas.get(key)
        if hpa is None:
            self.histories.pop(key, None)
            self.selectors.pop(key, None)
            return DONE
        if hpa["metadata"].get("deletionTimestamp"):
            return DONE
        run = _Run(self, key, copy.deepcopy(hpa))
        await run.reconcile()
        await run.write_status()
        return requeue_after(self.sync_period)

    # -- the target's scale --------------------------------------------------------------------
    async def scale_path(self, namespace: str, ref: dict[str, Any]) -> str:
        api_version, kind, name = (ref.get("apiVersion") or "", ref.get("kind") or "",
                                   ref.get("name") or "")
        group, _, version = api_version.rpartition("/")
        if "/" in group or not kind or not name:
            raise ValueError(f"invalid scale target reference {api_version}/{kind}/{name}")
        plural = await self._plural(group, version or "v1", kind)
        base = f"/apis/{group}/{version}" if group else f"/api/{version or 'v1'}"
        return f"{base}/namespaces/{namespace}/{plural}/{name}/scale"

    async def _plural(self, group: str, version: str, kind: str) -> str:
        plural = self._plurals.get((group, version, kind))
        if plural is not None:
            return plural
        now = self.clock()
        if now - self._looked_up.get((group, version), -DISCOVERY_RETRY) >= DISCOVERY_RETRY:
            self._looked_up[(group, version)] = now
            path = f"/apis/{group}/{version}" if group else f"/api/{version}"
            try:
                body = await self.client.get(path)
            except errors.NotFound:
                body = {}
            for r in body.get("resources") or []:
                if isinstance(r, dict) and "/" not in str(r.get("name", "")):
                    self._plurals[(group, version, str(r.get("kind")))] = str(r["name"])
        plural = self._plurals.get((group, version, kind))
        if plural is None:
            raise ValueError(f'no matches for kind "{kind}" in group "{group}"')
        return plural

    async def pod_metrics(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        body = await self.client.get(f"{METRICS_API}/namespaces/{namespace}/pods",
                                     labelSelector=selector)
        return [i for i in (body or {}).get("items") or [] if isinstance(i, dict)]

    def selected_pods(self, namespace: str, selector: selectors.LabelSelector
                      ) -> list[dict[str, Any]]:
        return [p for p in self.pods.by_index(ix.NAMESPACE, namespace)
                if selector.matches(p["metadata"].get("labels") or {})]


class _Run:
    """One reconcile of one HPA: its status as it is being rebuilt, and the steps."""

    def __init__(self, ctrl: HorizontalPodAutoscalerController, key: str,
                 hpa: dict[str, Any]) -> None:
        self.ctrl, self.key, self.hpa = ctrl, key, hpa
        self.now = ctrl.clock()
        self.spec = hpa.get("spec") or {}
        self.original = copy.deepcopy(hpa.get("status") or {})
        self.status = copy.deepcopy(self.original)
        self.status.setdefault("desiredReplicas", 0)
        self.conditions: list[dict[str, Any]] = [
            c for c in self.status.get("conditions") or [] if isinstance(c, dict)]
        meta = hpa["metadata"]
        self.namespace, self.name = meta["namespace"], meta["name"]
        self._metrics: dict[str, list[dict[str, Any]]] = {}

    # -- status helpers ------------------------------------------------------------------------
    def condition(self, type_: str, status: str, reason: str, message: str) -> None:
        """setCondition: the transition time moves only when the status changes."""
        for c in self.conditions:
            if c.get("type") == type_:
                break
        else:
            c = {"type": type_}
            self.conditions.append(c)
        if c.get("status") != status:
            c["lastTransitionTime"] = rfc3339(self.now)
        c.update(status=status, reason=reason, message=message)

    def event(self, type_: str, reason: str, message: str) -> None:
        self.ctrl.events.record(self.hpa, type_, reason, message)

    def set_current(self, current: int, metrics: list[dict[str, Any]] | None) -> None:
        self.status["currentReplicas"] = current
        self.status["currentMetrics"] = metrics or None

    async def write_status(self) -> None:
        self.status["conditions"] = self.conditions or None
        self.status["observedGeneration"] = self.hpa["metadata"].get("generation", 1)
        path = (f"/apis/autoscaling/v2/namespaces/{self.namespace}/horizontalpodautoscalers/"
                f"{self.name}/status")
        await patch_status_if_changed(self.ctrl.client, path, self.hpa, {
            k: self.status.get(k) for k in ("observedGeneration", "lastScaleTime",
                                            "currentReplicas", "desiredReplicas",
                                            "currentMetrics", "conditions")})

    # -- the steps -------------------------------------------------------------------------------
    async def reconcile(self) -> None:
        ref = self.spec.get("scaleTargetRef") or {}
        reference = f"{ref.get('kind', '')}/{self.namespace}/{ref.get('name', '')}"
        try:
            path = await self.ctrl.scale_path(self.namespace, ref)
            scale = await self.ctrl.client.get(path)
        except (errors.ApiError, ValueError) as exc:
            self.event(WARNING, "FailedGetScale", str(exc))
            self.condition("AbleToScale", "False", "FailedGetScale",
                           f"the HPA controller was unable to get the target's current scale: "
                           f"{exc}")
            log.info("hpa %s: cannot read the scale of %s: %s", self.key, reference, exc)
            return
        self.condition("AbleToScale", "True", "SucceededGetScale",
                       "the HPA controller was able to get the target's current scale")
        current = int((scale.get("spec") or {}).get("replicas") or 0)
        history = self.ctrl.histories.setdefault(self.key, hpa_behavior.History())
        history.record_initial(current, self.now)
        low = self.spec.get("minReplicas")
        low = 1 if not isinstance(low, int) else low
        high = int(self.spec.get("maxReplicas") or 0)
        statuses: list[dict[str, Any]] = []
        rescale, reason = True, ""
        if current == 0 and low != 0:
            desired, rescale = 0, False
            self.condition("ScalingActive", "False", "ScalingDisabled",
                           "scaling is disabled since the replica count of the target is zero")
        elif current > high:
            reason, desired = "Current number of replicas above Spec.MaxReplicas", high
        elif current < low:
            reason, desired = "Current number of replicas below Spec.MinReplicas", low
        else:
            proposal, metric, statuses, problem = await self.compute(scale)
            if problem and proposal == -1:
                self.set_current(current, statuses)
                self.event(WARNING, "FailedComputeMetricsReplicas", problem)
                return
            desired = max(0, proposal)
            if desired > current:
                reason = f"{metric} above target"
            elif desired < current:
                reason = "All metrics below target"
            behavior = self.spec.get("behavior")
            if isinstance(behavior, dict):
                desired, conditions = hpa_behavior.normalize_with_behavior(
                    history, behavior, current, desired, low, high, self.now,
                    downscale_window=self.ctrl.downscale_window)
            else:
                desired, conditions = hpa_behavior.normalize(
                    history, current, desired, low, high, self.now,
                    downscale_window=self.ctrl.downscale_window)
            for c in conditions:
                self.condition(*c)
            rescale = desired != current
        if rescale:
            try:
                await self.ctrl.client.patch(path, {"spec": {"replicas": desired}})
            except errors.ApiError as exc:
                self.event(WARNING, "FailedRescale",
                           f"New size: {desired}; reason: {reason}; error: {exc}")
                self.condition("AbleToScale", "False", "FailedUpdateScale",
                               f"the HPA controller was unable to update the target scale: {exc}")
                self.set_current(current, statuses)
                return
            self.condition("AbleToScale", "True", "SucceededRescale",
                           f"the HPA controller was able to update the target scale to {desired}")
            self.event(NORMAL, "SuccessfulRescale", f"New size: {desired}; reason: {reason}")
            behavior = self.spec.get("behavior")
            history.record_scale(behavior if isinstance(behavior, dict) else None, current,
                                 desired, self.now)
            self.status["lastScaleTime"] = rfc3339(self.now)
            log.info("hpa %s: %s scaled from %d to %d (%s)", self.key, reference, current,
                     desired, reason)
        else:
            desired = current
        self.set_current(current, statuses)
        self.status["desiredReplicas"] = desired

    async def compute(self, scale: dict[str, Any]
                      ) -> tuple[int, str, list[dict[str, Any]], str]:
        """computeReplicasForMetrics: (largest proposal or -1, its metric's name, statuses,
        the first error's text)."""
        text = (scale.get("status") or {}).get("selector") or ""
        if not text:
            self.event(WARNING, "SelectorRequired", "selector is required")
            self.condition("ScalingActive", "False", "InvalidSelector",
                           "the HPA target's scale is missing a selector")
            return -1, "", [], "selector is required"
        try:
            selector = selectors.parse_label_selector(text)
        except errors.ApiError as exc:
            msg = f"couldn't convert selector into a corresponding internal selector object: {exc}"
            self.event(WARNING, "InvalidSelector", msg)
            self.condition("ScalingActive", "False", "InvalidSelector", msg)
            return -1, "", [], msg
        pods = self.ctrl.selected_pods(self.namespace, selector)
        self.ctrl.selectors[self.key] = selector
        others = sorted(k for k, sel in self.ctrl.selectors.items()
                        if k != self.key and k.split("/")[0] == self.namespace and
                        self.ctrl.hpas.get(k) is not None and
                        any(sel.matches(p["metadata"].get("labels") or {}) for p in pods))
        if others:
            names = ",".join(k.split("/", 1)[1] for k in [self.key, *others])
            msg = f"pods by selector {text} are controlled by multiple HPAs: [{names}]"
            self.event(WARNING, "AmbiguousSelector", msg)
            self.condition("ScalingActive", "False", "AmbiguousSelector", msg)
            return -1, "", [], msg
        current = int((scale.get("spec") or {}).get("replicas") or 0)
        specs = [m for m in self.spec.get("metrics") or [] if isinstance(m, dict)]
        statuses: list[dict[str, Any]] = []
        replicas, metric, invalid = 0, "", 0
        first: _MetricFailure | None = None
        for spec in specs:
            try:
                proposal, name, status = await self.metric(spec, current, text, pods)
            except _MetricFailure as exc:
                statuses.append({"type": ""})
                invalid += 1
                first = first or exc
                continue
            statuses.append(status)
            if replicas == 0 or proposal > replicas:
                replicas, metric = proposal, name
        problem = ""
        if first is not None:
            problem = (f"invalid metrics ({invalid} invalid out of {len(specs)}), first error "
                       f"is: {first}")
        if specs and (invalid >= len(specs) or (invalid and replicas < current)):
            assert first is not None
            self.condition("ScalingActive", "False", first.reason,
                           f"the HPA was unable to compute the replica count: {first}")
            return -1, "", statuses, problem
        self.condition("ScalingActive", "True", "ValidMetricFound",
                       f"the HPA was able to successfully calculate a replica count from {metric}")
        return replicas, metric, statuses, problem

    async def metric(self, spec: dict[str, Any], current: int, selector: str,
                     pods: list[dict[str, Any]]) -> tuple[int, str, dict[str, Any]]:
        kind = spec.get("type")
        if kind not in ("Resource", "ContainerResource"):
            field = {"Pods": "pods", "Object": "object", "External": "external"}.get(
                str(kind), "")
            metric_name = ((spec.get(field) or {}).get("metric") or {}).get("name", "")
            reason = {"Pods": "FailedGetPodsMetric", "Object": "FailedGetObjectMetric",
                      "External": "FailedGetExternalMetric"}.get(str(kind), "InvalidMetricSourceType")
            msg = (f"unable to get metric {metric_name}: no custom or external metrics API is "
                   f"served" if field else f"unknown metric source type {kind!r}")
            self.event(WARNING, reason, msg)
            raise _MetricFailure(reason, msg)
        container_kind = kind == "ContainerResource"
        field = "containerResource" if container_kind else "resource"
        src = spec.get(field) or {}
        resource, container = str(src.get("name") or ""), str(src.get("container") or "")
        target = src.get("target") or {}
        reason = "FailedGetContainerResourceMetric" if container_kind else \
            "FailedGetResourceMetric"
        label = f"{resource} container resource" if container_kind else f"{resource} resource"
        what = "usage" if target.get("averageValue") is not None else "utilization"
        try:
            metrics = hpa_replicas.pod_metrics(await self._fetch(resource, selector), resource,
                                               container)
            timing = {"tolerance": self.ctrl.tolerance}
            if target.get("averageValue") is not None:
                p = hpa_replicas.raw_resource_replicas(
                    current, quantity.millis(target["averageValue"]), resource, pods, metrics,
                    self.now, **timing)
                value: dict[str, Any] = {"averageValue": hpa_replicas.milli_quantity(p.raw)}
                name = label
            elif target.get("averageUtilization") is None:
                raise MetricError("invalid resource metric source: neither an average "
                                  "utilization target nor an average value (usage) target was "
                                  "set")
            else:
                p = hpa_replicas.resource_replicas(
                    current, int(target["averageUtilization"]), resource, pods, metrics,
                    self.now, container=container, **timing)
                value = {"averageUtilization": p.utilization,
                         "averageValue": hpa_replicas.milli_quantity(p.raw)}
                name = f"{label} utilization (percentage of request)"
        except (MetricError, ValueError) as exc:
            msg = f"failed to get {resource} {what}: {exc}"
            self.event(WARNING, reason, msg)
            raise _MetricFailure(reason, msg) from None
        body: dict[str, Any] = {"name": resource, "current": value}
        if container_kind:
            body = {"name": resource, "container": container, "current": value}
        return p.replicas, name, {"type": kind, field: body}

    async def _fetch(self, resource: str, selector: str) -> list[dict[str, Any]]:
        """The pods' metrics, once per reconcile."""
        if "" not in self._metrics:
            try:
                self._metrics[""] = await self.ctrl.pod_metrics(self.namespace, selector)
            except errors.ApiError as exc:
                raise MetricError(f"unable to get metrics for resource {resource}: unable to "
                                  f"fetch metrics from resource metrics API: {exc}") from None
        items = self._metrics[""]
        if not items:
            raise MetricError(f"unable to get metrics for resource {resource}: no metrics "
                              "returned from resource metrics API")
        return items


__all__ = ["HorizontalPodAutoscalerController"]
