"""rbac.authorization.k8s.io/v1: roles, cluster roles and their bindings.

What the rules mean (authorization, escalation checks) is ``atoll.apiserver.rbac``'s.
"""

from __future__ import annotations

from typing import Any

from atoll.api.printing import (Cells, Printer, _age, _age_col, _dict, _list, _name, _name_col,
                                _str, _wide, column, created_at_printer)
from atoll.api.resources.base import Kind
from atoll.api.resourcetype import builtin

GROUP = "rbac.authorization.k8s.io"
ROLES = builtin(GROUP, "v1", "Role", "roles", True, generation=False, name_rule="path-segment")
CLUSTERROLES = builtin(GROUP, "v1", "ClusterRole", "clusterroles", False, generation=False,
                       name_rule="path-segment")
ROLEBINDINGS = builtin(GROUP, "v1", "RoleBinding", "rolebindings", True, generation=False,
                       name_rule="path-segment")
CLUSTERROLEBINDINGS = builtin(GROUP, "v1", "ClusterRoleBinding", "clusterrolebindings", False,
                              generation=False, name_rule="path-segment")


def _binding_columns(what: str) -> list[dict[str, Any]]:
    return [_name_col(), column("Role", description="RoleRef can reference a Role in the current "
                                                    "namespace or a ClusterRole in the global "
                                                    "namespace."),
            _age_col(), _wide("Users", f"Users in the {what}"), _wide("Groups", f"Groups in the {what}"),
            _wide("ServiceAccounts", f"ServiceAccounts in the {what}")]


def _binding(obj: dict[str, Any], now: float) -> Cells:
    ref = _dict(obj.get("roleRef"))
    users, groups, sas = [], [], []
    for subject in _list(obj.get("subjects")):
        if not isinstance(subject, dict):
            continue
        kind, name = subject.get("kind"), _str(subject.get("name"))
        if kind == "ServiceAccount":
            sas.append(f"{_str(subject.get('namespace'))}/{name}")
        elif kind == "User":
            users.append(name)
        elif kind == "Group":
            groups.append(name)
    return [_name(obj), f"{_str(ref.get('kind'))}/{_str(ref.get('name'))}", _age(obj, now),
            ", ".join(users), ", ".join(groups), ", ".join(sas)]


ROLE = Kind(ROLES, printer=created_at_printer)
CLUSTERROLE = Kind(CLUSTERROLES, printer=created_at_printer)
ROLEBINDING = Kind(ROLEBINDINGS, printer=Printer(_binding_columns("roleBinding"), _binding))
CLUSTERROLEBINDING = Kind(CLUSTERROLEBINDINGS,
                          printer=Printer(_binding_columns("clusterRoleBinding"), _binding))
