"""What a cluster name resolves to, from the agent's Service and EndpointSlice informers,
by the Kubernetes DNS specification (the records CoreDNS's kubernetes plugin serves):

- ``<service>.<ns>.svc.<domain>``: A of the cluster IP; of each ready endpoint for a headless
  Service (all of them with ``publishNotReadyAddresses``); CNAME for an ExternalName one.
- ``<hostname>.<service>.<ns>.svc.<domain>``: A of a headless Service's endpoint by hostname.
- ``_<port>._<proto>.<service>.<ns>.svc.<domain>``: SRV per named port.
- ``<a-b-c-d>.<ns>.pod.<domain>``: A of that address.
- ``dns-version.<domain>``: TXT, the specification's version.

Any other name under the domain does not exist; a name that exists but has no record of
the asked type is an empty answer (NODATA), so resolvers asking AAAA then A move on.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Protocol

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
SCHEMA_VERSION = "1.0.1"


class Store(Protocol):
    def get(self, key: str) -> dict[str, Any] | None: ...
    def by_index(self, name: str, value: str) -> list[dict[str, Any]]: ...


@dataclass
class Answer:
    """``exists`` False: NXDOMAIN.  Records as (type, value[, port for SRV])."""

    exists: bool
    records: list[tuple[str, Any]] = field(default_factory=list)


def slices_by_service(obj: dict[str, Any]) -> list[str]:
    """The index of slices by ``<namespace>/<service>``."""
    name = (obj["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL)
    return [f'{obj["metadata"].get("namespace", "")}/{name}'] if name else []


class ClusterRecords:
    def __init__(self, services: Store, slices: Store, domain: str = "cluster.local") -> None:
        self.services, self.slices = services, slices
        self.domain = domain.strip(".").lower()

    def owns(self, qname: str) -> bool:
        name = qname.rstrip(".").lower()
        return name == self.domain or name.endswith("." + self.domain)

    def answer(self, qname: str, qtype: str) -> Answer:
        name = qname.rstrip(".").lower()
        labels = name[: -len(self.domain)].rstrip(".").split(".") if name != self.domain else []
        if labels == ["dns-version"]:
            return Answer(True, [("TXT", SCHEMA_VERSION)] if qtype == "TXT" else [])
        if labels[-1:] == ["svc"]:
            return self._service(labels[:-1], qtype)
        if labels[-1:] == ["pod"] and len(labels) == 3:
            try:
                ip = ipaddress.IPv4Address(labels[0].replace("-", "."))
            except ValueError:
                return Answer(False)
            return Answer(True, [("A", str(ip))] if qtype == "A" else [])
        # the domain itself and its zones exist (SOA/NS live there); nothing else does
        return Answer(labels in ([], ["svc"], ["pod"]))

    def _service(self, labels: list[str], qtype: str) -> Answer:
        if len(labels) < 2:
            return Answer(True)  # svc.<domain> and a namespace's zone: names without records
        ns, name = labels[-1], labels[-2]
        svc = self.services.get(f"{ns}/{name}")
        if svc is None:
            return Answer(False)
        spec = svc.get("spec") or {}
        rest = labels[:-2]
        if not rest:
            if spec.get("type") == "ExternalName":
                target = str(spec.get("externalName") or "").rstrip(".")
                return Answer(True, [("CNAME", target + ".")] if target else [])
            if qtype != "A":
                return Answer(True)
            if spec.get("clusterIP") == "None":
                return Answer(True, [("A", ip) for ip, _ in self._endpoints(svc)])
            ip = spec.get("clusterIP")
            return Answer(True, [("A", ip)] if ip else [])
        if len(rest) == 1 and spec.get("clusterIP") == "None":
            ips = [ip for ip, host in self._endpoints(svc) if host == rest[0]]
            return Answer(bool(ips), [("A", ip) for ip in ips] if qtype == "A" else [])
        if len(rest) == 2 and rest[0].startswith("_") and rest[1].startswith("_"):
            port_name, proto = rest[0][1:], rest[1][1:].upper()
            ports = [p for p in spec.get("ports") or []
                     if isinstance(p, dict) and p.get("name") == port_name
                     and (p.get("protocol") or "TCP") == proto]
            if not ports:
                return Answer(False)
            target = f"{name}.{ns}.svc.{self.domain}."
            return Answer(True, [("SRV", (target, int(ports[0].get("port") or 0)))]
                          if qtype == "SRV" else [])
        return Answer(False)

    def _endpoints(self, svc: dict[str, Any]) -> list[tuple[str, str]]:
        meta = svc["metadata"]
        publish = bool((svc.get("spec") or {}).get("publishNotReadyAddresses"))
        out: list[tuple[str, str]] = []
        for sl in self.slices.by_index("service", f'{meta.get("namespace")}/{meta.get("name")}'):
            if sl.get("addressType") != "IPv4":
                continue
            for ep in sl.get("endpoints") or []:
                ready = (ep.get("conditions") or {}).get("ready")
                if ready is False and not publish:
                    continue
                for ip in ep.get("addresses") or []:
                    out.append((ip, str(ep.get("hostname") or "")))
        return sorted(set(out))
