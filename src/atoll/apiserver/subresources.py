"""Subresources that are one-off actions rather than views of the object: ``pods/binding``,
``pods/eviction`` and ``serviceaccounts/token``.  ``handlers`` routes them here.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from atoll.api import errors
from atoll.api.kinds import ResourceType
from atoll.api.resources.core_v1_pods import PODS
from atoll.api.strategy import ObjectReader, WriteOptions
from atoll.api.timestamps import rfc3339
from atoll.apiserver import http
from atoll.apiserver.objects import ObjectService
from atoll.apiserver.routing import ResourcePath


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
    # eviction: delete with the eviction's options (PodDisruptionBudgets: not yet)
    delete_opts = eviction_options(body, path)
    await svc.delete(rt, path.namespace, path.name,
                          grace_seconds=delete_opts.get("gracePeriodSeconds"),
                          opts=WriteOptions(dry_run=bool(delete_opts.get("dryRun"))))
    return http.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {},
                               "status": "Success", "code": 201}, status=201)


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
