"""policy/v1: pod disruption budgets (stored and served; the eviction rules are pods')."""

from __future__ import annotations

from atoll.api.resources.base import Kind
from atoll.api.resourcetype import STATUS, builtin

PODDISRUPTIONBUDGETS = builtin("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets",
                               True, short_names=("pdb",), subresources=(STATUS,))

PODDISRUPTIONBUDGET = Kind(PODDISRUPTIONBUDGETS)
