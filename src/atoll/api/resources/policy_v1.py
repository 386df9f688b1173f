"""policy/v1: pod disruption budgets (the disruption controller computes their status; the
pods' eviction subresource spends it)."""

from __future__ import annotations

import re
from typing import Any

from atoll.api import errors
from atoll.api.labelselector import validate_label_selector
from atoll.api.resources.base import Kind
from atoll.api.resourcetype import STATUS, builtin
from atoll.api.strategy import Strategy

PODDISRUPTIONBUDGETS = builtin("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets",
                               True, short_names=("pdb",), subresources=(STATUS,))

UNHEALTHY_POLICIES = ["AlwaysAllow", "IfHealthyBudget"]
_PERCENT = re.compile(r"^[0-9]+%$")


def _int_or_percent(value: Any, field: str) -> list[errors.Cause]:
    """ValidatePositiveIntOrPercent and IsNotMoreThan100Percent, as upstream words them."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return [errors.invalid_value(field, value, "must be an integer or percentage "
                                                   "(e.g '5%')")]
    if isinstance(value, int):
        return [errors.invalid_value(field, value, "must be greater than or equal to 0")] \
            if value < 0 else []
    if not _PERCENT.match(value):
        return [errors.invalid_value(field, value, "a valid percent string must be a numeric "
                                                   "string followed by an ending '%' (e.g. "
                                                   "'1%',  or '93%', regex used for validation "
                                                   "is '[0-9]+%')")]
    if int(value[:-1]) > 100:
        return [errors.invalid_value(field, value, "must not be greater than 100%")]
    return []


class PodDisruptionBudgetStrategy(Strategy):
    """upstream's ValidatePodDisruptionBudgetSpec."""

    def validate(self, rt, obj):  # type: ignore[no-untyped-def]
        spec = obj.get("spec")
        if spec is None:
            return []
        if not isinstance(spec, dict):
            return [errors.invalid_value("spec", spec, "must be an object")]
        causes: list[errors.Cause] = []
        min_available, max_unavailable = spec.get("minAvailable"), spec.get("maxUnavailable")
        if min_available is not None and max_unavailable is not None:
            causes.append(errors.invalid_value("spec", spec, "minAvailable and maxUnavailable "
                                                             "cannot be both set"))
        if min_available is not None:
            causes += _int_or_percent(min_available, "spec.minAvailable")
        if max_unavailable is not None:
            causes += _int_or_percent(max_unavailable, "spec.maxUnavailable")
        causes += validate_label_selector(spec.get("selector"), "spec.selector")
        policy = spec.get("unhealthyPodEvictionPolicy")
        if policy is not None and policy not in UNHEALTHY_POLICIES:
            causes.append(errors.not_supported("spec.unhealthyPodEvictionPolicy", policy,
                                               UNHEALTHY_POLICIES))
        return causes


PODDISRUPTIONBUDGET = Kind(PODDISRUPTIONBUDGETS, PodDisruptionBudgetStrategy())
