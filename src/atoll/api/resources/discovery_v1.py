"""discovery.k8s.io/v1: EndpointSlices, the Service dataplane's and cluster DNS's input.

Written by the EndpointSlice controller for Services with a selector, mirrored from
Endpoints for selectorless ones, and by agents for the per-host built-ins (kube-dns).
"""

from __future__ import annotations

from atoll.api.resources.base import Kind
from atoll.api.resourcetype import builtin

ENDPOINTSLICES = builtin("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", True)

#: label naming the Service a slice belongs to, and who manages the slice
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
#: the managed-by value of the slices a host's agent writes for the servers it runs itself
#: (``kube-system/kube-dns``, ``kube-system/atoll-ingress``): one slice per host
HOST_MANAGER = "agent.atoll.dev"

ENDPOINTSLICE = Kind(ENDPOINTSLICES)
