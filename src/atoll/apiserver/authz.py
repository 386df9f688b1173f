"""Authorization of every request, impersonation, and the access review APIs.

Runs after authentication: impersonation headers (``kubectl --as``) are checked
and applied first, then the request's attributes go to RBAC.  A denial is a 403
``Status`` naming the user, verb and resource, the way kube-apiserver words it,
so clients and people read the same thing.  The review APIs
(``kubectl auth can-i``, SubjectAccessReview) ask the very same authorizer.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from aiohttp import web

from atoll.api import errors
from atoll.apiserver import attributes
from atoll.apiserver.attributes import Attributes
from atoll.apiserver.authn import UserInfo, with_authenticated
from atoll.apiserver.rbac import Authorizer, Decision

IMPERSONATE_USER = "Impersonate-User"
IMPERSONATE_GROUP = "Impersonate-Group"
IMPERSONATE_UID = "Impersonate-Uid"
IMPERSONATE_EXTRA = "Impersonate-Extra-"


def forbidden(a: Attributes, reason: str = "") -> errors.Forbidden:
    suffix = f": {reason}" if reason else ""
    if not a.resource_request:
        return errors.Forbidden(f"forbidden: {a.describe()}{suffix}")
    what = a.resource + (f".{a.api_group}" if a.api_group else "")
    subject = f'{what} "{a.name}"' if a.name else what
    return errors.Forbidden(f"{subject} is forbidden: {a.describe()}{suffix}", name=a.name,
                            group=a.api_group, kind=a.resource)


def decide(authorizer: Authorizer, a: Attributes, query: Any = None) -> Decision:
    decision = authorizer.authorize(a)
    if decision.allowed:
        return decision
    if query is not None and a.verb in ("list", "watch") and not a.name:
        # a list narrowed to one name may use a resourceNames rule, as upstream
        name = attributes.field_selector_name(query)
        if name:
            return authorizer.authorize(_with(a, name=name))
    return decision


def _with(a: Attributes, **changes: Any) -> Attributes:
    fields = {f: getattr(a, f) for f in Attributes.__slots__}
    fields.update(changes)
    return Attributes(**fields)


def impersonate(authorizer: Authorizer, request: web.Request, user: UserInfo) -> UserInfo:
    """Apply ``Impersonate-*`` headers, each checked with the ``impersonate`` verb."""
    headers = request.headers
    name = headers.get(IMPERSONATE_USER, "")
    groups = headers.getall(IMPERSONATE_GROUP, [])
    uid = headers.get(IMPERSONATE_UID, "")
    extra: dict[str, list[str]] = {}
    for key in headers:
        if key.lower().startswith(IMPERSONATE_EXTRA.lower()):
            extra.setdefault(key[len(IMPERSONATE_EXTRA):].lower(), []).extend(headers.getall(key))
    if not name:
        if groups or uid or extra:
            raise errors.BadRequest("impersonating groups, a uid or extra fields requires "
                                    "impersonating a user (Impersonate-User)")
        return user

    def check(resource: str, target: str, group: str = "", namespace: str = "") -> None:
        a = Attributes(user, "impersonate", True, api_group=group, resource=resource,
                       name=target, namespace=namespace, path=request.path)
        if not authorizer.authorize(a).allowed:
            raise forbidden(a)

    if name.startswith("system:serviceaccount:") and name.count(":") == 3:
        _, _, sa_ns, sa_name = name.split(":")
        check("serviceaccounts", sa_name, namespace=sa_ns)
        default_groups = ["system:serviceaccounts", f"system:serviceaccounts:{sa_ns}"]
    else:
        check("users", name)
        default_groups = []
    for g in groups:
        check("groups", g)
    if uid:
        check("uids", uid, group="authentication.k8s.io")
    for key, values in extra.items():
        for v in values:
            check(f"userextras/{key}", v, group="authentication.k8s.io")
    all_groups = tuple(dict.fromkeys([*default_groups, *groups]))
    return with_authenticated(UserInfo(name, uid, all_groups, extra))


def middleware(authorizer: Authorizer):
    @web.middleware
    async def authorize(request: web.Request,
                        handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                        ) -> web.StreamResponse:
        user: UserInfo = request["user"]
        if IMPERSONATE_USER in request.headers or IMPERSONATE_GROUP in request.headers:
            user = impersonate(authorizer, request, user)
            request["impersonated_by"] = request["user"]
            request["user"] = user
            request["user_name"] = user.name
        a = attributes.from_request(user, request.method, request.path, request.query)
        if a.resource_request and a.subresource in attributes.STREAM_SUBRESOURCES:
            a = _with(a, verb="create")  # running something in a pod is a create, on any transport
        request["attributes"] = a
        decision = decide(authorizer, a, request.query)
        if not decision.allowed:
            raise forbidden(a, decision.reason)
        return await handler(request)

    return authorize


class Reviewer:
    """SelfSubjectAccessReview, SubjectAccessReview, LocalSubjectAccessReview,
    SelfSubjectRulesReview and SelfSubjectReview, answered by the live authorizer."""

    def __init__(self, authorizer: Authorizer) -> None:
        self.authorizer = authorizer

    async def __call__(self, request: web.Request, rt: Any, path: Any,
                       body: dict[str, Any]) -> dict[str, Any]:
        user: UserInfo = request["user"]
        body = dict(body)
        body.setdefault("apiVersion", rt.group_version)
        body.setdefault("kind", rt.kind)
        spec = body.get("spec")
        if spec is None:
            spec = {}
        if not isinstance(spec, dict):
            raise errors.invalid(rt.kind, "", [errors.Cause(
                "FieldValueTypeInvalid", "Invalid value: must be an object", "spec")], rt.group)
        if rt.kind == "SelfSubjectReview":
            body["status"] = {"userInfo": user.to_dict()}
            return body
        if rt.kind == "SelfSubjectRulesReview":
            namespace = spec.get("namespace") or ""
            rules = self.authorizer.rules_for(user, namespace if isinstance(namespace, str) else "")
            body["status"] = {
                "resourceRules": [{k: v for k, v in r.to_dict().items()}
                                  for r in rules if not r.non_resource_urls],
                "nonResourceRules": [{"verbs": list(r.verbs),
                                      "nonResourceURLs": list(r.non_resource_urls)}
                                     for r in rules if r.non_resource_urls],
                "incomplete": False}
            return body
        if rt.kind in ("SubjectAccessReview", "LocalSubjectAccessReview"):
            subject = self._subject(rt, spec)
        else:
            subject = user
        a = self._attributes(rt, path, spec, subject)
        decision = self.authorizer.authorize(a)
        body["status"] = {"allowed": decision.allowed, "reason": decision.reason}
        if not decision.allowed:
            body["status"]["denied"] = False  # RBAC has no deny: "no opinion"
        return body

    @staticmethod
    def _subject(rt: Any, spec: dict[str, Any]) -> UserInfo:
        name = spec.get("user") or ""
        groups = spec.get("groups") or []
        if not isinstance(name, str) or not isinstance(groups, list) or \
                not all(isinstance(g, str) for g in groups):
            raise errors.invalid(rt.kind, "", [errors.Cause(
                "FieldValueInvalid", "Invalid value: user must be a string and groups a list of "
                "strings", "spec.user")], rt.group)
        if not name and not groups:
            raise errors.invalid(rt.kind, "", [errors.Cause(
                "FieldValueRequired", "Required value: at least one of user or group must be "
                "specified", "spec.user")], rt.group)
        extra = spec.get("extra") if isinstance(spec.get("extra"), dict) else {}
        return UserInfo(name, str(spec.get("uid") or ""), tuple(groups), extra)

    @staticmethod
    def _attributes(rt: Any, path: Any, spec: dict[str, Any], user: UserInfo) -> Attributes:
        ra, nra = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
        if bool(ra) == bool(nra) or not isinstance(ra or nra, dict):
            raise errors.invalid(rt.kind, "", [errors.Cause(
                "FieldValueRequired", "Required value: exactly one of nonResourceAttributes or "
                "resourceAttributes must be specified", "spec.resourceAttributes")], rt.group)
        if nra:
            return Attributes(user, str(nra.get("verb") or ""), False, path=str(nra.get("path") or ""))
        namespace = str(ra.get("namespace") or "")
        if rt.kind == "LocalSubjectAccessReview":
            if namespace and namespace != path.namespace:
                raise errors.invalid(rt.kind, "", [errors.Cause(
                    "FieldValueInvalid", "Invalid value: spec.resourceAttributes.namespace must "
                    "match metadata.namespace", "spec.resourceAttributes.namespace")], rt.group)
            namespace = path.namespace
        return Attributes(user, str(ra.get("verb") or ""), True, str(ra.get("group") or ""),
                          str(ra.get("version") or ""), str(ra.get("resource") or ""),
                          str(ra.get("subresource") or ""), namespace, str(ra.get("name") or ""))
