"""What a cluster name resolves to, from the agent's Service and EndpointSlice informers,
by the Kubernetes DNS specification 1.0.1 (the records CoreDNS's kubernetes plugin serves):

- ``<service>.<ns>.svc.<domain>``: A of the cluster IP; of each ready endpoint for a headless
  Service (all of them with ``publishNotReadyAddresses``; NXDOMAIN with none); CNAME for an
  ExternalName one.
- ``<hostname>.<service>.<ns>.svc.<domain>``: A of a headless Service's endpoint by its
  hostname, or by its system-assigned one, the dashed address (``10-88-0-5``), as CoreDNS.
- ``_<port>._<proto>.<service>.<ns>.svc.<domain>``: SRV per named port, targeting the Service
  (its port) or, for a headless one, each ready endpoint by hostname (the endpoint's port),
  the targets' A records in the additional section.
- ``<a-b-c-d>.<ns>.pod.<domain>``: A of that address.
- ``dns-version.<domain>``: TXT, the specification's version; SOA and NS at the apex.
- ``<d>.<c>.<b>.<a>.in-addr.arpa``: PTR of a cluster IP to its Service, of a headless
  Service's ready endpoint to its hostname name.  Pods without such a name get none (as
  CoreDNS's ``pods insecure``, which serves forward records only).

Any other name under the domain does not exist, nor does a reverse name in the Service or pod
ranges without a record; a name that exists but has no record of the asked type is an empty
answer (NODATA): the cluster is IPv4-only, so AAAA (or MX, TXT...) of a Service is NODATA and
resolvers asking AAAA and A move on.  Reverse names outside those ranges are not ours.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
SCHEMA_VERSION = "1.0.1"
TOLERATE_UNREADY = "service.alpha.kubernetes.io/tolerate-unready-endpoints"
REVERSE_ZONE = "in-addr.arpa"
#: informer indexes this module adds: Services by cluster IP, slices by endpoint address
CLUSTER_IP_INDEX, ADDRESS_INDEX, SERVICE_INDEX = "dns-cluster-ip", "dns-address", "service"


class Store(Protocol):
    def get(self, key: str) -> dict[str, Any] | None: ...
    def list(self) -> list[dict[str, Any]]: ...
    def by_index(self, name: str, value: str) -> list[dict[str, Any]]: ...
    def add_indexer(self, name: str, indexer: Any) -> None: ...


@dataclass
class Answer:
    """``exists`` False: NXDOMAIN.  Records as (type, value); for SRV the value is
    (target, port).  ``extra``: (name, type, value) for the additional section.  ``zone``:
    whose SOA goes in the authority section of an empty answer."""

    exists: bool
    records: list[tuple[str, Any]] = field(default_factory=list)
    extra: list[tuple[str, str, Any]] = field(default_factory=list)
    zone: str = ""


@dataclass(frozen=True)
class Endpoint:
    ip: str
    hostname: str  # the endpoint's own, or the dashed address
    ports: tuple[tuple[str, str, int], ...]  # (name, protocol, port) of its slice


def slices_by_service(obj: dict[str, Any]) -> list[str]:
    """The index of slices by ``<namespace>/<service>``."""
    name = (obj["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL)
    return [f'{obj["metadata"].get("namespace", "")}/{name}'] if name else []


def _cluster_ips(svc: dict[str, Any]) -> list[str]:
    spec = svc.get("spec") or {}
    ips = list(spec.get("clusterIPs") or []) or [spec.get("clusterIP")]
    return [ip for ip in ips if isinstance(ip, str) and _ipv4(ip)]


def _slice_addresses(sl: dict[str, Any]) -> list[str]:
    if sl.get("addressType") != "IPv4":
        return []
    return [ip for ep in sl.get("endpoints") or [] for ip in ep.get("addresses") or []]


def _ipv4(text: str) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        return None


def reverse_address(name: str) -> ipaddress.IPv4Address | None:
    """The address of ``d.c.b.a.in-addr.arpa`` (lowercased, no trailing dot), else None."""
    if not name.endswith("." + REVERSE_ZONE):
        return None
    labels = name[: -len(REVERSE_ZONE) - 1].split(".")
    if len(labels) != 4 or not all(x.isdigit() and len(x) <= 3 for x in labels):
        return None
    return _ipv4(".".join(reversed(labels)))


class ClusterRecords:
    """``service_cidrs``: the ServiceCIDR objects, and ``pod_ranges``: the cluster's pod
    ranges; the reverse names of their addresses are ours (NXDOMAIN without a record)."""

    def __init__(self, services: Store, slices: Store, domain: str = "cluster.local",
                 service_cidrs: Store | None = None, pod_ranges: Sequence[str] = ()) -> None:
        self.services, self.slices = services, slices
        self.domain = domain.strip(".").lower()
        self.service_cidrs = service_cidrs
        self.pod_ranges = [ipaddress.IPv4Network(r, strict=False) for r in pod_ranges if r]
        services.add_indexer(CLUSTER_IP_INDEX, _cluster_ips)
        slices.add_indexer(ADDRESS_INDEX, _slice_addresses)
        slices.add_indexer(SERVICE_INDEX, slices_by_service)

    def owns(self, qname: str) -> bool:
        name = qname.rstrip(".").lower()
        if name == self.domain or name.endswith("." + self.domain):
            return True
        ip = reverse_address(name)
        return ip is not None and (self._authoritative(ip) or bool(self._ptr(str(ip))))

    def answer(self, qname: str, qtype: str) -> Answer:
        name = qname.rstrip(".").lower()
        if not (name == self.domain or name.endswith("." + self.domain)):
            ip = reverse_address(name)
            targets = self._ptr(str(ip)) if ip is not None else []
            return Answer(bool(targets), [("PTR", t) for t in targets if _wants(qtype, "PTR")],
                          zone=REVERSE_ZONE)
        answer = self._in_domain(name, qtype)
        answer.zone = self.domain
        return answer

    def _in_domain(self, name: str, qtype: str) -> Answer:
        labels = name[: -len(self.domain)].rstrip(".").split(".") if name != self.domain else []
        if not labels:  # the apex: its SOA and NS (the server adds their contents)
            return Answer(True, [(t, None) for t in ("SOA", "NS") if _wants(qtype, t)])
        if labels == ["dns-version"]:
            return Answer(True, [("TXT", SCHEMA_VERSION)] if _wants(qtype, "TXT") else [])
        if labels[-1] == "svc":
            return self._service(labels[:-1], qtype)
        if labels[-1] == "pod" and len(labels) == 3:
            ip = _ipv4(labels[0].replace("-", "."))
            if ip is None or labels[0].count("-") != 3:
                return Answer(False)
            return Answer(True, [("A", str(ip))] if _wants(qtype, "A") else [])
        # the zones exist (names without records); nothing else does
        return Answer(labels in (["svc"], ["pod"]) or (labels[-1] == "pod" and len(labels) == 2))

    def _service(self, labels: list[str], qtype: str) -> Answer:
        if len(labels) < 2:
            return Answer(True)  # svc.<domain> and a namespace's zone: names without records
        ns, name = labels[-1], labels[-2]
        svc = self.services.get(f"{ns}/{name}")
        if svc is None:
            return Answer(False)
        spec = svc.get("spec") or {}
        rest = labels[:-2]
        headless = spec.get("clusterIP") == "None"
        base = f"{name}.{ns}.svc.{self.domain}."
        if spec.get("type") == "ExternalName":
            target = str(spec.get("externalName") or "").rstrip(".")
            if rest:
                return Answer(False)
            return Answer(True, [("CNAME", target + ".")] if target else [])
        endpoints = self._endpoints(svc) if headless else []
        if headless and not endpoints:
            return Answer(False)  # the specification: no ready endpoint, no name
        if not rest:
            if not _wants(qtype, "A"):
                return Answer(True)
            if headless:
                return Answer(True, [("A", ip) for ip in sorted({e.ip for e in endpoints})])
            ips = _cluster_ips(svc)
            return Answer(True, [("A", ip) for ip in ips])
        if len(rest) == 1 and headless:
            ips = sorted({e.ip for e in endpoints if e.hostname == rest[0]})
            return Answer(bool(ips), [("A", ip) for ip in ips] if _wants(qtype, "A") else [])
        if len(rest) == 2 and rest[0].startswith("_") and rest[1].startswith("_"):
            port_name, proto = rest[0][1:], rest[1][1:].upper()
            ports = [p for p in spec.get("ports") or []
                     if isinstance(p, dict) and str(p.get("name") or "").lower() == port_name
                     and (p.get("protocol") or "TCP") == proto]
            if not ports:
                return Answer(False)
            if not _wants(qtype, "SRV"):
                return Answer(True)
            if not headless:
                return Answer(True, [("SRV", (base, _number(ports[0].get("port"))))],
                              [(base, "A", ip) for ip in _cluster_ips(svc)])
            records: list[tuple[str, Any]] = []
            extra: list[tuple[str, str, Any]] = []
            for e in endpoints:
                number = next((n for pn, pp, n in e.ports
                               if pn.lower() == port_name and pp == proto),
                              _number(ports[0].get("port")))
                target = f"{e.hostname}.{base}"
                records.append(("SRV", (target, number)))
                extra.append((target, "A", e.ip))
            return Answer(True, sorted(set(records)), sorted(set(extra)))
        return Answer(False)

    def _endpoints(self, svc: dict[str, Any]) -> list[Endpoint]:
        meta = svc["metadata"]
        publish = bool((svc.get("spec") or {}).get("publishNotReadyAddresses")) or \
            str((meta.get("annotations") or {}).get(TOLERATE_UNREADY, "")).lower() == "true"
        out: list[Endpoint] = []
        key = f'{meta.get("namespace")}/{meta.get("name")}'
        for sl in self.slices.by_index(SERVICE_INDEX, key):
            if sl.get("addressType") != "IPv4":
                continue
            ports = tuple((str(p.get("name") or ""), str(p.get("protocol") or "TCP"),
                           _number(p.get("port")))
                          for p in sl.get("ports") or [] if isinstance(p, dict))
            for ep in sl.get("endpoints") or []:
                if (ep.get("conditions") or {}).get("ready") is False and not publish:
                    continue
                for ip in ep.get("addresses") or []:
                    if _ipv4(str(ip)) is None:
                        continue
                    host = str(ep.get("hostname") or "").lower() or str(ip).replace(".", "-")
                    out.append(Endpoint(str(ip), host, ports))
        return sorted(set(out), key=lambda e: (e.hostname, e.ip))

    def _ptr(self, ip: str) -> list[str]:
        """The names whose PTR ``ip`` is: its Services, its headless Services' endpoints."""
        names = {f'{s["metadata"]["name"]}.{s["metadata"]["namespace"]}.svc.{self.domain}.'
                 for s in self.services.by_index(CLUSTER_IP_INDEX, ip)}
        for sl in self.slices.by_index(ADDRESS_INDEX, ip):
            for key in slices_by_service(sl):
                svc = self.services.get(key)
                if svc is None or (svc.get("spec") or {}).get("clusterIP") != "None":
                    continue
                base = f'{svc["metadata"]["name"]}.{svc["metadata"]["namespace"]}.svc.' \
                    f'{self.domain}.'
                names.update(f"{e.hostname}.{base}" for e in self._endpoints(svc) if e.ip == ip)
        return sorted(names)

    def _authoritative(self, ip: ipaddress.IPv4Address) -> bool:
        return any(ip in net for net in [*self.pod_ranges, *self._service_ranges()])

    def _service_ranges(self) -> Iterable[ipaddress.IPv4Network]:
        for obj in self.service_cidrs.list() if self.service_cidrs is not None else []:
            for cidr in (obj.get("spec") or {}).get("cidrs") or []:
                try:
                    net = ipaddress.ip_network(str(cidr), strict=False)
                except ValueError:
                    continue
                if isinstance(net, ipaddress.IPv4Network):
                    yield net


def _number(value: Any) -> int:
    """A port from an object (0 for anything but a number in range)."""
    return value if isinstance(value, int) and 0 <= value <= 65535 else 0


def _wants(qtype: str, rtype: str) -> bool:
    return qtype in (rtype, "ANY")
