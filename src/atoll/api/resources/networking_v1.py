"""networking.k8s.io/v1: network policies, ingresses and their classes, and the Service
address allocator's objects (ServiceCIDR, IPAddress)."""

from __future__ import annotations

from typing import Any

from atoll.api.resources.base import Kind
from atoll.api.resourcetype import STATUS, builtin

NETWORKPOLICIES = builtin("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", True,
                          short_names=("netpol",))
INGRESSES = builtin("networking.k8s.io", "v1", "Ingress", "ingresses", True,
                    short_names=("ing",), subresources=(STATUS,))
INGRESSCLASSES = builtin("networking.k8s.io", "v1", "IngressClass", "ingressclasses", False)
SERVICECIDRS = builtin("networking.k8s.io", "v1", "ServiceCIDR", "servicecidrs", False,
                       subresources=(STATUS,))
IPADDRESSES = builtin("networking.k8s.io", "v1", "IPAddress", "ipaddresses", False)

#: the built-in IngressClass (the cluster's default): every host's router serves it
INGRESS_CLASS = "atoll"


def ingress_is_atolls(ingress: dict[str, Any]) -> bool:
    """Class ``atoll``, or no class at all (ours is the default class); the legacy
    ``kubernetes.io/ingress.class`` annotation counts as a class."""
    name = (ingress.get("spec") or {}).get("ingressClassName")
    legacy = ((ingress.get("metadata") or {}).get("annotations") or {}) \
        .get("kubernetes.io/ingress.class")
    return (name or legacy or INGRESS_CLASS) == INGRESS_CLASS


NETWORKPOLICY = Kind(NETWORKPOLICIES)
INGRESS = Kind(INGRESSES)
INGRESSCLASS = Kind(INGRESSCLASSES)
SERVICECIDR = Kind(SERVICECIDRS)
IPADDRESS = Kind(IPADDRESSES)
