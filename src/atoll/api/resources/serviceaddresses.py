"""Picking and checking a Service's cluster IP and node ports, as kube-apiserver's allocators.

The range is split as upstream's (KEP-3070): the first ``min(max(16, size/16), 256)``
addresses form a static band that dynamic allocation uses only when the rest is full, so
well-known addresses (the first for ``default/kubernetes``, the tenth for
``kube-system/kube-dns``) stay free for whoever asks for them by number.  An address is taken
when an IPAddress object names it or a Service (stored before IPAddress objects were kept)
carries it; the IPAddress is written in the Service's own transaction (``apiserver.objects``),
so that store decides a race between two API servers.  Node ports are checked against every
Service in the cache.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass, field
from typing import Any

from atoll.api import errors
from atoll.api.resources.networking_v1 import IPADDRESSES
from atoll.api.strategy import ObjectReader

Obj = dict[str, Any]
#: types whose ports get node ports (LoadBalancer unless allocateLoadBalancerNodePorts: false)
NODE_PORT_TYPES = frozenset({"NodePort", "LoadBalancer"})
MANAGED_BY = "ipallocator.k8s.io"


@dataclass(frozen=True)
class ServiceRanges:
    """Where cluster IPs and node ports come from (the server's two range flags)."""

    cluster_ip_range: ipaddress.IPv4Network = field(
        default_factory=lambda: ipaddress.IPv4Network("10.96.0.0/12"))
    node_ports: tuple[int, int] = (30000, 32767)

    @property
    def static_band(self) -> int:
        return min(max(16, self.cluster_ip_range.num_addresses // 16), 256)

    def nth(self, n: int) -> str:
        """The range's n-th address (1: default/kubernetes's, 10: kube-dns's)."""
        return str(self.cluster_ip_range.network_address + n)


def wants_cluster_ip(spec: Obj) -> bool:
    return spec.get("type") != "ExternalName" and spec.get("clusterIP") != "None"


def taken_ips(svc: ObjectReader, services: Any, exclude: tuple[str, str] | None = None) -> set[str]:
    """Every cluster IP in use, but the one Service ``exclude`` (namespace, name) holds."""
    taken: set[str] = set()
    for cached in svc.read_list(IPADDRESSES):
        parent = (cached.obj.get("spec") or {}).get("parentRef") or {}
        if exclude is None or (parent.get("namespace"), parent.get("name")) != exclude:
            taken.add(cached.obj["metadata"]["name"])
    for cached in svc.read_list(services):
        meta = cached.obj["metadata"]
        if exclude is not None and (meta.get("namespace"), meta.get("name")) == exclude:
            continue
        spec = cached.obj.get("spec") or {}
        taken.update(ip for ip in [spec.get("clusterIP"), *(spec.get("clusterIPs") or [])] if ip)
    return taken


def assign_cluster_ip(svc: ObjectReader, services: Any, obj: Obj) -> None:
    """Check a requested cluster IP, or pick one; sets ``clusterIP`` and ``clusterIPs``."""
    spec, meta = obj["spec"], obj["metadata"]
    ranges: ServiceRanges = svc.service_ranges
    requested = spec.get("clusterIP") or next(iter(spec.get("clusterIPs") or []), "")
    if not wants_cluster_ip(spec):
        if spec.get("clusterIP") == "None":
            spec["clusterIPs"] = ["None"]
        return
    taken = taken_ips(svc, services, (meta.get("namespace"), meta.get("name")))
    if requested:
        ip = _parse_ip(requested)
        path = "spec.clusterIPs"
        if ip is None:
            raise _invalid(obj, errors.invalid_value(
                path, requested, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"))
        if ip not in ranges.cluster_ip_range or ip in (ranges.cluster_ip_range.network_address,
                                                      ranges.cluster_ip_range.broadcast_address):
            raise _invalid(obj, errors.invalid_value(
                path, requested, f"failed to allocate IP {requested}: the provided IP "
                f"({requested}) is not in the valid range. The range of valid IPs is "
                f"{ranges.cluster_ip_range}"))
        if str(ip) in taken:
            raise already_allocated(obj, str(ip))
        chosen = str(ip)
    else:
        chosen = _pick_ip(ranges, taken, obj)
    spec["clusterIP"] = chosen
    spec["clusterIPs"] = [chosen]


def already_allocated(obj: Obj, ip: str) -> errors.Invalid:
    return _invalid(obj, errors.invalid_value(
        "spec.clusterIPs", ip, f"failed to allocate IP {ip}: provided IP is already allocated"))


def _pick_ip(ranges: ServiceRanges, taken: set[str], obj: Obj) -> str:
    net = ranges.cluster_ip_range
    base, size = int(net.network_address), net.num_addresses
    band = ranges.static_band
    # the dynamic band (above the static one) first, then the static band; a random start
    # then a walk, so a nearly full range is still searched to the end
    for low, high in ((band + 1, size - 2), (1, min(band, size - 2))):
        if low > high:
            continue
        start = random.randint(low, high)
        span = high - low + 1
        for step in range(span):
            ip = str(ipaddress.IPv4Address(base + low + (start - low + step) % span))
            if ip not in taken:
                return ip
    raise _invalid(obj, errors.Cause("FieldValueInvalid", "Internal error occurred: failed to "
                                     f"allocate a serviceIP: range is full ({net})",
                                     "spec.clusterIPs"))


def assign_node_ports(svc: ObjectReader, services: Any, obj: Obj, old: Obj | None = None) -> None:
    """Check requested node ports and give the other ports of a NodePort or LoadBalancer
    Service one each; drop them from other types (as upstream on a type change)."""
    spec, meta = obj["spec"], obj["metadata"]
    ports = [p for p in spec.get("ports") or [] if isinstance(p, dict)]
    needs = spec.get("type") in NODE_PORT_TYPES and not (
        spec.get("type") == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is False)
    if not needs:
        if spec.get("type") not in NODE_PORT_TYPES:
            for p in ports:
                p.pop("nodePort", None)
        return
    low, high = svc.service_ranges.node_ports
    taken = _taken_node_ports(svc, services, (meta.get("namespace"), meta.get("name")))
    kept = {(p.get("protocol", "TCP"), p.get("nodePort")) for p in
            ((old or {}).get("spec") or {}).get("ports") or [] if isinstance(p, dict)}
    mine: dict[tuple[str, int], int] = {}
    causes: list[errors.Cause] = []
    for i, p in enumerate(ports):
        port, protocol = p.get("nodePort"), p.get("protocol", "TCP")
        if not isinstance(port, int) or isinstance(port, bool) or port == 0:
            continue
        path = f"spec.ports[{i}].nodePort"
        if (protocol, port) in kept:
            mine[(protocol, port)] = i
            continue
        if not low <= port <= high:
            causes.append(errors.invalid_value(
                path, port, "provided port is not in the valid range. The range of valid ports "
                f"is {low}-{high}"))
        elif (protocol, port) in taken:
            causes.append(errors.invalid_value(path, port, "provided port is already allocated"))
        mine[(protocol, port)] = i
    if causes:
        raise _invalid(obj, *causes)
    used = {port for _, port in taken} | {port for _, port in mine}
    for p in ports:
        if not (isinstance(p.get("nodePort"), int) and p["nodePort"]):
            p["nodePort"] = _pick_port(low, high, used, obj)
            used.add(p["nodePort"])


def _taken_node_ports(svc: ObjectReader, services: Any,
                      exclude: tuple[str, str]) -> set[tuple[str, int]]:
    taken: set[tuple[str, int]] = set()
    for cached in svc.read_list(services):
        meta = cached.obj["metadata"]
        if (meta.get("namespace"), meta.get("name")) == exclude:
            continue
        spec = cached.obj.get("spec") or {}
        for p in spec.get("ports") or []:
            if isinstance(p, dict) and p.get("nodePort"):
                taken.add((p.get("protocol", "TCP"), p["nodePort"]))
        if spec.get("healthCheckNodePort"):
            taken.add(("TCP", spec["healthCheckNodePort"]))
    return taken


def _pick_port(low: int, high: int, used: set[int], obj: Obj) -> int:
    span = high - low + 1
    start = random.randrange(span)
    for step in range(span):
        port = low + (start + step) % span
        if port not in used:
            return port
    raise _invalid(obj, errors.Cause("FieldValueInvalid", "Internal error occurred: failed to "
                                     f"allocate a nodePort: range is full ({low}-{high})",
                                     "spec.ports"))


def ip_address_object(ip: str, service: Obj) -> Obj:
    """The IPAddress that holds ``ip`` for ``service`` (networking.k8s.io/v1)."""
    meta = service["metadata"]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "IPAddress",
            "metadata": {"name": ip, "labels": {
                "ipaddress.kubernetes.io/ip-family": "IPv4",
                "ipaddress.kubernetes.io/managed-by": MANAGED_BY}},
            "spec": {"parentRef": {"group": "", "resource": "services",
                                   "namespace": meta.get("namespace", ""),
                                   "name": meta.get("name", "")}}}


def held_ips(service: Obj) -> list[str]:
    spec = service.get("spec") or {}
    if not wants_cluster_ip(spec):
        return []
    return [ip for ip in spec.get("clusterIPs") or [spec.get("clusterIP")] if _parse_ip(ip)]


def _parse_ip(value: Any) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(value)
    except (ValueError, TypeError):
        return None


def _invalid(obj: Obj, *causes: errors.Cause) -> errors.Invalid:
    return errors.invalid("Service", obj["metadata"].get("name", ""), list(causes))
