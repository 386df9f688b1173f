"""NetworkPolicies as nftables rules for the pods on one host (upstream's semantics):

- A pod is isolated for ingress (egress) when some policy in its namespace selects it and
  lists Ingress (Egress) in ``policyTypes`` (default: Ingress, plus Egress when the policy
  has egress rules).  An isolated pod takes only what some selecting policy's rules allow;
  others take everything.  Replies to allowed connections always pass.
- A rule's peers: ``podSelector`` (the policy's namespace), ``namespaceSelector`` (pods of
  those namespaces), both (pods matching both), ``ipBlock`` (a CIDR minus its ``except``);
  no ``from``/``to``: everyone.  Its ports: number or named port (the target pod's, for
  ingress; the peers', for egress), protocol, ``endPort``; none: every port.
- Ingress is enforced on the destination's host, egress on the source's, both in the
  forward hook (with br_netfilter, traffic between pods on one bridge passes it too); the
  host's own traffic to its pods (probes) is never filtered, as upstream.
- VirtualMachines are workloads like pods: their tap hangs off the same bridge, policies
  select them by their labels, they are peers, and the host running one (its host label)
  enforces its chains.
- A rule nft could not carry (a CIDR or port that is not one) is left out and reported:
  it allows nothing, while its policy still isolates the pods it selects (never fail
  open).  A policy whose podSelector cannot be parsed (stored before the API checked it)
  isolates every workload of its namespace and allows nothing; a peer selector that cannot
  be parsed matches nobody.  IPv6 blocks are ignored: this table filters IPv4.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Iterable

from atoll.agent.host.nft import PROTOCOLS, short_hash
from atoll.agent.host.nfttable import Present, Table, full_sync
from atoll.api import errors
from atoll.api.labelselector import label_selector_from_dict
from atoll.api.resources.networking_v1 import parse_cidr
from atoll.api.vmoperator.names import HOST_LABEL

Obj = dict[str, Any]


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    ip: str
    labels: dict[str, str]
    node: str
    named_ports: dict[tuple[str, str], int]  # (name, protocol) -> number
    kind: str = "pod"  # or "vm": a VirtualMachine on the pod network


def pod_view(pod: Obj) -> Pod | None:
    status, spec, meta = pod.get("status") or {}, pod.get("spec") or {}, pod["metadata"]
    ip = status.get("podIP")
    if not ip or spec.get("hostNetwork") or status.get("phase") in ("Succeeded", "Failed"):
        return None
    ports = {}
    for c in spec.get("containers") or []:
        for p in (c or {}).get("ports") or []:
            if isinstance(p, dict) and p.get("name") and p.get("containerPort"):
                ports[(p["name"], p.get("protocol", "TCP"))] = int(p["containerPort"])
    return Pod(meta.get("namespace", ""), meta.get("name", ""), ip,
               dict(meta.get("labels") or {}), str(spec.get("nodeName") or ""), ports)


def vm_view(vm: Obj, address: str | None = None) -> Pod | None:
    """A VirtualMachine as a policy sees it: its labels, its host (the host label) and its
    address (the status's, or ``address``: what its host's agent gave it)."""
    meta = vm.get("metadata") or {}
    labels = dict(meta.get("labels") or {})
    network = (vm.get("status") or {}).get("network") or {}
    ip = network.get("primaryIP4") if isinstance(network, dict) else None
    ip = ip or address
    if not ip or not isinstance(ip, str):
        return None
    return Pod(meta.get("namespace", ""), meta.get("name", ""), ip, labels,
               str(labels.get(HOST_LABEL) or ""), {}, "vm")


def _selects(selector: Any, labels: dict[str, str]) -> bool:
    try:
        return label_selector_from_dict(selector if isinstance(selector, dict) else {}) \
            .matches(labels)
    except errors.ApiError:
        return False  # a malformed peer selector selects nobody


def _parses(selector: Any) -> bool:
    try:
        label_selector_from_dict(selector if isinstance(selector, dict) else {})
    except errors.ApiError:
        return False
    return selector is None or isinstance(selector, dict)


def _isolates(policy: Obj, labels: dict[str, str]) -> bool:
    """Whether ``policy``'s podSelector takes a workload with ``labels``: one it cannot parse
    takes every workload of its namespace (fail closed)."""
    selector = (policy.get("spec") or {}).get("podSelector")
    return _selects(selector, labels) if _parses(selector) else True


def policy_types(policy: Obj) -> set[str]:
    spec = policy.get("spec") or {}
    types = spec.get("policyTypes")
    if types:
        return {t for t in types if t in ("Ingress", "Egress")}
    return {"Ingress", "Egress"} if spec.get("egress") else {"Ingress"}


def _peer_match(peer: Obj, policy_ns: str, pods: list[Pod],
                ns_labels: dict[str, dict[str, str]]) -> tuple[list[Pod], list[str]]:
    """(pods, nft address expressions) a peer entry stands for."""
    if "ipBlock" in peer:
        block = peer.get("ipBlock") or {}
        net = _cidr(block.get("cidr"), "cidr")
        if net.version != 4:
            return [], []
        excepts = [str(_cidr(e, "except")) for e in block.get("except") or []]
        return [], [(str(net), excepts)]  # type: ignore[list-item]
    pod_sel, ns_sel = peer.get("podSelector"), peer.get("namespaceSelector")
    chosen = []
    for p in pods:
        if ns_sel is not None:
            if not _selects(ns_sel, ns_labels.get(p.namespace, {})):
                continue
        elif p.namespace != policy_ns:
            continue
        if pod_sel is not None and not _selects(pod_sel, p.labels):
            continue
        chosen.append(p)
    return chosen, []


def _cidr(value: Any, where: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """As the API reads it (Go's sloppy form: leading zeros are decimal)."""
    net = parse_cidr(value.strip() if isinstance(value, str) else value)
    if net is None:
        raise ValueError(f"{where}: {value!r} is not a CIDR")
    return net


def _number(value: Any, where: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise ValueError(f"{where}: {value!r} is not a port number")


def rule_problem(rule: Any, where: str, peer_field: str) -> str | None:
    """Why nft could not carry ``rule`` (the policy's ``where``, e.g. ``spec.ingress[0]``),
    or None."""
    if not isinstance(rule, dict):
        return f"{where}: not an object"
    try:
        for i, peer in enumerate(rule.get(peer_field) or []):
            block = peer.get("ipBlock") if isinstance(peer, dict) else None
            if block is None:
                continue
            at = f"{where}.{peer_field}[{i}].ipBlock"
            if not isinstance(block, dict):
                raise ValueError(f"{at}: not an object")
            net = _cidr(block.get("cidr"), f"{at}.cidr")
            for j, e in enumerate(block.get("except") or []):
                if _cidr(e, f"{at}.except[{j}]").version != net.version:
                    raise ValueError(f"{at}.except[{j}]: {e!r} is not of {net}'s family")
        for i, p in enumerate(rule.get("ports") or []):
            at = f"{where}.ports[{i}]"
            if not isinstance(p, dict):
                raise ValueError(f"{at}: not an object")
            port, end = p.get("port"), p.get("endPort")
            if isinstance(port, str) and not port.isdigit():
                if end is not None:
                    raise ValueError(f"{at}.endPort: not with a named port")
                continue
            if port is not None:
                _number(int(port) if isinstance(port, str) else port, f"{at}.port")
            if end is not None:
                _number(end, f"{at}.endPort")
    except ValueError as e:
        return str(e)
    return None


#: the problem key of a policy whose podSelector cannot be parsed: none of its rules count
UNPARSABLE = ("podSelector", -1)


def policy_problems(policy: Obj) -> dict[tuple[str, int], str]:
    """The rules of ``policy`` nft could not carry: (``ingress``/``egress``, index) to why."""
    spec = policy.get("spec") or {}
    out = {}
    if not _parses(spec.get("podSelector")):
        # it isolates its whole namespace (``_isolates``) and none of its rules allow anything
        return {UNPARSABLE: f"spec.podSelector: {spec.get('podSelector')!r} is not a label "
                            "selector: the policy isolates every workload of its namespace "
                            "and allows nothing"}
    for field, peer_field in (("ingress", "from"), ("egress", "to")):
        for i, rule in enumerate(spec.get(field) or []):
            problem = rule_problem(rule, f"spec.{field}[{i}]", peer_field)
            if problem:
                out[(field, i)] = problem
    return out


def _port_terms(ports: list[Obj] | None, resolve_pods: list[Pod]) -> list[str] | None:
    """nft expressions for a rule's ports; None: every port."""
    if not ports:
        return None
    terms = []
    for p in ports:
        proto = PROTOCOLS.get((p or {}).get("protocol", "TCP"))
        if proto is None:
            continue
        port = (p or {}).get("port")
        if port is None:
            terms.append(f"meta l4proto {proto}")
            continue
        if isinstance(port, str) and not port.isdigit():
            numbers = sorted({q.named_ports[(port, p.get("protocol", "TCP"))]
                              for q in resolve_pods
                              if (port, p.get("protocol", "TCP")) in q.named_ports})
            for n in numbers:
                terms.append(f"meta l4proto {proto} th dport {n}")
            continue
        end = p.get("endPort")
        span = f"{int(port)}-{int(end)}" if isinstance(end, int) and end > int(port) else str(int(port))
        terms.append(f"meta l4proto {proto} th dport {span}")
    return terms



def _pod_chains(t: Table, policies: Iterable[Obj], pods: list[Pod],
                ns_labels: dict[str, dict[str, str]], node: str,
                bad: dict[int, dict[tuple[str, int], str]]) -> None:
    """A chain per direction per selected pod of this host, and its verdict map element."""
    policies = list(policies)
    seen: set[str] = set()
    for pod in sorted((p for p in pods if p.node == node), key=lambda p: (p.ip, p.kind)):
        if pod.ip in seen:
            continue  # a stale status naming an address another workload holds now
        seen.add(pod.ip)
        for direction, field, peer_field, addr in (("Ingress", "ingress", "from", "saddr"),
                                                  ("Egress", "egress", "to", "daddr")):
            selecting = [pol for pol in policies
                         if pol["metadata"].get("namespace") == pod.namespace
                         and direction in policy_types(pol)
                         and _isolates(pol, pod.labels)]
            if not selecting:
                continue
            rules: list[str] = []
            for pol in selecting:
                if UNPARSABLE in bad.get(id(pol), {}):
                    continue  # allows nothing
                for i, rule in enumerate((pol.get("spec") or {}).get(field) or []):
                    if (field, i) in bad.get(id(pol), {}):
                        continue  # allows nothing
                    rules += _rule(rule or {}, peer_field, addr, pod, pods, ns_labels,
                                   pol["metadata"].get("namespace", ""), direction)
            who = f"{pod.namespace}/{pod.name}" if pod.kind == "pod" else \
                f"{pod.kind}.{pod.namespace}/{pod.name}"  # namespaces have no dots
            chain = f"{field}-{short_hash(who).lower()}-{who}"[:200]
            t.add_chain(chain, [*rules, "drop"])
            t.add_element(f"pod-{field}", pod.ip, f"jump {chain}")


def _rule(rule: Obj, peer_field: str, addr: str, pod: Pod, pods: list[Pod],
          ns_labels: dict[str, dict[str, str]], policy_ns: str, direction: str) -> list[str]:
    peers = rule.get(peer_field)
    if peers:
        matched: list[Pod] = []
        blocks: list[tuple[str, list[str]]] = []
        for peer in peers:
            if not isinstance(peer, dict):
                continue
            m, b = _peer_match(peer, policy_ns, pods, ns_labels)
            matched += m
            blocks += b  # type: ignore[arg-type]
        sources = [f"ip {addr} {{ {', '.join(sorted({p.ip for p in matched}))} }}"] if matched else []
        for cidr, excepts in blocks:
            term = f"ip {addr} {cidr}"
            if excepts:
                term += f" ip {addr} != {{ {', '.join(excepts)} }}"
            sources.append(term)
        if not sources:
            return []  # peers that match nobody allow nothing
    else:
        sources = [""]
        matched = pods
    ports = _port_terms(rule.get("ports"), [pod] if direction == "Ingress" else matched)
    if ports == []:
        return []  # only named ports that resolve to nothing
    out = []
    for src in sources:
        for port in ports or [""]:
            # an allowed egress returns, so the destination's ingress is still checked
            verdict = "accept" if direction == "Ingress" else "return"
            out.append(" ".join(t for t in (src, port, verdict) if t))
    return out


def table(name: str, policies: Iterable[Obj], pods: list[Pod],
          ns_labels: dict[str, dict[str, str]], node: str,
          problems: list[str] | None = None) -> Table:
    """The table for this host's pods; rules nft could not carry are left out and named
    in ``problems`` (``NetworkPolicy ns/name: field: why``)."""
    policies = list(policies)
    bad = {id(p): policy_problems(p) for p in policies}
    if problems is not None:
        for p in policies:
            meta = p["metadata"]
            problems += [f"NetworkPolicy {meta.get('namespace', '')}/{meta.get('name', '')}: "
                         f"{why}" for why in bad[id(p)].values()]
    t = Table("inet", name)
    t.add_store("map", "pod-ingress", "type ipv4_addr : verdict;")
    t.add_store("map", "pod-egress", "type ipv4_addr : verdict;")
    t.add_chain("forward", ["ct state established,related accept",
                            "ip saddr vmap @pod-egress", "ip daddr vmap @pod-ingress"],
                head="type filter hook forward priority filter - 5; policy accept;")
    _pod_chains(t, policies, pods, ns_labels, node, bad)
    return t


def script(name: str, policies: Iterable[Obj], pods: list[Pod],
           ns_labels: dict[str, dict[str, str]], node: str) -> str:
    """The whole table as one transaction onto an absent or empty table."""
    return full_sync(table(name, policies, pods, ns_labels, node), Present())
