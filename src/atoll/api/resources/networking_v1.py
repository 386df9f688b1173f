"""networking.k8s.io/v1: network policies (stored and served)."""

from __future__ import annotations

from atoll.api.resources.base import Kind
from atoll.api.resourcetype import builtin

NETWORKPOLICIES = builtin("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", True,
                          short_names=("netpol",))

NETWORKPOLICY = Kind(NETWORKPOLICIES)
