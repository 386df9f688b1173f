"""ClusterRole aggregation: a role with an ``aggregationRule`` holds the rules of every
ClusterRole its selectors match, as upstream's clusterrole-aggregation controller.

This is how ``admin``, ``edit`` and ``view`` grow when a CRD ships ClusterRoles
labelled ``rbac.authorization.k8s.io/aggregate-to-edit: "true"``: whoever has
Edit in a namespace can then use the new kind there, without anyone editing
the default roles.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from atoll.api import errors, selectors
from atoll.client.informer import Informer
from atoll.client.rest import ApiClient, resource_path
from atoll.client.workqueue import WorkQueue
from atoll.controllers.runner import run_workers

log = logging.getLogger(__name__)
RBAC = "rbac.authorization.k8s.io"


class ClusterRoleAggregationController:
    name = "clusterrole-aggregation"

    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self.roles = Informer(client, RBAC, "v1", "clusterroles")
        self.roles.add_handler(self._on_role)
        self.queue: WorkQueue[str] = WorkQueue(base_delay=0.05, max_delay=5.0)

    def _on_role(self, kind: str, role: dict[str, Any], old: dict[str, Any] | None) -> None:
        # any change may feed an aggregated role: look at every one (there are few)
        for candidate in self.roles.list():
            if candidate.get("aggregationRule"):
                self.queue.add(candidate["metadata"]["name"])

    async def run(self) -> None:
        await asyncio.gather(self.roles.run(),
                             run_workers(self.name, self.queue, self.reconcile, 1))

    async def reconcile(self, name: str) -> float | None:
        role = self.roles.get(name)
        if role is None or not role.get("aggregationRule"):
            return None
        wanted = self.aggregate(role)
        if wanted == (role.get("rules") or []):
            return None
        body = dict(role, rules=wanted)
        try:
            await self.client.update(resource_path(RBAC, "v1", "clusterroles", name=name), body)
        except errors.Conflict:
            return 0.1  # the informer will hand us the newer one
        except errors.NotFound:
            pass
        return None

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
