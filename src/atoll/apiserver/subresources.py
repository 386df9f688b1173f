"""Subresources that are one-off actions rather than views of the object: ``pods/binding``,
``pods/eviction`` (which honours PodDisruptionBudgets) and ``serviceaccounts/token``.
``handlers`` routes them here.
"""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import web

from atoll.api import conditions, errors
from atoll.api.kinds import ResourceType
from atoll.api.labelselector import label_selector_from_dict
from atoll.api.resources.core_v1_pods import PODS
from atoll.api.resources.policy_v1 import PODDISRUPTIONBUDGETS
from atoll.api.strategy import ObjectReader, WriteOptions
from atoll.api.timestamps import rfc3339
from atoll.apiserver import http
from atoll.apiserver.objects import ObjectService
from atoll.apiserver.routing import ResourcePath

#: as upstream's MaxDisruptedPodSize: evictions the budget's controller has not yet confirmed
MAX_DISRUPTED_PODS = 2000


async def bind_or_evict(svc: ObjectService, rt: ResourceType, path: ResourcePath,
                        body: dict[str, Any], opts: WriteOptions) -> web.Response:
    """``pods/binding`` (the scheduler's: sets ``nodeName`` once) and ``pods/eviction``."""
    if path.subresource == "binding":
        target = body.get("target") or {}
        node = target.get("name") if isinstance(target, dict) else None
        if not node or not isinstance(node, str):
            raise errors.invalid("Binding", path.name, [errors.required("target.name")])

        def bind(current: dict[str, Any]) -> dict[str, Any]:
            spec = current.setdefault("spec", {})
            if spec.get("nodeName"):
                raise errors.Conflict(f'pod {path.name} is already assigned to node '
                                      f'"{spec["nodeName"]}"', name=path.name, kind="pods")
            if current["metadata"].get("deletionTimestamp"):
                raise errors.Conflict(f"pod {path.name} is being deleted, cannot be assigned "
                                      "to a host", name=path.name, kind="pods")
            spec["nodeName"] = node
            status = current.setdefault("status", {})
            conds = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
            conds.append({"type": "PodScheduled", "status": "True",
                          "lastTransitionTime": rfc3339(), "lastProbeTime": None})
            status["conditions"] = conds
            return current
        # binding writes spec.nodeName (not allowed through ordinary updates) and status
        await svc.guaranteed_update(rt, path.namespace, path.name, bind, opts,
                                         subresource="binding")
        return http.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {},
                                   "status": "Success", "code": 201}, status=201)
    return await evict(svc, rt, path, body)


async def evict(svc: ObjectService, rt: ResourceType, path: ResourcePath,
                body: dict[str, Any]) -> web.Response:
    """``pods/eviction``: a delete that first takes one disruption off the pod's budget (as
    upstream's eviction REST: 429 when the budget allows none, or has not been computed for
    its current spec yet)."""
    delete_opts = eviction_options(body, path)
    dry_run = bool(delete_opts.get("dryRun"))
    pod = svc.get(rt, path.namespace, path.name).obj
    if not _can_ignore_budget(pod):
        budgets = _budgets_of(svc, pod)
        if len(budgets) > 1:
            raise errors.InternalError("This pod has more than one PodDisruptionBudget, which "
                                       "the eviction subresource does not support.")
        if budgets and not _unhealthy_may_go(budgets[0], pod):
            await _take_disruption(svc, budgets[0], pod, dry_run)
    await svc.delete(rt, path.namespace, path.name,
                     grace_seconds=delete_opts.get("gracePeriodSeconds"),
                     opts=WriteOptions(dry_run=dry_run))
    return http.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {},
                               "status": "Success", "code": 201}, status=201)


def _can_ignore_budget(pod: dict[str, Any]) -> bool:
    """Pods that are done, never started, or already going need no budget."""
    phase = (pod.get("status") or {}).get("phase")
    return phase in ("Succeeded", "Failed", "Pending") or \
        bool(pod["metadata"].get("deletionTimestamp"))


def _budgets_of(svc: ObjectService, pod: dict[str, Any]) -> list[dict[str, Any]]:
    labels = pod["metadata"].get("labels") or {}
    out = []
    for cached in svc.read_list(PODDISRUPTIONBUDGETS, pod["metadata"]["namespace"]):
        selector = label_selector_from_dict((cached.obj.get("spec") or {}).get("selector"))
        if selector.matches(labels):
            out.append(cached.obj)
    return out


def _unhealthy_may_go(pdb: dict[str, Any], pod: dict[str, Any]) -> bool:
    """A pod that is not Ready may be evicted without spending the budget: always under
    ``AlwaysAllow``, and under the default ``IfHealthyBudget`` while the budget is met."""
    if conditions.is_true((pod.get("status") or {}).get("conditions"), "Ready"):
        return False
    policy = (pdb.get("spec") or {}).get("unhealthyPodEvictionPolicy") or "IfHealthyBudget"
    if policy == "AlwaysAllow":
        return True
    status = pdb.get("status") or {}
    desired = status.get("desiredHealthy") or 0
    return desired > 0 and (status.get("currentHealthy") or 0) >= desired


def _budget_violation(message: str) -> errors.TooManyRequests:
    return errors.TooManyRequests(
        "Cannot evict pod as it would violate the pod's disruption budget.",
        causes=[errors.Cause("DisruptionBudget", message)])


async def _take_disruption(svc: ObjectService, pdb: dict[str, Any], pod: dict[str, Any],
                           dry_run: bool) -> None:
    """Take one disruption off the budget and note the pod in ``disruptedPods``, in one
    compare-and-swap with the checks (two evictions racing for the last disruption: one
    wins, the other is refused)."""
    name = pdb["metadata"]["name"]

    def spend(current: dict[str, Any]) -> dict[str, Any]:
        status = current.setdefault("status", {})
        if (status.get("observedGeneration") or 0) < (current["metadata"].get("generation") or 1):
            raise _budget_violation(f"The disruption budget {name} is still being processed "
                                    "by the server.")
        allowed = status.get("disruptionsAllowed") or 0
        if allowed < 0:
            raise errors.Forbidden("pdb disruptions allowed is negative")
        if allowed == 0:
            raise _budget_violation(
                f"The disruption budget {name} needs {status.get('desiredHealthy', 0)} healthy "
                f"pods and has {status.get('currentHealthy', 0)} currently")
        if len(status.get("disruptedPods") or {}) > MAX_DISRUPTED_PODS:
            raise errors.Forbidden("DisruptedPods map too big - too many evictions not "
                                   "confirmed by PDB controller")
        status["disruptionsAllowed"] = allowed - 1
        status["disruptedPods"] = {**(status.get("disruptedPods") or {}),
                                   pod["metadata"]["name"]: rfc3339()}
        return current

    if dry_run:
        spend(copy.deepcopy(pdb))
        return
    await svc.guaranteed_update(PODDISRUPTIONBUDGETS, pdb["metadata"]["namespace"], name, spend,
                                WriteOptions(), subresource="status")


def token_request(svc: ObjectReader, issuer: Any, sa: dict[str, Any], path: ResourcePath,
                  body: dict[str, Any], node: str | None) -> web.Response:
    """``serviceaccounts/token``: a TokenRequest answered by ``issuer``; ``node`` is the host
    asking (None for anyone else), which may only ask for tokens bound to pods it runs."""
    if node is not None:  # a host asks only for tokens of pods it runs
        ref = ((body.get("spec") or {}).get("boundObjectRef") or {}) \
            if isinstance(body.get("spec"), dict) else {}
        pod = svc.read(PODS, path.namespace, str(ref.get("name", ""))) \
            if ref.get("kind") == "Pod" else None
        if pod is None or (pod.obj.get("spec") or {}).get("nodeName") != node:
            raise errors.Forbidden(f'serviceaccounts "{path.name}" is forbidden: node '
                                   f'"{node}" may only request tokens bound to pods it runs',
                                   name=path.name, kind="serviceaccounts")
    answer, warnings = issuer.token_request(sa, body)
    return http.json_response(answer, status=201, headers=http.warning_headers(warnings))


def eviction_options(body: dict[str, Any], path: ResourcePath) -> dict[str, Any]:
    """The deleteOptions of a body that must be an Eviction of this pod (400 otherwise)."""
    kind, api = body.get("kind"), body.get("apiVersion")
    if kind not in (None, "", "Eviction"):
        raise errors.BadRequest(f"not a Eviction object: {str(kind)[:64]}")
    if api not in (None, "", "policy/v1", "policy/v1beta1"):
        raise errors.BadRequest(f'no kind "Eviction" is registered for version "{str(api)[:64]}"')
    meta = body.get("metadata")
    if not isinstance(meta, dict) or meta.get("name") != path.name:
        raise errors.BadRequest("name in URL does not match name in Eviction object")
    if meta.get("namespace") not in (None, "", path.namespace):
        raise errors.BadRequest("the namespace of the provided object does not match the "
                                "namespace sent on the request")
    opts = body.get("deleteOptions")
    if opts is None:
        return {}
    if not isinstance(opts, dict):
        raise errors.BadRequest("deleteOptions must be an object")
    grace = opts.get("gracePeriodSeconds")
    if grace is not None and (not isinstance(grace, int) or isinstance(grace, bool)):
        raise errors.BadRequest("deleteOptions.gracePeriodSeconds must be an integer")
    dry = opts.get("dryRun")
    if dry is not None and (not isinstance(dry, list) or any(d != "All" for d in dry)):
        raise errors.BadRequest('deleteOptions.dryRun: supported values: "All"')
    return opts
