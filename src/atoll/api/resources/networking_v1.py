"""networking.k8s.io/v1: network policies (validated as upstream validates them), ingresses
and their classes, and the Service address allocator's objects (ServiceCIDR, IPAddress)."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from atoll.api import errors, validation
from atoll.api.resources.base import Kind
from atoll.api.resourcetype import STATUS, builtin
from atoll.api.strategy import Strategy

NETWORKPOLICIES = builtin("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", True,
                          short_names=("netpol",))
INGRESSES = builtin("networking.k8s.io", "v1", "Ingress", "ingresses", True,
                    short_names=("ing",), subresources=(STATUS,))
INGRESSCLASSES = builtin("networking.k8s.io", "v1", "IngressClass", "ingressclasses", False)
SERVICECIDRS = builtin("networking.k8s.io", "v1", "ServiceCIDR", "servicecidrs", False,
                       subresources=(STATUS,))
IPADDRESSES = builtin("networking.k8s.io", "v1", "IPAddress", "ipaddresses", False)

#: the built-in IngressClass (the cluster's default): every host's router serves it
INGRESS_CLASS = "atoll"


def ingress_is_atolls(ingress: dict[str, Any]) -> bool:
    """Class ``atoll``, or no class at all (ours is the default class); the legacy
    ``kubernetes.io/ingress.class`` annotation counts as a class."""
    name = (ingress.get("spec") or {}).get("ingressClassName")
    legacy = ((ingress.get("metadata") or {}).get("annotations") or {}) \
        .get("kubernetes.io/ingress.class")
    return (name or legacy or INGRESS_CLASS) == INGRESS_CLASS


# -- NetworkPolicy validation (upstream's ValidateNetworkPolicy) ----------------------------------
PROTOCOLS = ["TCP", "UDP", "SCTP"]
POLICY_TYPES = ["Ingress", "Egress"]
_CIDR_EXAMPLE = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"
_PORT_RANGE = "must be between 1 and 65535, inclusive"
_IANA_SVC_NAME = re.compile(r"^[-a-z0-9]+$")


def parse_cidr(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """A CIDR as Go's ``ParseCIDRSloppy`` reads it (host bits allowed, IPv4 octets with leading
    zeros read as decimal), as its network; None when it is not one.  The agents read
    ipBlocks with this too, so a CIDR the API takes is one they can program."""
    if not isinstance(value, str) or value.count("/") != 1:
        return None
    addr, _, bits = value.partition("/")
    if not bits.isdigit():
        return None
    if "." in addr and ":" not in addr:
        octets = addr.split(".")
        if len(octets) != 4 or not all(o.isdigit() and len(o) <= 3 for o in octets):
            return None
        addr = ".".join(str(int(o)) for o in octets)
    try:
        return ipaddress.ip_network(f"{addr}/{bits}", strict=False)
    except ValueError:
        return None


def port_name_problems(name: str) -> list[str]:
    """IsValidPortName: an IANA_SVC_NAME (RFC 6335)."""
    out = []
    if len(name) > 15:
        out.append("must be no more than 15 characters")
    if not _IANA_SVC_NAME.match(name):
        out.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if "--" in name:
        out.append("must not contain consecutive hyphens")
    if not re.search(r"[a-z]", name):
        out.append("must contain at least one letter (a-z)")
    if name.startswith("-") or name.endswith("-"):
        out.append("must not begin or end with a hyphen")
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def selector_causes(sel: Any, path: str, allow_bad_values: bool = False) -> list[errors.Cause]:
    """metav1 ValidateLabelSelector, label values in ``In``/``NotIn`` checked too (upstream's
    default since 1.28; an update may keep a bad value its old object already had)."""
    if sel is None:
        return []
    if not isinstance(sel, dict):
        return [errors.invalid_value(path, sel, "must be an object")]
    causes = validation.validate_labels(sel.get("matchLabels"), f"{path}.matchLabels")
    exprs = sel.get("matchExpressions")
    if exprs is None:
        return causes
    if not isinstance(exprs, list):
        return causes + [errors.invalid_value(f"{path}.matchExpressions", exprs,
                                              "must be a list")]
    for i, expr in enumerate(exprs):
        at = f"{path}.matchExpressions[{i}]"
        if not isinstance(expr, dict):
            causes.append(errors.invalid_value(at, expr, "must be an object"))
            continue
        op, values = expr.get("operator"), expr.get("values")
        if values is not None and not isinstance(values, list):
            causes.append(errors.invalid_value(f"{at}.values", values, "must be a list"))
            values = []
        if op in ("In", "NotIn"):
            if not values:
                causes.append(errors.Cause(
                    "FieldValueRequired",
                    "Required value: must be specified when `operator` is 'In' or 'NotIn'",
                    f"{at}.values"))
        elif op in ("Exists", "DoesNotExist"):
            if values:
                causes.append(errors.forbidden_field(
                    f"{at}.values", "may not be specified when `operator` is 'Exists' or "
                                    "'DoesNotExist'"))
        else:
            causes.append(errors.invalid_value(f"{at}.operator", op if op is not None else "",
                                               "not a valid selector operator"))
        key = expr.get("key")
        if not isinstance(key, str):
            causes.append(errors.invalid_value(f"{at}.key", key, "must be a string"))
        else:
            causes += [errors.invalid_value(f"{at}.key", key, m)
                       for m in validation.is_qualified_name(key)]
        for j, v in enumerate(values or []):
            if not isinstance(v, str):
                causes.append(errors.invalid_value(f"{at}.values[{j}]", v, "must be a string"))
            elif not allow_bad_values:
                causes += [errors.invalid_value(f"{at}.values[{j}]", v, m)
                           for m in validation.is_valid_label_value(v)]
    return causes


def _port_causes(port: Any, path: str) -> list[errors.Cause]:
    if not isinstance(port, dict):
        return [errors.invalid_value(path, port, "must be an object")]
    causes = []
    proto = port.get("protocol")
    if proto is not None and proto not in PROTOCOLS:
        causes.append(errors.not_supported(f"{path}.protocol", proto, PROTOCOLS))
    number, end = port.get("port"), port.get("endPort")
    if end is not None and not _is_int(end):
        return causes + [errors.invalid_value(f"{path}.endPort", end, "must be an integer")]
    if number is None:
        if end is not None:
            causes.append(errors.invalid_value(f"{path}.endPort", end,
                                               "may not be specified when `port` is not "
                                               "specified"))
    elif _is_int(number):
        if not 1 <= number <= 65535:
            causes.append(errors.invalid_value(f"{path}.port", number, _PORT_RANGE))
        if end is not None:
            if end < number:
                causes.append(errors.invalid_value(f"{path}.endPort", end,
                                                   "must be greater than or equal to `port`"))
            if not 1 <= end <= 65535:
                causes.append(errors.invalid_value(f"{path}.endPort", end, _PORT_RANGE))
    elif isinstance(number, str):
        if end is not None:
            causes.append(errors.invalid_value(f"{path}.endPort", end,
                                               "may not be specified when `port` is "
                                               "non-numeric"))
        causes += [errors.invalid_value(f"{path}.port", number, m)
                   for m in port_name_problems(number)]
    else:
        causes.append(errors.invalid_value(f"{path}.port", number,
                                           "must be an integer or a port name"))
    return causes


def _ip_block_causes(block: Any, path: str, known: set[str]) -> list[errors.Cause]:
    if not isinstance(block, dict):
        return [errors.invalid_value(path, block, "must be an object")]
    cidr = block.get("cidr")
    if not cidr:
        return [errors.required(f"{path}.cidr")]
    net = parse_cidr(cidr)
    if net is None:
        return [] if cidr in known else [errors.invalid_value(f"{path}.cidr", cidr,
                                                              _CIDR_EXAMPLE)]
    excepts = block.get("except")
    if excepts is None:
        return []
    if not isinstance(excepts, list):
        return [errors.invalid_value(f"{path}.except", excepts, "must be a list")]
    causes = []
    for i, value in enumerate(excepts):
        at = f"{path}.except[{i}]"
        inner = parse_cidr(value)
        if inner is None:
            if value not in known:
                causes.append(errors.invalid_value(at, value, _CIDR_EXAMPLE))
            continue
        if not _strictly_inside(inner, net):
            causes.append(errors.invalid_value(at, value, "must be a strict subset of `cidr`"))
    return causes


def _strictly_inside(inner: ipaddress.IPv4Network | ipaddress.IPv6Network,
                     net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    """Upstream's test: ``net`` holds ``inner``'s first address (an IPv4-mapped IPv6 one
    counting as IPv4, as Go's ``IPNet.Contains`` has it) and ``inner``'s mask is longer."""
    first: ipaddress.IPv4Address | ipaddress.IPv6Address = inner.network_address
    if net.version == 4 and isinstance(first, ipaddress.IPv6Address) and first.ipv4_mapped:
        first = first.ipv4_mapped
    return first.version == net.version and first in net and inner.prefixlen > net.prefixlen


def _peer_causes(peer: Any, path: str, known: set[str], bad_values: bool) -> list[errors.Cause]:
    if not isinstance(peer, dict):
        return [errors.invalid_value(path, peer, "must be an object")]
    causes: list[errors.Cause] = []
    count = 0
    for field in ("podSelector", "namespaceSelector"):
        if peer.get(field) is not None:
            count += 1
            causes += selector_causes(peer[field], f"{path}.{field}", bad_values)
    if peer.get("ipBlock") is not None:
        count += 1
        causes += _ip_block_causes(peer["ipBlock"], f"{path}.ipBlock", known)
    if count == 0:
        causes.append(errors.Cause("FieldValueRequired", "Required value: must specify a peer",
                                   path))
    elif count > 1 and peer.get("ipBlock") is not None:
        causes.append(errors.forbidden_field(path, "may not specify both ipBlock and another "
                                                   "peer"))
    return causes


def _cidrs(spec: dict[str, Any]) -> set[str]:
    """Every ipBlock CIDR and except of a stored policy: an update may keep them as they are."""
    out: set[str] = set()
    for field, peers in (("ingress", "from"), ("egress", "to")):
        for rule in _items(spec.get(field)):
            for peer in _items(rule.get(peers) if isinstance(rule, dict) else None):
                block = peer.get("ipBlock") if isinstance(peer, dict) else None
                if isinstance(block, dict):
                    out |= {v for v in [block.get("cidr"), *_items(block.get("except"))]
                            if isinstance(v, str)}
    return out


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def network_policy_causes(spec: Any, known_cidrs: set[str] | None = None,
                          bad_values: bool = False) -> list[errors.Cause]:
    """ValidateNetworkPolicySpec, with upstream's field paths and words."""
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        return [errors.invalid_value("spec", spec, "must be an object")]
    known = known_cidrs or set()
    causes = selector_causes(spec.get("podSelector"), "spec.podSelector", bad_values)
    for field, peers in (("ingress", "from"), ("egress", "to")):
        rules = spec.get(field)
        if rules is None:
            continue
        if not isinstance(rules, list):
            causes.append(errors.invalid_value(f"spec.{field}", rules, "must be a list"))
            continue
        for i, rule in enumerate(rules):
            at = f"spec.{field}[{i}]"
            if not isinstance(rule, dict):
                causes.append(errors.invalid_value(at, rule, "must be an object"))
                continue
            for key in ("ports", peers):
                items = rule.get(key)
                if items is not None and not isinstance(items, list):
                    causes.append(errors.invalid_value(f"{at}.{key}", items, "must be a list"))
            ports = rule.get("ports") if isinstance(rule.get("ports"), list) else []
            for j, port in enumerate(ports):
                causes += _port_causes(port, f"{at}.ports[{j}]")
            items = rule.get(peers) if isinstance(rule.get(peers), list) else []
            for j, peer in enumerate(items):
                causes += _peer_causes(peer, f"{at}.{peers}[{j}]", known, bad_values)
    types = spec.get("policyTypes")
    if types is not None:
        if not isinstance(types, list):
            causes.append(errors.invalid_value("spec.policyTypes", types, "must be a list"))
        elif len(types) > len(POLICY_TYPES):
            causes.append(errors.invalid_value("spec.policyTypes", types,
                                               "may not specify more than two policyTypes"))
        else:
            causes += [errors.not_supported(f"spec.policyTypes[{i}]", t, POLICY_TYPES)
                       for i, t in enumerate(types) if t not in POLICY_TYPES]
    return causes


class NetworkPolicyStrategy(Strategy):
    """Upstream's ValidateNetworkPolicy and ValidateNetworkPolicyUpdate: a malformed selector,
    CIDR or port is a 422 naming the field, so no agent ever has to guess what it meant."""

    def validate(self, rt, obj):  # type: ignore[no-untyped-def]
        return network_policy_causes(obj.get("spec"))

    def validate_update(self, svc, rt, old, new):  # type: ignore[no-untyped-def]
        old_spec = old.get("spec") if isinstance(old.get("spec"), dict) else {}
        # a stored policy whose podSelector already had a bad label value may keep such values
        bad_values = bool(selector_causes(old_spec.get("podSelector"), "", False))
        causes = network_policy_causes(new.get("spec"), _cidrs(old_spec), bad_values)
        if causes:
            raise errors.invalid(rt.kind, new["metadata"].get("name", ""), causes, rt.group)


NETWORKPOLICY = Kind(NETWORKPOLICIES, NetworkPolicyStrategy())
INGRESS = Kind(INGRESSES)
INGRESSCLASS = Kind(INGRESSCLASSES)
SERVICECIDR = Kind(SERVICECIDRS)
IPADDRESS = Kind(IPADDRESSES)
