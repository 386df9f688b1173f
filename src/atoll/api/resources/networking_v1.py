"""networking.k8s.io/v1: network policies, ingresses and their classes, and the Service
address allocator's objects (ServiceCIDR, IPAddress)."""

from __future__ import annotations

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

NETWORKPOLICY = Kind(NETWORKPOLICIES)
INGRESS = Kind(INGRESSES)
INGRESSCLASS = Kind(INGRESSCLASSES)
SERVICECIDR = Kind(SERVICECIDRS)
IPADDRESS = Kind(IPADDRESSES)
