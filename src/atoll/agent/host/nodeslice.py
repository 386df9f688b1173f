"""This host's entries in the selectorless Services it serves itself (``kube-system/kube-dns``,
``kube-system/atoll-ingress``): an EndpointSlice ``<service>-<node>`` with the address this
host answers on, so the Service reaches each host's own server.  Written when the server
starts; NodeRestriction lets a host write no other."""

from __future__ import annotations

import logging
from typing import Any

from atoll.api import errors
from atoll.api.resources.discovery_v1 import HOST_MANAGER
from atoll.client.rest import ApiClient

log = logging.getLogger(__name__)
MANAGER = HOST_MANAGER
COLLECTION = "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices"
DNS_PORTS = [{"name": "dns", "port": 53, "protocol": "UDP"},
             {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]


def node_slice(service: str, node: str, address: str, ports: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{service}-{node}", "namespace": "kube-system",
                         "labels": {"kubernetes.io/service-name": service,
                                    "endpointslice.kubernetes.io/managed-by": MANAGER}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [address], "nodeName": node,
                           "conditions": {"ready": True, "serving": True,
                                          "terminating": False}}],
            "ports": ports}


async def publish(client: ApiClient, service: str, node: str, address: str,
                  ports: list[dict[str, Any]]) -> None:
    body = node_slice(service, node, address, ports)
    path = f"{COLLECTION}/{body['metadata']['name']}"
    try:
        current = await client.get(path)
    except errors.NotFound:
        current = None
    try:
        if current is None:
            await client.create(COLLECTION, body)
        elif current.get("endpoints") != body["endpoints"] or \
                current.get("ports") != body["ports"]:
            current.update({k: body[k] for k in ("endpoints", "ports", "addressType")})
            await client.update(path, current)
    except errors.ApiError as e:  # the server still works for this host's pods
        log.warning("cannot publish %s: %s", body["metadata"]["name"], e)
