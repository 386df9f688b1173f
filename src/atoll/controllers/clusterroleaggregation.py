"""ClusterRole aggregation: a role with an ``aggregationRule`` holds the rules of every
ClusterRole its selectors match, as upstream's clusterrole-aggregation controller.

This is how ``admin``, ``edit`` and ``view`` grow when a CRD ships ClusterRoles
labelled ``rbac.authorization.k8s.io/aggregate-to-edit: "true"``: whoever has
Edit in a namespace can then use the new kind there, without anyone editing
the default roles.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from atoll.api import errors, selectors
from atoll.client.controller import DONE, Builder, Controller, Result
from atoll.client.rest import resource_path

log = logging.getLogger(__name__)
RBAC = "rbac.authorization.k8s.io"
#: index of the roles that aggregate others (value "true"), so a change finds them at once
AGGREGATING = "aggregating"


def by_aggregation(role: dict[str, Any]) -> Iterable[str]:
    return ["true"] if role.get("aggregationRule") else []


class ClusterRoleAggregationController(Controller):
    name = "clusterrole-aggregation"
    backoff = (0.05, 5.0)

    def declare(self, b: Builder) -> None:
        # any change may feed an aggregated role: every aggregating role looks again (few)
        self.roles = b.watches(RBAC, "v1", "clusterroles", self._aggregating,
                               indexers={AGGREGATING: by_aggregation})

    def _aggregating(self, kind: str, role: dict[str, Any],
                     old: dict[str, Any] | None) -> Iterable[str]:
        return self.roles.index_keys(AGGREGATING, "true")

    async def reconcile(self, name: str) -> Result:
        role = self.roles.get(name)
        if role is None or not role.get("aggregationRule"):
            return DONE
        wanted = self.aggregate(role)
        if wanted == (role.get("rules") or []):
            return DONE
        # a Conflict is retried by the framework: the informer will have the newer role
        await self.client.update(resource_path(RBAC, "v1", "clusterroles", name=name),
                                 dict(role, rules=wanted))
        return DONE

    def aggregate(self, role: dict[str, Any]) -> list[dict[str, Any]]:
        """Matching roles' rules, in name order, without duplicates (as upstream)."""
        terms = (role.get("aggregationRule") or {}).get("clusterRoleSelectors") or []
        sels = []
        for term in terms:
            try:
                sels.append(selectors.label_selector_from_dict(term))
            except (errors.ApiError, ValueError):
                log.warning("clusterrole %s: bad aggregation selector %r",
                            role["metadata"]["name"], term)
        rules: list[dict[str, Any]] = []
        for other in sorted(self.roles.list(), key=lambda r: r["metadata"]["name"]):
            if other["metadata"]["name"] == role["metadata"]["name"]:
                continue
            labels = other["metadata"].get("labels") or {}
            if any(sel.matches(labels) for sel in sels):
                for rule in other.get("rules") or []:
                    if rule not in rules:
                        rules.append(rule)
        return rules
