"""Services and their EndpointSlices as one nftables table, laid out as kube-proxy's nftables
mode (wave2-notes §2.1): verdict maps keyed by address . protocol . port, a chain per Service
port picking an endpoint at random, a chain per endpoint doing the DNAT, masquerading for
traffic from outside the cluster (and hairpin), and a reject for Service ports with no
endpoints.  Pure: the same inputs give the same script.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from atoll.agent.host.nft import PROTOCOLS, short_hash

Obj = dict[str, Any]
MASQ_MARK = "0x4000"
AFFINITY_TIMEOUT = 10800


@dataclass(frozen=True)
class ProxySettings:
    table: str
    node_name: str
    #: every pod range (traffic from them keeps its source address)
    cluster_cidr: str


@dataclass
class Endpoint:
    ip: str
    port: int
    node: str
    ready: bool
    serving: bool
    terminating: bool


@dataclass
class ServicePort:
    namespace: str
    name: str
    port_name: str
    protocol: str
    port: int
    node_port: int
    cluster_ip: str
    external_ips: list[str]
    internal_local: bool
    external_local: bool
    affinity_seconds: int
    endpoints: list[Endpoint] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}/{PROTOCOLS[self.protocol]}/{self.port_name or self.port}"



def service_ports(services: Iterable[Obj], slices_of: Any) -> list[ServicePort]:
    """Every proxied port of every Service (not headless, not ExternalName), with the
    endpoints its slices give that port."""
    out: list[ServicePort] = []
    for svc in services:
        meta, spec = svc["metadata"], svc.get("spec") or {}
        ip = spec.get("clusterIP")
        if spec.get("type") == "ExternalName" or not ip or ip == "None":
            continue
        affinity = 0
        if spec.get("sessionAffinity") == "ClientIP":
            affinity = int(((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {})
                           .get("timeoutSeconds") or AFFINITY_TIMEOUT)
        lb_ips = [i.get("ip") for i in ((svc.get("status") or {}).get("loadBalancer") or {})
                  .get("ingress") or [] if isinstance(i, dict) and i.get("ip")]
        slices = slices_of(meta.get("namespace", ""), meta.get("name", ""))
        for p in spec.get("ports") or []:
            if not isinstance(p, dict) or p.get("protocol", "TCP") not in PROTOCOLS:
                continue
            sp = ServicePort(
                meta.get("namespace", ""), meta.get("name", ""), str(p.get("name") or ""),
                p.get("protocol", "TCP"), int(p.get("port") or 0), int(p.get("nodePort") or 0),
                ip, [*(spec.get("externalIPs") or []), *lb_ips],
                spec.get("internalTrafficPolicy") == "Local",
                spec.get("externalTrafficPolicy") == "Local", affinity)
            sp.endpoints = _endpoints_for(sp, slices)
            out.append(sp)
    return sorted(out, key=lambda s: s.id)


def _endpoints_for(sp: ServicePort, slices: Iterable[Obj]) -> list[Endpoint]:
    found: dict[tuple[str, int], Endpoint] = {}
    for sl in slices:
        if sl.get("addressType") != "IPv4":
            continue
        port = next((q.get("port") for q in sl.get("ports") or []
                     if isinstance(q, dict) and str(q.get("name") or "") == sp.port_name
                     and q.get("protocol", "TCP") == sp.protocol), None)
        if not isinstance(port, int):
            continue
        for ep in sl.get("endpoints") or []:
            cond = ep.get("conditions") or {}
            ready = cond.get("ready") is not False
            for addr in (ep.get("addresses") or [])[:1]:
                found[(addr, port)] = Endpoint(
                    addr, port, str(ep.get("nodeName") or ""), ready,
                    cond.get("serving", ready) is not False, bool(cond.get("terminating")))
    return sorted(found.values(), key=lambda e: (e.ip, e.port))


def usable(endpoints: list[Endpoint], local_only: bool, node: str) -> list[Endpoint]:
    """Ready endpoints; when none, serving terminating ones (upstream's fallback)."""
    pool = [e for e in endpoints if not local_only or e.node == node]
    ready = [e for e in pool if e.ready]
    return ready or [e for e in pool if e.serving and e.terminating]


def table_body(ports: list[ServicePort], s: ProxySettings) -> tuple[str, dict[str, list[str]]]:
    """The table's contents (chains, maps, rules) for ``ports``."""
    lines = [
        "  map service-ips { type ipv4_addr . inet_proto . inet_service : verdict; }",
        "  map service-nodeports { type inet_proto . inet_service : verdict; }",
        "  map no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict; }",
        "  map no-endpoint-nodeports { type inet_proto . inet_service : verdict; }",
        "  chain nat-prerouting { type nat hook prerouting priority dstnat; policy accept; "
        "jump services; }",
        "  chain nat-output { type nat hook output priority -100; policy accept; "
        "jump services; }",
        "  chain nat-postrouting { type nat hook postrouting priority srcnat; policy accept; "
        "jump masquerading; }",
        "  chain filter-forward { type filter hook forward priority filter; policy accept; "
        "ct state new jump service-endpoints-check; }",
        "  chain filter-output { type filter hook output priority filter; policy accept; "
        "ct state new jump service-endpoints-check; }",
        "  chain filter-input { type filter hook input priority filter; policy accept; "
        "ct state new jump service-endpoints-check; ct state new fib daddr type local "
        "meta l4proto . th dport vmap @no-endpoint-nodeports; }",
        "  chain service-endpoints-check { ip daddr . meta l4proto . th dport "
        "vmap @no-endpoint-services; }",
        "  chain reject-chain { reject; }",
        f"  chain mark-for-masquerade {{ meta mark set meta mark or {MASQ_MARK}; }}",
        f"  chain masquerading {{ meta mark and {MASQ_MARK} == 0 return; "
        f"meta mark set meta mark xor {MASQ_MARK}; masquerade fully-random; }}",
        "  chain services { ip daddr . meta l4proto . th dport vmap @service-ips; "
        "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport "
        "vmap @service-nodeports; }",
    ]
    elements: dict[str, list[str]] = {"service-ips": [], "service-nodeports": [],
                                      "no-endpoint-services": [], "no-endpoint-nodeports": []}
    for sp in ports:
        proto = PROTOCOLS[sp.protocol]
        tag = f"{short_hash(sp.id)}-{sp.id}"
        internal = usable(sp.endpoints, sp.internal_local, s.node_name)
        external = usable(sp.endpoints, sp.external_local, s.node_name)
        cluster_key = f"{sp.cluster_ip} . {proto} . {sp.port}"
        if internal:
            lines += _service_chains(sp, f"service-{tag}", internal, s, masquerade_outside=True)
            elements["service-ips"].append(f"{cluster_key} : goto service-{tag}")
        else:
            elements["no-endpoint-services"].append(f"{cluster_key} : goto reject-chain")
        externals = [f"{ip} . {proto} . {sp.port}" for ip in sp.external_ips]
        if sp.node_port or externals:
            if external:
                target = f"external-{tag}"
                if sp.external_local:  # the client's address is kept: no masquerade
                    lines += _service_chains(sp, f"local-{tag}", external, s,
                                             masquerade_outside=False)
                    lines.append(f"  chain {target} {{ goto local-{tag}; }}")
                else:
                    chain = f"service-{tag}" if external == internal else f"cluster-{tag}"
                    if chain != f"service-{tag}":
                        lines += _service_chains(sp, chain, external, s, masquerade_outside=True)
                    lines.append(f"  chain {target} {{ jump mark-for-masquerade; goto {chain}; }}")
                elements["service-ips"] += [f"{k} : goto {target}" for k in externals]
                if sp.node_port:
                    elements["service-nodeports"].append(f"{proto} . {sp.node_port} : goto {target}")
            else:
                elements["no-endpoint-services"] += [f"{k} : goto reject-chain" for k in externals]
                if sp.node_port:
                    elements["no-endpoint-nodeports"].append(
                        f"{proto} . {sp.node_port} : goto reject-chain")
    return "\n".join(lines) + "\n", {name: _first_per_key(items)
                                      for name, items in elements.items()}


def _first_per_key(items: list[str]) -> list[str]:
    """One element per key (two Services claiming one address and port: the first in
    order keeps it), so a sync can never fail on a duplicate."""
    seen: set[str] = set()
    out = []
    for item in items:
        key = item.split(" : ", 1)[0]
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _service_chains(sp: ServicePort, chain: str, endpoints: list[Endpoint], s: ProxySettings,
                    masquerade_outside: bool) -> list[str]:
    proto = PROTOCOLS[sp.protocol]
    lines: list[str] = []
    rules: list[str] = []
    if masquerade_outside:
        rules.append(f"ip saddr != {s.cluster_cidr} jump mark-for-masquerade")
    ep_chains = []
    for ep in endpoints:
        name = f"{chain}__{ep.ip}/{ep.port}"
        ep_chain = f"endpoint-{short_hash(name)}-{sp.id[:160]}__{ep.ip}/{ep.port}"
        ep_chains.append(ep_chain)
        ep_rules = [f"ip saddr {ep.ip} jump mark-for-masquerade"]
        if sp.affinity_seconds:  # sessionAffinity ClientIP: one timed set per endpoint
            affinity = f"affinity-{short_hash(name)}"
            lines.append(f"  set {affinity} {{ type ipv4_addr; flags dynamic,timeout; "
                         f"timeout {sp.affinity_seconds}s; }}")
            rules.append(f"ip saddr @{affinity} goto {ep_chain}")
            ep_rules.append(f"update @{affinity} {{ ip saddr }}")
        ep_rules.append(f"meta l4proto {proto} dnat to {ep.ip}:{ep.port}")
        lines.append(f"  chain {ep_chain} {{ " + "; ".join(ep_rules) + "; }")
    choices = ", ".join(f"{i} : goto {c}" for i, c in enumerate(ep_chains))
    rules.append(f"numgen random mod {len(ep_chains)} vmap {{ {choices} }}")
    lines.append(f"  chain {chain} {{ " + "; ".join(rules) + "; }")
    return lines


def script(ports: list[ServicePort], s: ProxySettings) -> str:
    """The whole table, replaced in one transaction."""
    body, elements = table_body(ports, s)
    out = [f"table ip {s.table} {{}}", f"delete table ip {s.table}", f"table ip {s.table} {{",
           body.rstrip("\n"), "}"]
    for name, items in elements.items():
        if items:
            out.append(f"add element ip {s.table} {name} {{ " + ", ".join(items) + " }")
    return "\n".join(out) + "\n"
