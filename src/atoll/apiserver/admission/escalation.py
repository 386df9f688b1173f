"""RBAC escalation prevention, as upstream's role and binding storage enforces it.

Writing a Role or ClusterRole needs either every permission it grants (in its
namespace, or cluster-wide for a ClusterRole) or the ``escalate`` verb on it.
Writing a binding needs either every permission of the role it points to, or
the ``bind`` verb on that role.  So an Edit or Admin user can hand out what
they have, and nothing more.
"""

from __future__ import annotations

from typing import Any

from atoll.api import errors
from atoll.api.resources.rbac_v1 import CLUSTERROLES, ROLES
from atoll.api.resourcetype import ResourceType
from atoll.api.strategy import ObjectReader, WriteOptions
from atoll.apiserver import rbac
from atoll.apiserver.admission import BasePlugin
from atoll.apiserver.attributes import Attributes


ROLE_KINDS = {"Role": "roles", "ClusterRole": "clusterroles"}
BINDING_KINDS = {"RoleBinding", "ClusterRoleBinding"}


class EscalationCheck(BasePlugin):
    def __init__(self, authorizer: rbac.Authorizer) -> None:
        self.authorizer = authorizer

    def validate_create(self, svc: ObjectReader, rt: ResourceType, obj: dict[str, Any],
                        opts: WriteOptions) -> None:
        self._check(svc, rt, obj, opts)

    def validate_update(self, svc: ObjectReader, rt: ResourceType, old: dict[str, Any],
                        new: dict[str, Any], opts: WriteOptions, subresource: str) -> None:
        self._check(svc, rt, new, opts)

    def _check(self, svc: ObjectReader, rt: ResourceType, obj: dict[str, Any],
               opts: WriteOptions) -> None:
        user = opts.user_info
        if user is None or rt.group != rbac.RBAC_GROUP or \
                rbac.SUPERUSER_GROUP in user.groups:
            return
        namespace = obj["metadata"].get("namespace") or ""
        name = obj["metadata"].get("name") or ""
        if rt.kind in ROLE_KINDS:
            if self._may(user, "escalate", ROLE_KINDS[rt.kind], name, namespace):
                return
            wanted = rbac.rules_of(obj)
            self._refuse_missing(rt, name, user, namespace, wanted)
        elif rt.kind in BINDING_KINDS:
            ref = obj.get("roleRef") or {}
            kind, ref_name = ref.get("kind"), ref.get("name")
            if kind not in ROLE_KINDS or not isinstance(ref_name, str):
                return  # validation reports a bad roleRef
            if self._may(user, "bind", ROLE_KINDS[kind], ref_name,
                         namespace if kind == "Role" else ""):
                return
            cached = (svc.read(CLUSTERROLES, "", ref_name) if kind == "ClusterRole"
                      else svc.read(ROLES, namespace, ref_name))
            if cached is None:
                raise errors.NotFound(f'{ROLE_KINDS[kind]}.rbac.authorization.k8s.io '
                                      f'"{ref_name}" not found', name=ref_name,
                                      group=rbac.RBAC_GROUP, kind=ROLE_KINDS[kind])
            self._refuse_missing(rt, name, user, namespace, rbac.rules_of(cached.obj))

    def _may(self, user: Any, verb: str, resource: str, name: str, namespace: str) -> bool:
        return self.authorizer.authorize(Attributes(
            user, verb, True, rbac.RBAC_GROUP, "v1", resource, "", namespace, name)).allowed

    def _refuse_missing(self, rt: ResourceType, name: str, user: Any, namespace: str,
                        wanted: list[rbac.Rule]) -> None:
        missing = rbac.covers(self.authorizer.rules_for(user, namespace), wanted)
        if not missing:
            return
        shown = "; ".join(_describe(r) for r in missing[:8])
        more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
        raise errors.Forbidden(
            f'{rt.plural}.{rbac.RBAC_GROUP} "{name}" is forbidden: user "{user.name}" is '
            f"attempting to grant RBAC permissions not currently held: {shown}{more}",
            name=name, group=rt.group, kind=rt.plural)


def _describe(rule: rbac.Rule) -> str:
    if rule.non_resource_urls:
        return f"{{NonResourceURLs:{list(rule.non_resource_urls)}, Verbs:{list(rule.verbs)}}}"
    names = f", ResourceNames:{list(rule.resource_names)}" if rule.resource_names else ""
    return (f"{{APIGroups:{list(rule.api_groups)}, Resources:{list(rule.resources)}"
            f"{names}, Verbs:{list(rule.verbs)}}}")
