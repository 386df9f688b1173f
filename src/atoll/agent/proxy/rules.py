"""Services and their EndpointSlices as one nftables table, laid out as kube-proxy's nftables
mode (wave2-notes §2.1): verdict maps keyed by address . protocol . port, a chain per Service
port picking an endpoint at random, a chain per endpoint doing the DNAT, masquerading for
traffic from outside the cluster (and hairpin), a reject for Service ports with no
endpoints, and ``loadBalancerSourceRanges`` as a firewall chain per Service port reached
through the ``firewall-ips`` map before DNAT.  A Service that cannot be expressed (a value
nft would refuse) is left out and named in ``problems``, so it never fails the whole table;
addresses of the other family are ignored, as an IPv4 kube-proxy does.
Pure: the same inputs give the same script.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from atoll.agent.host.nft import PROTOCOLS, short_hash
from atoll.agent.host.nfttable import Present, Table, full_sync

Obj = dict[str, Any]
MASQ_MARK = "0x4000"
AFFINITY_TIMEOUT = 10800


@dataclass(frozen=True)
class ProxySettings:
    table: str
    node_name: str
    #: every pod range (traffic from them keeps its source address)
    cluster_cidr: str
    #: this host's address: a source range holding it also admits the LB addresses
    node_ip: str = ""


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
    #: status.loadBalancer.ingress addresses (subject to ``source_ranges``)
    lb_ips: list[str] = field(default_factory=list)
    #: IPv4 loadBalancerSourceRanges; None: no firewall; []: ranges of the other family
    #: only, so no IPv4 source is allowed
    source_ranges: list[str] | None = None

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}/{PROTOCOLS[self.protocol]}/{self.port_name or self.port}"



class Unexpressible(ValueError):
    """A value of a Service that no rule can carry."""


def _ipv4(value: Any, field_name: str) -> str | None:
    """``value`` as an IPv4 address; None for an IPv6 one (the other table's)."""
    try:
        ip = ipaddress.ip_address(str(value).strip())
    except ValueError:
        raise Unexpressible(f"{field_name}: {value!r} is not an IP address") from None
    return str(ip) if ip.version == 4 else None


def source_ranges(spec: Obj, annotations: dict[str, Any]) -> list[str] | None:
    """The Service's IPv4 source ranges (the field, else the legacy annotation), as
    networks; None when it has none."""
    raw: Any = spec.get("loadBalancerSourceRanges")
    where = "spec.loadBalancerSourceRanges"
    if not raw:
        legacy = annotations.get("service.beta.kubernetes.io/load-balancer-source-ranges")
        raw = [r for r in str(legacy).split(",") if r.strip()] if legacy else []
        where = "the load-balancer-source-ranges annotation"
    if not raw:
        return None
    if not isinstance(raw, list):
        raise Unexpressible(f"{where}: not a list")
    out = []
    for i, value in enumerate(raw):
        try:
            net = ipaddress.ip_network(str(value).strip(), strict=False)
        except ValueError:
            raise Unexpressible(f"{where}[{i}]: {value!r} is not a CIDR") from None
        if net.version == 4:
            out.append(str(net))
    return sorted(set(out))


def _port(value: Any, field_name: str, low: int) -> int:
    if value is None:
        value = 0
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= 65535:
        raise Unexpressible(f"{field_name}: {value!r} is not a port number")
    return value


def _service_ports(svc: Obj, slices: list[Obj]) -> list[ServicePort]:
    meta, spec = svc["metadata"], svc.get("spec") or {}
    ip = _ipv4(spec.get("clusterIP"), "spec.clusterIP")
    if ip is None:
        return []  # an IPv6 Service: not this table's
    affinity = 0
    if spec.get("sessionAffinity") == "ClientIP":
        timeout = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}) \
            .get("timeoutSeconds") or AFFINITY_TIMEOUT
        if not isinstance(timeout, int) or not 0 < timeout <= 86400:
            raise Unexpressible(f"sessionAffinityConfig.clientIP.timeoutSeconds: {timeout!r}")
        affinity = timeout
    external = [a for i, v in enumerate(spec.get("externalIPs") or [])
                if (a := _ipv4(v, f"spec.externalIPs[{i}]"))]
    lb_ips = [a for i, v in enumerate(((svc.get("status") or {}).get("loadBalancer") or {})
                                      .get("ingress") or [])
              if isinstance(v, dict) and v.get("ip")
              and (a := _ipv4(v["ip"], f"status.loadBalancer.ingress[{i}].ip"))]
    ranges = source_ranges(spec, meta.get("annotations") or {}) if lb_ips else None
    out = []
    for i, p in enumerate(spec.get("ports") or []):
        if not isinstance(p, dict) or p.get("protocol", "TCP") not in PROTOCOLS:
            continue
        sp = ServicePort(
            meta.get("namespace", ""), meta.get("name", ""), str(p.get("name") or ""),
            p.get("protocol", "TCP"), _port(p.get("port"), f"spec.ports[{i}].port", 1),
            _port(p.get("nodePort"), f"spec.ports[{i}].nodePort", 0), ip, external,
            spec.get("internalTrafficPolicy") == "Local",
            spec.get("externalTrafficPolicy") == "Local", affinity,
            lb_ips=lb_ips, source_ranges=ranges)
        if not _NAME.fullmatch(sp.port_name):
            raise Unexpressible(f"spec.ports[{i}].name: {sp.port_name!r}")
        sp.endpoints = endpoints_of(slices, sp.port_name, sp.protocol)
        out.append(sp)
    return out


#: what may go into a chain name (port names are IANA service names)
_NAME = re.compile(r"[a-z0-9-]{0,63}")


def service_ports(services: Iterable[Obj], slices_of: Any,
                  problems: list[str] | None = None,
                  excluded: Iterable[str] = ()) -> list[ServicePort]:
    """Every proxied port of every Service (not headless, not ExternalName), with the
    endpoints its slices give that port.  A Service that cannot be expressed is left out
    and reported in ``problems`` as ``Service ns/name: why``; so are ``excluded`` ones
    (``ns/name``: nft refused them)."""
    out: list[ServicePort] = []
    skip = set(excluded)
    for svc in services:
        meta, spec = svc["metadata"], svc.get("spec") or {}
        ip = spec.get("clusterIP")
        if spec.get("type") == "ExternalName" or not ip or ip == "None":
            continue
        key = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        if key in skip:
            continue
        try:
            ports = _service_ports(svc, slices_of(meta.get("namespace", ""),
                                                  meta.get("name", "")))
        except Unexpressible as e:
            if problems is not None:
                problems.append(f"Service {key}: {e}")
            continue
        out += ports
    return sorted(out, key=lambda s: s.id)


#: a Service's own chains name it: ``<kind>-<hash>-<ns>/<name>/<proto>/<port>``
_OWNED = re.compile(r"\b(?:service|endpoint|external|local|cluster|firewall)-[A-Z2-7]{8}-"
                    r"([a-z0-9-]+)/([a-z0-9-]+)/")


def owner(fragment: str) -> str | None:
    """The Service (``ns/name``) a line or element of our script belongs to, if any."""
    found = {f"{m.group(1)}/{m.group(2)}" for m in _OWNED.finditer(fragment)}
    return found.pop() if len(found) == 1 else None


def endpoints_of(slices: Iterable[Obj], port_name: str, protocol: str) -> list[Endpoint]:
    """The endpoints a Service's slices give its port ``port_name`` (the Ingress router
    resolves its backends the same way)."""
    found: dict[tuple[str, int], Endpoint] = {}
    for sl in slices:
        if sl.get("addressType") != "IPv4":
            continue
        port = next((q.get("port") for q in sl.get("ports") or []
                     if isinstance(q, dict) and str(q.get("name") or "") == port_name
                     and q.get("protocol", "TCP") == protocol), None)
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


BASE_CHAINS = {
    # before DNAT, so the firewall sees the address the client asked for
    "filter-prerouting-pre-dnat": ("type filter hook prerouting priority dstnat - 10; "
                                   "policy accept;", ["ct state new jump firewall-check"]),
    "filter-output-pre-dnat": ("type filter hook output priority -110; policy accept;",
                               ["ct state new jump firewall-check"]),
    "nat-prerouting": ("type nat hook prerouting priority dstnat; policy accept;",
                       ["jump services"]),
    "nat-output": ("type nat hook output priority -100; policy accept;", ["jump services"]),
    "nat-postrouting": ("type nat hook postrouting priority srcnat; policy accept;",
                        ["jump masquerading"]),
    "filter-forward": ("type filter hook forward priority filter; policy accept;",
                       ["ct state new jump service-endpoints-check"]),
    "filter-output": ("type filter hook output priority filter; policy accept;",
                      ["ct state new jump service-endpoints-check"]),
    "filter-input": ("type filter hook input priority filter; policy accept;",
                     ["ct state new jump service-endpoints-check",
                      "ct state new fib daddr type local meta l4proto . th dport "
                      "vmap @no-endpoint-nodeports"]),
}
HELPER_CHAINS = {
    "firewall-check": ["ip daddr . meta l4proto . th dport vmap @firewall-ips"],
    "service-endpoints-check": ["ip daddr . meta l4proto . th dport vmap @no-endpoint-services"],
    "reject-chain": ["reject"],
    "mark-for-masquerade": [f"meta mark set meta mark or {MASQ_MARK}"],
    "masquerading": [f"meta mark and {MASQ_MARK} == 0 return",
                     f"meta mark set meta mark xor {MASQ_MARK}", "masquerade fully-random"],
    "services": ["ip daddr . meta l4proto . th dport vmap @service-ips",
                 "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport "
                 "vmap @service-nodeports"],
}


def table(ports: list[ServicePort], s: ProxySettings) -> Table:
    """The whole table (chains, maps, elements) for ``ports``."""
    t = Table("ip", s.table)
    t.add_store("map", "service-ips", "type ipv4_addr . inet_proto . inet_service : verdict;")
    t.add_store("map", "service-nodeports", "type inet_proto . inet_service : verdict;")
    t.add_store("map", "no-endpoint-services",
                "type ipv4_addr . inet_proto . inet_service : verdict;")
    t.add_store("map", "no-endpoint-nodeports", "type inet_proto . inet_service : verdict;")
    t.add_store("map", "firewall-ips", "type ipv4_addr . inet_proto . inet_service : verdict;")
    for name, (head, base_rules) in BASE_CHAINS.items():
        t.add_chain(name, base_rules, head)
    for name, helper_rules in HELPER_CHAINS.items():
        t.add_chain(name, helper_rules)
    for sp in ports:
        proto = PROTOCOLS[sp.protocol]
        tag = f"{short_hash(sp.id)}-{sp.id}"
        internal = usable(sp.endpoints, sp.internal_local, s.node_name)
        external = usable(sp.endpoints, sp.external_local, s.node_name)
        cluster_key = f"{sp.cluster_ip} . {proto} . {sp.port}"
        if sp.lb_ips and sp.source_ranges is not None:
            _firewall(t, sp, f"firewall-{tag}", s)
        if internal:
            _service_chains(t, sp, f"service-{tag}", internal, s, masquerade_outside=True)
            t.add_element("service-ips", cluster_key, f"goto service-{tag}")
        else:
            t.add_element("no-endpoint-services", cluster_key, "goto reject-chain")
        externals = [f"{ip} . {proto} . {sp.port}" for ip in (*sp.external_ips, *sp.lb_ips)]
        if not (sp.node_port or externals):
            continue
        if not external:
            for key in externals:
                t.add_element("no-endpoint-services", key, "goto reject-chain")
            if sp.node_port:
                t.add_element("no-endpoint-nodeports", f"{proto} . {sp.node_port}",
                              "goto reject-chain")
            continue
        target = f"external-{tag}"
        if sp.external_local:  # the client's address is kept: no masquerade
            _service_chains(t, sp, f"local-{tag}", external, s, masquerade_outside=False)
            t.add_chain(target, [f"goto local-{tag}"])
        else:
            chain = f"service-{tag}" if external == internal else f"cluster-{tag}"
            if chain != f"service-{tag}":
                _service_chains(t, sp, chain, external, s, masquerade_outside=True)
            t.add_chain(target, ["jump mark-for-masquerade", f"goto {chain}"])
        for key in externals:
            t.add_element("service-ips", key, f"goto {target}")
        if sp.node_port:
            t.add_element("service-nodeports", f"{proto} . {sp.node_port}", f"goto {target}")
    return t


def _firewall(t: Table, sp: ServicePort, chain: str, s: ProxySettings) -> None:
    """loadBalancerSourceRanges: new connections to the LB addresses from elsewhere are
    dropped before DNAT (NodePorts and cluster IPs are not subject to them, as upstream).
    A range holding this host's address also admits the LB addresses as sources: a host
    reaching a VIP it holds itself may come from that VIP."""
    ranges = list(sp.source_ranges or [])
    if s.node_ip and any(ipaddress.ip_address(s.node_ip) in ipaddress.ip_network(r)
                         for r in ranges):
        ranges += sp.lb_ips
    rule = f"ip saddr != {{ {', '.join(ranges)} }} drop" if ranges else "drop"
    t.add_chain(chain, [rule])
    for ip in sp.lb_ips:
        t.add_element("firewall-ips", f"{ip} . {PROTOCOLS[sp.protocol]} . {sp.port}",
                      f"goto {chain}")


def _service_chains(t: Table, sp: ServicePort, chain: str, endpoints: list[Endpoint],
                    s: ProxySettings, masquerade_outside: bool) -> None:
    proto = PROTOCOLS[sp.protocol]
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
            # the timeout is in the name: a changed one is a new set, never a failed ``add``
            affinity = f"affinity-{short_hash(f'{name}/{sp.affinity_seconds}')}"
            t.add_store("set", affinity, f"type ipv4_addr; flags dynamic,timeout; "
                        f"timeout {sp.affinity_seconds}s;", dynamic=True)
            rules.append(f"ip saddr @{affinity} goto {ep_chain}")
            ep_rules.append(f"update @{affinity} {{ ip saddr }}")
        ep_rules.append(f"meta l4proto {proto} dnat to {ep.ip}:{ep.port}")
        t.add_chain(ep_chain, ep_rules)
    choices = ", ".join(f"{i} : goto {c}" for i, c in enumerate(ep_chains))
    rules.append(f"numgen random mod {len(ep_chains)} vmap {{ {choices} }}")
    t.add_chain(chain, rules)


def script(ports: list[ServicePort], s: ProxySettings) -> str:
    """The whole table as one transaction onto an absent or empty table (a sync onto the
    kernel's current table is ``nfttable.full_sync`` with what it holds)."""
    return full_sync(table(ports, s), Present())
