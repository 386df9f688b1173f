"""The objects every cluster's Service network starts with: as kube-apiserver writes them,
the ServiceCIDR ``kubernetes`` (the configured range) and the Service ``default/kubernetes``
on the range's first address, port 443 (https) to the servers' secure port; as a cluster's
DNS add-on would, ``kube-system/kube-dns`` on the range's tenth address.  kube-dns has no
selector: every host agent answers DNS itself and lists its own address in a slice of its
own, and ``internalTrafficPolicy: Local`` keeps a pod's queries on its host."""

from __future__ import annotations

import logging
from typing import Any

from atoll.api import errors
from atoll.api.resources.core_v1 import SERVICES
from atoll.api.resources.networking_v1 import INGRESSCLASSES, SERVICECIDRS
from atoll.api.resources.serviceaddresses import ServiceRanges
from atoll.api.strategy import WriteOptions

log = logging.getLogger(__name__)
OPTS = WriteOptions(field_manager="atoll-apiserver")
#: the Ingress routers' TLS port, added in a later version than their Service
INGRESS_HTTPS = {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 443}


async def ensure(svc, ranges: ServiceRanges, secure_port: int) -> None:  # type: ignore[no-untyped-def]
    """Create what is missing; never rewrite what a user (or another server) changed, but
    for the port a newer version adds to ``kube-system/atoll-ingress``."""
    wanted = [
        (SERVICECIDRS, "", {"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
                            "metadata": {"name": "kubernetes"},
                            "spec": {"cidrs": [str(ranges.cluster_ip_range)]}}),
        (SERVICES, "default", {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "clusterIP": ranges.nth(1),
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                                "targetPort": secure_port}]}}),
        (SERVICES, "kube-system", {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system",
                         "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "AtollDNS",
                                    "kubernetes.io/cluster-service": "true"}},
            "spec": {"type": "ClusterIP", "clusterIP": ranges.nth(10),
                     "internalTrafficPolicy": "Local",
                     "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                               {"name": "dns-tcp", "port": 53, "protocol": "TCP",
                                "targetPort": 53},
                               {"name": "metrics", "port": 9153, "protocol": "TCP",
                                "targetPort": 9153}]}}),
        # Ingresses of class atoll: every host routes them, this Service gives them an address
        (INGRESSCLASSES, "", {
            "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": "atoll", "annotations": {
                "ingressclass.kubernetes.io/is-default-class": "true"}},
            "spec": {"controller": "atoll.dev/ingress"}}),
        (SERVICES, "kube-system", {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "atoll-ingress", "namespace": "kube-system",
                         "labels": {"app.kubernetes.io/name": "atoll-ingress"}},
            "spec": {"type": "LoadBalancer",
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP",
                                "targetPort": 80}, dict(INGRESS_HTTPS)]}}),
    ]
    for rt, namespace, body in wanted:
        await create_if_absent(svc, rt, namespace, body)
    await _ingress_https(svc)


async def create_if_absent(svc, rt, namespace: str,  # type: ignore[no-untyped-def]
                           body: dict[str, Any]) -> None:
    """A built-in object the server starts with, written only when none of its name exists
    (an administrator's changes are kept; a deleted one comes back at the next start)."""
    if svc.read(rt, namespace, body["metadata"]["name"]) is not None:
        return
    try:
        await svc.create(rt, namespace, body, OPTS)
    except (errors.AlreadyExists, errors.Invalid) as e:
        log.info("%s %s: %s", rt.kind, body["metadata"]["name"], e)


async def _ingress_https(svc) -> None:  # type: ignore[no-untyped-def]
    """``kube-system/atoll-ingress`` made by an older version gains port 443; its other
    ports, with their node ports, stay as they are.  A Service that already has a port 443
    or a port named ``https`` is left alone."""
    def has_https(obj: dict) -> bool:
        return any(isinstance(p, dict) and (p.get("port") == 443 or p.get("name") == "https")
                   for p in (obj.get("spec") or {}).get("ports") or [])

    current = svc.read(SERVICES, "kube-system", "atoll-ingress")
    if current is None or has_https(current.obj):
        return

    def add(obj: dict) -> dict:
        if not has_https(obj):
            obj.setdefault("spec", {}).setdefault("ports", []).append(dict(INGRESS_HTTPS))
        return obj
    try:
        await svc.guaranteed_update(SERVICES, "kube-system", "atoll-ingress", add, OPTS)
    except (errors.NotFound, errors.Invalid, errors.Conflict) as e:
        log.info("Service atoll-ingress: cannot add port 443: %s", e)
