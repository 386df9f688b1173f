"""Dynamic admission: the webhooks that Mutating- and ValidatingWebhookConfigurations declare.

For a write the built-in admission has passed, the matching mutating webhooks are called one
after another (configurations sorted by name, webhooks in declared order, as upstream), each
answer's JSONPatch applied to the object; hooks asking ``reinvocationPolicy: IfNeeded`` are
called once more when a later hook changed the object.  The validating webhooks are then called
in parallel.  A denial becomes the client's error (``admission webhook "x" denied the
request: ...`` with the webhook's code); a webhook that cannot be called fails the request
(``failurePolicy: Fail``) or is skipped (``Ignore``).  Configurations are read from the watch
cache, so a write pays nothing when none match, and the configuration kinds themselves are
never sent to a webhook (a broken webhook must not lock its own configuration).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from atoll.api import errors, patch as patching, resources
from atoll.api.labelselector import label_selector_from_dict
from atoll.api.resources.admissionregistration_v1 import (GROUP, MUTATINGWEBHOOKCONFIGURATIONS,
                                                         VALIDATINGWEBHOOKCONFIGURATIONS)
from atoll.api.resources.core_v1 import NAMESPACES
from atoll.api.resourcetype import ResourceType
from atoll.api.strategy import ObjectReader, WriteOptions
from atoll.apiserver import audit
from atoll.apiserver.admission.webhook_client import WebhookCallError, WebhookClient

log = logging.getLogger(__name__)

#: resources never sent to webhooks (upstream's IsExemptAdmissionConfigurationResource)
EXEMPT = frozenset({(GROUP, r) for r in (
    "validatingwebhookconfigurations", "mutatingwebhookconfigurations",
    "validatingadmissionpolicies", "validatingadmissionpolicybindings",
    "mutatingadmissionpolicies", "mutatingadmissionpolicybindings")})
REVIEW_VERSIONS = ("v1", "v1beta1")
#: who the server's own writes are, as upstream's loopback client
SERVER_USER = {"username": "system:apiserver", "groups": ["system:masters",
                                                          "system:authenticated"]}


@dataclass
class Attributes:
    """One write as admission sees it (upstream's admission.Attributes)."""

    operation: str  # CREATE | UPDATE | DELETE
    rt: ResourceType
    namespace: str
    name: str
    subresource: str
    obj: dict[str, Any] | None
    old: dict[str, Any] | None
    opts: WriteOptions
    options: dict[str, Any] = field(default_factory=dict)


class WebhookDenied(errors.ApiError):
    """A webhook said no: its Status, with upstream's ``denied the request`` prefix."""

    def to_status(self) -> dict[str, Any]:
        status = super().to_status()
        if not status.get("reason"):
            status.pop("reason", None)
        return status


def denied(name: str, result: Any) -> WebhookDenied:
    """upstream's webhookerrors.ToStatusErr."""
    result = result if isinstance(result, dict) else {}
    prefix = f'admission webhook "{name}" denied the request'
    message, reason = result.get("message"), result.get("reason")
    if isinstance(message, str) and message:
        text = f"{prefix}: {message}"
    elif isinstance(reason, str) and reason:
        text = f"{prefix}: {reason}"
    else:
        text = f"{prefix} without explanation"
    code = result.get("code")
    details = result.get("details") if isinstance(result.get("details"), dict) else {}
    causes = [errors.Cause(str(c.get("reason") or ""), str(c.get("message") or ""),
                           str(c.get("field") or ""))
              for c in details.get("causes") or [] if isinstance(c, dict)]
    err = WebhookDenied(text, name=str(details.get("name") or ""),
                        group=str(details.get("group") or ""),
                        kind=str(details.get("kind") or ""), causes=causes)
    err.code = code if isinstance(code, int) and not isinstance(code, bool) and 400 <= code < 600 \
        else 400
    err.reason = reason if isinstance(reason, str) else ""
    return err


def calling_failed(name: str, detail: str) -> errors.InternalError:
    message = f'failed calling webhook "{name}": {detail}'
    return errors.InternalError(f"Internal error occurred: {message}",
                                causes=[errors.Cause("", message)])


# -- matching ---------------------------------------------------------------------------------
def _rule_matches(rule: dict[str, Any], a: Attributes, rt: ResourceType) -> bool:
    """upstream's rules.Matcher: operation, group, version, resource/subresource, scope."""
    ops = rule.get("operations") or []
    if "*" not in ops and a.operation not in ops:
        return False
    groups, versions = rule.get("apiGroups") or [], rule.get("apiVersions") or []
    if "*" not in groups and rt.group not in groups:
        return False
    if "*" not in versions and rt.version not in versions:
        return False
    scope = rule.get("scope") or "*"
    namespaced = rt.namespaced
    if scope == "Cluster" and namespaced or scope == "Namespaced" and not namespaced:
        return False
    for r in rule.get("resources") or []:
        res, _, sub = str(r).partition("/")
        if res not in ("*", rt.plural):
            continue
        if sub == "*" or sub == a.subresource:
            return True
    return False


class Webhooks:
    def __init__(self, client: WebhookClient, registry: Any) -> None:
        self.client = client
        self.registry = registry

    # -- which hooks -------------------------------------------------------------------------
    @staticmethod
    def _hooks(svc: ObjectReader, rt: ResourceType) -> list[dict[str, Any]]:
        out = []
        for cached in svc.read_list(rt):  # key order: configurations by name, as upstream
            out.extend(h for h in cached.obj.get("webhooks") or [] if isinstance(h, dict))
        return out

    def _match_type(self, hook: dict[str, Any], a: Attributes) -> ResourceType | None:
        """The resource type the hook matched the request as: the request's own, or (with
        ``matchPolicy: Equivalent``) another served version of the same resource."""
        rules = [r for r in hook.get("rules") or [] if isinstance(r, dict)]
        if any(_rule_matches(r, a, a.rt) for r in rules):
            return a.rt
        if hook.get("matchPolicy", "Equivalent") != "Equivalent" or self.registry is None:
            return None
        for version in self.registry.groups().get(a.rt.group, []):
            other = self.registry.lookup(a.rt.group, version, a.rt.plural)
            if other is not None and other is not a.rt and \
                    any(_rule_matches(r, a, other) for r in rules):
                return other
        return None

    @staticmethod
    def _selected(svc: ObjectReader, hook: dict[str, Any], a: Attributes) -> bool:
        objects = [o for o in (a.obj, a.old) if isinstance(o, dict)]
        obj_sel = label_selector_from_dict(hook.get("objectSelector") or {})
        if not obj_sel.empty and not any(
                obj_sel.matches((o.get("metadata") or {}).get("labels") or {}) for o in objects):
            return False
        ns_sel = label_selector_from_dict(hook.get("namespaceSelector") or {})
        if ns_sel.empty:
            return True
        if a.rt.kind_key == "/Namespace":
            labels = next(((o.get("metadata") or {}).get("labels") or {} for o in objects), {})
        elif not a.rt.namespaced:
            return True  # cluster-scoped objects are not in a namespace to select
        else:
            ns = svc.read(NAMESPACES, "", a.namespace)
            labels = (ns.obj["metadata"].get("labels") or {}) if ns is not None else {}
        return ns_sel.matches(labels)

    def _matching(self, svc: ObjectReader, config_rt: ResourceType,
                  a: Attributes) -> list[tuple[dict[str, Any], ResourceType]]:
        if (a.rt.group, a.rt.plural) in EXEMPT:
            return []
        out = []
        for hook in self._hooks(svc, config_rt):
            matched = self._match_type(hook, a)
            if matched is not None and self._selected(svc, hook, a):
                out.append((hook, matched))
        return out

    # -- the review --------------------------------------------------------------------------
    def _review(self, hook: dict[str, Any], a: Attributes, matched: ResourceType,
                obj: dict[str, Any] | None) -> tuple[dict[str, Any], str]:
        versions = [v for v in hook.get("admissionReviewVersions") or [] if v in REVIEW_VERSIONS]
        if not versions:
            raise WebhookCallError("webhook does not accept v1 or v1beta1 AdmissionReview")
        uid = str(uuid.uuid4())
        user = a.opts.user_info.to_dict() if a.opts.user_info is not None else SERVER_USER

        def as_matched(o: dict[str, Any] | None) -> dict[str, Any] | None:
            if o is None or matched is a.rt:
                return o
            return resources.convert(matched.kind_key, o, matched.group_version)

        request: dict[str, Any] = {
            "uid": uid,
            "kind": {"group": matched.group, "version": matched.version, "kind": matched.kind},
            "resource": {"group": matched.group, "version": matched.version,
                         "resource": matched.plural},
            "requestKind": {"group": a.rt.group, "version": a.rt.version, "kind": a.rt.kind},
            "requestResource": {"group": a.rt.group, "version": a.rt.version,
                                "resource": a.rt.plural},
            "name": a.name, "operation": a.operation, "userInfo": user,
            "object": as_matched(obj), "oldObject": as_matched(a.old),
            "dryRun": bool(a.opts.dry_run), "options": a.options or None,
        }
        if a.namespace:
            request["namespace"] = a.namespace
        if a.subresource:
            request["subResource"] = a.subresource
            request["requestSubResource"] = a.subresource
        return {"apiVersion": f"admission.k8s.io/{versions[0]}", "kind": "AdmissionReview",
                "request": request}, uid

    async def _call(self, svc: ObjectReader, hook: dict[str, Any], a: Attributes,
                    matched: ResourceType, obj: dict[str, Any] | None) -> dict[str, Any] | None:
        """One call; the review's ``response``, or None when the hook failed open."""
        name = str(hook.get("name") or "")
        if a.opts.dry_run and hook.get("sideEffects") not in ("None", "NoneOnDryRun"):
            raise errors.BadRequest(f'admission webhook "{name}" does not support dry run')
        timeout = hook.get("timeoutSeconds") or 10
        try:
            review, uid = self._review(hook, a, matched, obj)
            answer = await self.client.call(hook.get("clientConfig") or {}, review, int(timeout))
            response = answer.get("response")
            if answer.get("apiVersion") != review["apiVersion"] or \
                    answer.get("kind") != "AdmissionReview":
                raise WebhookCallError(f"expected webhook response of {review['apiVersion']}, "
                                       f"Kind=AdmissionReview, got {answer.get('apiVersion')}, "
                                       f"Kind={answer.get('kind')}")
            if not isinstance(response, dict):
                raise WebhookCallError("webhook response was absent")
            if response.get("uid") != uid:
                raise WebhookCallError(f'expected response.uid="{uid}", got '
                                       f'"{response.get("uid")}"')
        except WebhookCallError as e:
            if hook.get("failurePolicy", "Fail") == "Ignore":
                log.warning('failed calling webhook "%s" (ignored): %s', name, e)
                return None
            raise calling_failed(name, str(e)) from None
        for warning in response.get("warnings") or []:
            if isinstance(warning, str) and warning:
                a.opts.warnings.append(warning)
        for key, value in (response.get("auditAnnotations") or {}).items():
            if isinstance(key, str) and isinstance(value, str):
                audit.annotate(f"{name}/{key}", value)
        if response.get("allowed") is not True:
            raise denied(name, response.get("status"))
        return response

    # -- the two phases ----------------------------------------------------------------------
    async def mutate(self, svc: ObjectReader, a: Attributes) -> tuple[dict[str, Any] | None, bool]:
        """Call the matching mutating webhooks in order; the object and whether it changed."""
        hooks = self._matching(svc, MUTATINGWEBHOOKCONFIGURATIONS, a)
        if not hooks:
            return a.obj, False
        obj, changed = a.obj, False
        last_change = -1
        for i, (hook, matched) in enumerate(hooks):
            new = await self._mutate_one(svc, hook, a, matched, obj)
            if new is not None:
                obj, changed, last_change = new, True, i
        # IfNeeded hooks that ran before a later change see the object once more
        for i, (hook, matched) in enumerate(hooks):
            if i >= last_change:
                break
            if hook.get("reinvocationPolicy") == "IfNeeded":
                new = await self._mutate_one(svc, hook, a, matched, obj)
                if new is not None:
                    obj, changed = new, True
        return obj, changed

    async def _mutate_one(self, svc: ObjectReader, hook: dict[str, Any], a: Attributes,
                          matched: ResourceType, obj: dict[str, Any] | None
                          ) -> dict[str, Any] | None:
        """The object as the hook's patch leaves it; None when the hook changed nothing."""
        response = await self._call(svc, hook, a, matched, obj)
        if response is None or not response.get("patch") or obj is None:
            return None
        name = hook.get("name")
        if response.get("patchType") != "JSONPatch":
            raise errors.InternalError(f'Internal error occurred: admission webhook "{name}" '
                                       f'returned a patch of unsupported type '
                                       f'"{response.get("patchType")}"')
        try:
            ops = orjson.loads(base64.b64decode(str(response["patch"])))
        except (binascii.Error, ValueError, orjson.JSONDecodeError) as e:
            raise errors.InternalError(f'Internal error occurred: admission webhook "{name}" '
                                       f"returned an undecodable patch: {e}") from None
        served = obj
        if matched is not a.rt:
            served = resources.convert(matched.kind_key, obj, matched.group_version)
        try:
            new = patching.json_patch(served, ops)
        except errors.ApiError as e:
            raise errors.InternalError(f'Internal error occurred: admission webhook "{name}" '
                                       f"returned a patch that does not apply: "
                                       f"{e.message}") from None
        if not isinstance(new, dict):
            raise errors.InternalError(f'Internal error occurred: admission webhook "{name}" '
                                       "patched the object into something else")
        if matched is not a.rt:
            new = resources.convert(a.rt.kind_key, new, a.rt.group_version)
        return None if new == obj else new

    async def validate(self, svc: ObjectReader, a: Attributes) -> None:
        """Call the matching validating webhooks in parallel; the first refusal (in order)."""
        hooks = self._matching(svc, VALIDATINGWEBHOOKCONFIGURATIONS, a)
        if not hooks:
            return
        results = await asyncio.gather(*(self._call(svc, hook, a, matched, a.obj)
                                         for hook, matched in hooks), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
