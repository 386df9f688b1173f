"""``tenancy.atoll.dev/v1`` ``projects``: the namespaces a user works in.

A user who may not list namespaces still needs to find the ones they were given,
as OpenShift's project list answers: every namespace where a RoleBinding names
the user (directly, through one of their groups, or as their ServiceAccount),
or all of them for whoever may list namespaces cluster-wide.  The answer is
computed from the RBAC authorizer's own rule resolver and watch cache, so it
can never show more than RBAC grants; each Project is the Namespace's
metadata, spec and status under another kind.  Read-only: get and list.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from atoll.api import errors, printers, selectors
from atoll.api.kinds import ResourceType
from atoll.api.resources import rbac_v1
from atoll.apiserver import http
from atoll.apiserver.attributes import Attributes
from atoll.apiserver.authn import UserInfo
from atoll.apiserver.rbac import Authorizer, subject_matches
from atoll.apiserver.registry import Registry
from atoll.apiserver.routing import ResourcePath
from atoll.storage.cacher import Cacher

GROUP = "tenancy.atoll.dev"
GROUP_VERSION = f"{GROUP}/v1"


class ProjectsAPI:
    def __init__(self, cacher: Cacher, registry: Registry, authorizer: Authorizer) -> None:
        self.cacher = cacher
        self.authorizer = authorizer
        ns_type = registry.lookup("", "v1", "namespaces")
        assert ns_type is not None
        self.namespaces = ns_type
        #: (user, groups) -> (RBAC generation, namespaces bound): bindings change rarely
        self._memo: dict[tuple[Any, ...], tuple[int, frozenset[str]]] = {}

    async def handle(self, request: web.Request, rt: ResourceType,
                     path: ResourcePath) -> web.Response:
        if request.method not in ("GET", "HEAD") or path.subresource:
            raise errors.MethodNotAllowed("the server does not allow this method on the "
                                          "requested resource")
        if http.query_bool(request.query, "watch"):
            raise errors.MethodNotAllowed("projects cannot be watched: list them again, or "
                                          "watch namespaces if you may")
        user: UserInfo = request["user"]
        if path.name:
            return http.json_response(self._project(self._get(user, path.name)))
        selector = selectors.parse_label_selector(request.query.get("labelSelector", ""))
        fields = selectors.parse_field_selector(request.query.get("fieldSelector", ""))
        known = selectors.supported_fields("/Namespace")
        unknown = fields.fields - known
        if unknown:
            raise errors.BadRequest(f'"{sorted(unknown)[0]}" is not a known field selector: '
                                    f'only {", ".join(sorted(known))}')
        objs = [ns for ns in self.visible(user)
                if selector.matches(ns["metadata"].get("labels") or {})
                and fields.matches(selectors.field_set("/Namespace", ns))]
        revision = str(self.cacher.revision)
        if http.wants_table(request):
            include = request.query.get("includeObject", "Metadata")
            if include not in ("Metadata", "Object", "None"):
                raise errors.BadRequest(f'includeObject: unsupported value "{include}"')
            table = printers.table("/Namespace", [self._project(o) for o in objs], time.time(),
                                   include_object=include, resource_version=revision)
            return http.json_response(table)
        return http.json_response({"kind": "ProjectList", "apiVersion": GROUP_VERSION,
                                   "metadata": {"resourceVersion": revision},
                                   "items": [self._project(o) for o in objs]})

    # -- what a user sees ------------------------------------------------------------------
    def visible(self, user: UserInfo) -> list[dict[str, Any]]:
        """The Namespace objects ``user`` works in, by name."""
        everything = [c.obj for c in self.cacher.list(self.namespaces.prefix())]
        if self._lists_namespaces(user):
            return everything
        bound = self.bound_namespaces(user)
        return [ns for ns in everything if ns["metadata"]["name"] in bound]

    def bound_namespaces(self, user: UserInfo) -> frozenset[str]:
        """Namespaces where some RoleBinding names ``user``, from the authorizer's data."""
        resolver = self.authorizer.resolver
        key = (user.name, user.groups)
        hit = self._memo.get(key)
        if hit is not None and hit[0] == resolver.generation:
            return hit[1]
        found = set()
        for cached in resolver.cacher.list(rbac_v1.ROLEBINDINGS.prefix()):
            binding = cached.obj
            namespace = binding["metadata"].get("namespace") or ""
            if namespace in found:
                continue
            if any(subject_matches(s, user, namespace) for s in binding.get("subjects") or []):
                found.add(namespace)
        result = frozenset(found)
        if len(self._memo) > 10000:
            self._memo.clear()
        self._memo[key] = (resolver.generation, result)
        return result

    def _lists_namespaces(self, user: UserInfo) -> bool:
        return self.authorizer.authorize(Attributes(user, "list", True, resource="namespaces",
                                                    path="/api/v1/namespaces")).allowed

    def _get(self, user: UserInfo, name: str) -> dict[str, Any]:
        cached = self.cacher.get(self.namespaces.key("", name))
        if self._lists_namespaces(user):
            if cached is None:
                raise errors.NotFound(f'projects.{GROUP} "{name}" not found', name=name,
                                      group=GROUP, kind="projects")
            return cached.obj
        if cached is None or name not in self.bound_namespaces(user):
            # the same answer whether or not it exists: no probing for others' namespaces
            raise errors.Forbidden(f'projects.{GROUP} "{name}" is forbidden: User '
                                   f'"{user.name}" cannot get project "{name}"',
                                   name=name, group=GROUP, kind="projects")
        return cached.obj

    @staticmethod
    def _project(ns: dict[str, Any]) -> dict[str, Any]:
        meta = {k: v for k, v in (ns.get("metadata") or {}).items() if k != "managedFields"}
        out: dict[str, Any] = {"kind": "Project", "apiVersion": GROUP_VERSION, "metadata": meta}
        for part in ("spec", "status"):
            if part in ns:
                out[part] = ns[part]
        return out
