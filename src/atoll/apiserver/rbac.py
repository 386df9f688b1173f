"""RBAC: the rules a user holds, and whether they allow a request.

Pure allow-union as upstream: a request is allowed when a ClusterRoleBinding,
or a RoleBinding in the request's namespace, names the user (or one of their
groups, or their ServiceAccount) and its role has a matching rule.  Members of
``system:masters`` are allowed everything without any binding, so a broken
policy can always be repaired.

Roles and bindings are read from the watch cache.  Rules resolved for a
(user, namespace) are remembered until any RBAC object changes: a cache
listener bumps a generation counter, so decisions stay cheap on the hot path
and are never stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from atoll.api.resources import rbac_v1
from atoll.apiserver import nodeauthz
from atoll.apiserver.attributes import Attributes
from atoll.apiserver.authn import UserInfo
from atoll.storage.cacher import CacheEvent, Cacher

RBAC_GROUP = rbac_v1.GROUP
#: key prefixes of the objects that decide what anyone may do
_RBAC_PREFIXES = tuple(rt.store_prefix for rt in (rbac_v1.ROLES, rbac_v1.CLUSTERROLES,
                                                  rbac_v1.ROLEBINDINGS,
                                                  rbac_v1.CLUSTERROLEBINDINGS))
SUPERUSER_GROUP = "system:masters"
#: verbs that cannot be limited to resourceNames (there is no name when they are asked)
UNNAMED_VERBS = frozenset({"create", "deletecollection"})


@dataclass(frozen=True, slots=True)
class Rule:
    verbs: tuple[str, ...]
    api_groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: Any) -> "Rule | None":
        if not isinstance(d, dict):
            return None

        def strings(key: str) -> tuple[str, ...]:
            v = d.get(key) or ()
            return tuple(x for x in v if isinstance(x, str)) if isinstance(v, list) else ()
        return cls(strings("verbs"), strings("apiGroups"), strings("resources"),
                   strings("resourceNames"), strings("nonResourceURLs"))

    def to_dict(self) -> dict[str, list[str]]:
        d: dict[str, list[str]] = {"verbs": list(self.verbs)}
        if self.non_resource_urls:
            d["nonResourceURLs"] = list(self.non_resource_urls)
        else:
            d["apiGroups"] = list(self.api_groups)
            d["resources"] = list(self.resources)
        if self.resource_names:
            d["resourceNames"] = list(self.resource_names)
        return d

    def allows(self, a: Attributes) -> bool:
        if not ("*" in self.verbs or a.verb in self.verbs):
            return False
        if not a.resource_request:
            return any(url == "*" or url == a.path or
                       (url.endswith("*") and a.path.startswith(url[:-1]))
                       for url in self.non_resource_urls)
        if self.non_resource_urls and not self.resources:
            return False
        if not ("*" in self.api_groups or a.api_group in self.api_groups):
            return False
        if not self._resource_matches(a.resource, a.subresource):
            return False
        if not self.resource_names:
            return True
        return bool(a.name) and a.verb not in UNNAMED_VERBS and a.name in self.resource_names

    def _resource_matches(self, resource: str, subresource: str) -> bool:
        wanted = f"{resource}/{subresource}" if subresource else resource
        for r in self.resources:
            if r == "*" or r == wanted:
                return True
            if subresource and r == f"*/{subresource}":
                return True
        return False


def rules_of(obj: dict[str, Any] | None) -> list[Rule]:
    if not obj:
        return []
    return [r for r in (Rule.from_dict(d) for d in obj.get("rules") or []) if r is not None]


def subject_matches(subject: Any, user: UserInfo, binding_namespace: str) -> bool:
    if not isinstance(subject, dict):
        return False
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return name == user.name
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_namespace
        return user.name == f"system:serviceaccount:{ns}:{name}"
    return False


class RuleResolver:
    """Rules of a user, cluster-wide and per namespace, memoized per RBAC generation."""

    def __init__(self, cacher: Cacher) -> None:
        self.cacher = cacher
        self.generation = 0
        self._memo: dict[tuple[Any, ...], tuple[int, list[tuple[Rule, str]]]] = {}
        cacher.listeners.append(self._on_event)

    def _on_event(self, event: CacheEvent) -> None:
        if event.key.startswith(_RBAC_PREFIXES):
            self.generation += 1
            self._memo.clear()

    def rules(self, user: UserInfo, namespace: str) -> list[tuple[Rule, str]]:
        """(rule, the binding that grants it) for the user in ``namespace`` (and cluster-wide)."""
        key = (user.name, user.groups, namespace)
        hit = self._memo.get(key)
        if hit is not None and hit[0] == self.generation:
            return hit[1]
        found: list[tuple[Rule, str]] = []
        for cached in self.cacher.list(rbac_v1.CLUSTERROLEBINDINGS.prefix()):
            b = cached.obj
            if self._binds(b, user, ""):
                role = self._role(b, "")
                label = f'ClusterRoleBinding "{b["metadata"]["name"]}" of ClusterRole ' \
                        f'"{(b.get("roleRef") or {}).get("name", "")}"'
                found.extend((r, label) for r in rules_of(role))
        if namespace:
            for cached in self.cacher.list(rbac_v1.ROLEBINDINGS.prefix(namespace)):
                b = cached.obj
                if self._binds(b, user, namespace):
                    role = self._role(b, namespace)
                    ref = b.get("roleRef") or {}
                    label = f'RoleBinding "{b["metadata"]["name"]}/{namespace}" of ' \
                            f'{ref.get("kind", "")} "{ref.get("name", "")}"'
                    found.extend((r, label) for r in rules_of(role)
                                 if not r.non_resource_urls)
        if len(self._memo) > 10000:
            self._memo.clear()
        self._memo[key] = (self.generation, found)
        return found

    @staticmethod
    def _binds(binding: dict[str, Any], user: UserInfo, namespace: str) -> bool:
        return any(subject_matches(s, user, namespace) for s in binding.get("subjects") or [])

    def _role(self, binding: dict[str, Any], namespace: str) -> dict[str, Any] | None:
        ref = binding.get("roleRef") or {}
        name = ref.get("name")
        if not isinstance(name, str):
            return None
        if ref.get("kind") == "ClusterRole":
            cached = self.cacher.get(rbac_v1.CLUSTERROLES.key("", name))
        elif ref.get("kind") == "Role" and namespace:
            cached = self.cacher.get(rbac_v1.ROLES.key(namespace, name))
        else:
            return None
        return cached.obj if cached else None


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str = ""


class Authorizer:
    def __init__(self, resolver: RuleResolver) -> None:
        self.resolver = resolver

    def authorize(self, a: Attributes) -> Decision:
        if SUPERUSER_GROUP in a.user.groups:
            return Decision(True, f'RBAC: allowed by group "{SUPERUSER_GROUP}"')
        node = nodeauthz.node_of(a)
        if node is not None and nodeauthz.guarded(a):
            if nodeauthz.may_read(self.resolver.cacher, node, a):
                return Decision(True, f'Node: "{node}" runs a workload that uses it')
            return Decision(False, f'no relationship found between node "{node}" and this object')
        for rule, granted_by in self.resolver.rules(a.user, a.namespace):
            if rule.allows(a):
                return Decision(True, f"RBAC: allowed by {granted_by}")
        return Decision(False, "")

    def rules_for(self, user: UserInfo, namespace: str) -> list[Rule]:
        if SUPERUSER_GROUP in user.groups:
            return [Rule(("*",), ("*",), ("*",)), Rule(("*",), non_resource_urls=("*",))]
        seen: dict[Rule, None] = {}
        for rule, _ in self.resolver.rules(user, namespace):
            seen.setdefault(rule)
        return list(seen)


def covers(held: Iterable[Rule], wanted: Iterable[Rule]) -> list[Rule]:
    """The wanted rules (broken down to single verbs/resources) that ``held`` does not
    grant: the escalation check, as upstream's ``ConfirmNoEscalation``."""
    held = list(held)
    missing: list[Rule] = []
    for rule in wanted:
        for piece in _atoms(rule):
            if not any(_rule_covers(h, piece) for h in held):
                missing.append(piece)
    return missing


def _atoms(rule: Rule) -> Iterable[Rule]:
    if rule.non_resource_urls:
        for verb in rule.verbs:
            for url in rule.non_resource_urls:
                yield Rule((verb,), non_resource_urls=(url,))
        return
    for verb in rule.verbs:
        for group in rule.api_groups or ("",):
            for resource in rule.resources:
                if rule.resource_names:
                    for name in rule.resource_names:
                        yield Rule((verb,), (group,), (resource,), (name,))
                else:
                    yield Rule((verb,), (group,), (resource,))


def _rule_covers(h: Rule, piece: Rule) -> bool:
    verb = piece.verbs[0]
    if "*" not in h.verbs and verb not in h.verbs:
        return False
    if piece.non_resource_urls:
        url = piece.non_resource_urls[0]
        return any(u == "*" or u == url or (u.endswith("*") and url.startswith(u[:-1]))
                   for u in h.non_resource_urls)
    group, resource = piece.api_groups[0], piece.resources[0]
    if "*" not in h.api_groups and group not in h.api_groups:
        return False
    base, _, sub = resource.partition("/")
    if not any(r == "*" or r == resource or (sub and r == f"*/{sub}") for r in h.resources):
        return False
    if not h.resource_names:
        return True
    return bool(piece.resource_names) and piece.resource_names[0] in h.resource_names
