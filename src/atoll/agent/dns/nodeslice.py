"""This host's entry in ``kube-system/kube-dns``: an EndpointSlice ``kube-dns-<node>`` with
the address its DNS server answers on, so the Service (``internalTrafficPolicy: Local``)
reaches each host's own server.  Written when the server starts, kept as it is, and
NodeRestriction lets a host write no other."""

from __future__ import annotations

import logging
from typing import Any

from atoll.api import errors
from atoll.client.rest import ApiClient

log = logging.getLogger(__name__)
MANAGER = "agent.atoll.dev"
COLLECTION = "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices"


def dns_slice(node: str, address: str) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"kube-dns-{node}", "namespace": "kube-system",
                         "labels": {"kubernetes.io/service-name": "kube-dns",
                                    "endpointslice.kubernetes.io/managed-by": MANAGER}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [address], "nodeName": node,
                           "conditions": {"ready": True, "serving": True,
                                          "terminating": False}}],
            "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                      {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}


async def publish(client: ApiClient, node: str, address: str) -> None:
    body = dns_slice(node, address)
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
    except errors.ApiError as e:  # DNS still works for this host's pods; the slice waits
        log.warning("cannot publish %s: %s", body["metadata"]["name"], e)
