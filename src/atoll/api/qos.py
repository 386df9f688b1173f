"""A pod's quality-of-service class, as upstream's GetPodQOS computes it.

Only cpu and memory count.  BestEffort: no container (init ones included) requests or limits
either.  Guaranteed: every container limits both, and each request that is set equals its limit
(an unset request defaults to the limit).  Anything else is Burstable.  Quantities are compared
by value (``1`` equals ``1000m``); a malformed quantity counts as unequal, never raises.
"""

from __future__ import annotations

from typing import Any

from atoll.api import quantity

QOS_RESOURCES = ("cpu", "memory")


def _equal(a: Any, b: Any) -> bool:
    try:
        return quantity.parse(a) == quantity.parse(b)
    except (ValueError, TypeError, ArithmeticError):
        return False


def qos_class(pod_or_spec: dict[str, Any]) -> str:
    """Guaranteed, Burstable or BestEffort for a pod (or a pod spec)."""
    spec = pod_or_spec.get("spec") if "spec" in pod_or_spec else pod_or_spec
    spec = spec if isinstance(spec, dict) else {}
    any_set = False
    guaranteed = True
    for group in ("initContainers", "containers"):
        for c in spec.get(group) or []:
            if not isinstance(c, dict):
                continue
            res = c.get("resources") if isinstance(c.get("resources"), dict) else {}
            req = res.get("requests") if isinstance(res.get("requests"), dict) else {}
            lim = res.get("limits") if isinstance(res.get("limits"), dict) else {}
            for r in QOS_RESOURCES:
                if r in req or r in lim:
                    any_set = True
                if r not in lim or (r in req and not _equal(req[r], lim[r])):
                    guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"
