"""Pods and their scheduling constraints, parsed once per object version.

A ``PodInfo`` holds everything the filters and scores look at, in ready-to-use
form (integers, compiled selectors, tuples), so the per-node checks do no
parsing.  Objects come from the API and may be hostile: every odd field is
recorded in ``problems`` (the pod is then reported unschedulable with that
message) instead of raising.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from atoll.api import errors, selectors
from atoll.controllers.capacity import Resources, pod_requests

NO_SCHEDULE, PREFER_NO_SCHEDULE, NO_EXECUTE = "NoSchedule", "PreferNoSchedule", "NoExecute"
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
HOSTNAME_LABEL = "kubernetes.io/hostname"
ZONE_LABEL = "topology.kubernetes.io/zone"
_NODE_OPERATORS = {"In": selectors.IN, "NotIn": selectors.NOT_IN, "Exists": selectors.EXISTS,
                   "DoesNotExist": selectors.DOES_NOT_EXIST, "Gt": selectors.GREATER_THAN,
                   "Lt": selectors.LESS_THAN}


# -- taints and tolerations -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str
    effect: str


@dataclass(frozen=True, slots=True)
class Toleration:
    key: str
    operator: str
    value: str
    effect: str

    def tolerates(self, taint: Taint) -> bool:
        """v1.Toleration.ToleratesTaint: an empty key with Exists tolerates every taint."""
        if self.effect and self.effect != taint.effect:
            return False
        if self.key and self.key != taint.key:
            return False
        if self.operator == "Exists":
            return True
        if self.operator in ("", "Equal"):
            return self.value == taint.value
        return False


def tolerated(tolerations: tuple[Toleration, ...], taint: Taint) -> bool:
    for t in tolerations:
        if t.tolerates(taint):
            return True
    return False


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def parse_taints(value: Any) -> tuple[Taint, ...]:
    """A node's ``spec.taints``; malformed entries are skipped."""
    if not isinstance(value, list):
        return ()
    return tuple(Taint(_str(t.get("key")), _str(t.get("value")), _str(t.get("effect")))
                 for t in value if isinstance(t, dict) and t.get("key"))


def parse_tolerations(value: Any, problems: list[str]) -> tuple[Toleration, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.append("spec.tolerations: must be a list")
        return ()
    out = []
    for i, t in enumerate(value):
        if not isinstance(t, dict):
            problems.append(f"spec.tolerations[{i}]: must be an object")
            continue
        out.append(Toleration(_str(t.get("key")), _str(t.get("operator")),
                              _str(t.get("value")), _str(t.get("effect"))))
    return tuple(out)


# -- node affinity ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class NodeTerm:
    """One nodeSelectorTerm: label requirements and ``metadata.name`` requirements, ANDed."""

    labels: tuple[selectors.Requirement, ...] = ()
    names: tuple[tuple[bool, frozenset[str]], ...] = ()  # (In?, values)
    #: an empty term matches no node (upstream's rule)
    empty: bool = False

    def matches(self, name: str, labels: dict[str, str]) -> bool:
        if self.empty:
            return False
        for r in self.labels:
            if not r.matches(labels):
                return False
        for is_in, values in self.names:
            if (name in values) != is_in:
                return False
        return True


def parse_node_term(term: Any, where: str, problems: list[str]) -> NodeTerm:
    if not isinstance(term, dict):
        problems.append(f"{where}: must be an object")
        return NodeTerm(empty=True)
    exprs, fields = term.get("matchExpressions") or [], term.get("matchFields") or []
    if not isinstance(exprs, list) or not isinstance(fields, list):
        problems.append(f"{where}: matchExpressions and matchFields must be lists")
        return NodeTerm(empty=True)
    reqs: list[selectors.Requirement] = []
    for i, e in enumerate(exprs):
        r = _node_requirement(e, f"{where}.matchExpressions[{i}]", problems)
        if r is None:
            return NodeTerm(empty=True)
        reqs.append(r)
    names: list[tuple[bool, frozenset[str]]] = []
    for i, f in enumerate(fields):
        w = f"{where}.matchFields[{i}]"
        if not isinstance(f, dict) or f.get("key") != "metadata.name" or \
                f.get("operator") not in ("In", "NotIn"):
            problems.append(f"{w}: only metadata.name with In or NotIn is supported")
            return NodeTerm(empty=True)
        values = f.get("values") or []
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            problems.append(f"{w}.values: must be a list of strings")
            return NodeTerm(empty=True)
        names.append((f["operator"] == "In", frozenset(values)))
    return NodeTerm(tuple(reqs), tuple(names), empty=not reqs and not names)


def _node_requirement(e: Any, where: str, problems: list[str]) -> selectors.Requirement | None:
    if not isinstance(e, dict):
        problems.append(f"{where}: must be an object")
        return None
    raw_op = e.get("operator")
    op = _NODE_OPERATORS.get(raw_op) if isinstance(raw_op, str) else None
    if op is None:
        problems.append(f'{where}.operator: "{e.get("operator")}" is not a valid node selector '
                        "operator")
        return None
    values = e.get("values") or []
    if not isinstance(e.get("key"), str) or not isinstance(values, list) or \
            not all(isinstance(v, str) for v in values):
        problems.append(f"{where}: key must be a string and values a list of strings")
        return None
    try:
        return selectors.new_requirement(e["key"], op, values)
    except (errors.ApiError, TypeError, ValueError) as exc:
        problems.append(f"{where}: {exc}")
        return None


# -- pod affinity -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PodTerm:
    """A PodAffinityTerm: which pods (selector, namespaces) and over which topology key."""

    selector: selectors.LabelSelector
    topology_key: str
    namespaces: frozenset[str]
    #: None: only ``namespaces``; otherwise namespaces whose labels it matches are added
    namespace_selector: selectors.LabelSelector | None
    weight: int = 0

    def matches(self, pod: PodInfo, ns_labels: Callable[[str], dict[str, str]]) -> bool:
        if pod.namespace not in self.namespaces:
            ns_sel = self.namespace_selector
            if ns_sel is None or not ns_sel.matches(ns_labels(pod.namespace)):
                return False
        return self.selector.matches(pod.labels)


def _label_selector(sel: Any, where: str, problems: list[str]) -> selectors.LabelSelector | None:
    try:
        return selectors.label_selector_from_dict(sel)
    except (errors.ApiError, TypeError, ValueError) as exc:
        problems.append(f"{where}: {exc}")
        return None


def parse_pod_term(term: Any, namespace: str, where: str, problems: list[str],
                   weight: int = 0) -> PodTerm | None:
    if not isinstance(term, dict):
        problems.append(f"{where}: must be an object")
        return None
    key = term.get("topologyKey")
    if not isinstance(key, str) or not key:
        problems.append(f"{where}.topologyKey: Required value: can not be empty")
        return None
    sel = _label_selector(term.get("labelSelector"), f"{where}.labelSelector", problems)
    names = term.get("namespaces") or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        problems.append(f"{where}.namespaces: must be a list of strings")
        return None
    ns_sel = None
    if term.get("namespaceSelector") is not None:
        ns_sel = _label_selector(term["namespaceSelector"], f"{where}.namespaceSelector", problems)
        if ns_sel is None:
            return None
    if sel is None:
        return None
    if not names and ns_sel is None:
        names = [namespace]  # no namespaces and no selector: the pod's own namespace
    return PodTerm(sel, key, frozenset(names), ns_sel, weight)


def _pod_terms(block: Any, field_name: str, namespace: str, where: str,
               problems: list[str]) -> tuple[tuple[PodTerm, ...], tuple[PodTerm, ...]]:
    """(required terms, preferred terms with weights) of podAffinity or podAntiAffinity."""
    if block is None:
        return (), ()
    if not isinstance(block, dict):
        problems.append(f"{where}.{field_name}: must be an object")
        return (), ()
    required, preferred = [], []
    req = block.get("requiredDuringSchedulingIgnoredDuringExecution") or []
    for i, t in enumerate(req if isinstance(req, list) else []):
        term = parse_pod_term(t, namespace, f"{where}.{field_name}.required[{i}]", problems)
        if term is not None:
            required.append(term)
    pref = block.get("preferredDuringSchedulingIgnoredDuringExecution") or []
    for i, p in enumerate(pref if isinstance(pref, list) else []):
        w = f"{where}.{field_name}.preferred[{i}]"
        weight = p.get("weight") if isinstance(p, dict) else None
        if not isinstance(weight, int) or isinstance(weight, bool) or not 1 <= weight <= 100:
            problems.append(f"{w}.weight: must be in the range 1-100")
            continue
        term = parse_pod_term(p.get("podAffinityTerm"), namespace, f"{w}.podAffinityTerm",
                              problems, weight)
        if term is not None:
            preferred.append(term)
    if not isinstance(req, list) or not isinstance(pref, list):
        problems.append(f"{where}.{field_name}: terms must be lists")
    return tuple(required), tuple(preferred)


# -- topology spread --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SpreadConstraint:
    max_skew: int
    topology_key: str
    selector: selectors.LabelSelector
    min_domains: int = 1
    #: nodes the pod could not go to (node affinity/selector) are not counted as domains
    honor_node_affinity: bool = True
    #: nodes with taints the pod does not tolerate are not counted (default: they are)
    honor_taints: bool = False


def _spread_constraints(value: Any, labels: dict[str, str],
                        problems: list[str]) -> tuple[SpreadConstraint, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.append("spec.topologySpreadConstraints: must be a list")
        return ()
    out = []
    for i, c in enumerate(value):
        w = f"spec.topologySpreadConstraints[{i}]"
        if not isinstance(c, dict):
            problems.append(f"{w}: must be an object")
            continue
        if c.get("whenUnsatisfiable") != "DoNotSchedule":
            continue  # ScheduleAnyway only affects scores, which this scheduler leaves out
        skew, key, min_domains = c.get("maxSkew"), c.get("topologyKey"), c.get("minDomains", 1)
        if not isinstance(skew, int) or isinstance(skew, bool) or skew < 1:
            problems.append(f"{w}.maxSkew: must be greater than zero")
            continue
        if not isinstance(key, str) or not key:
            problems.append(f"{w}.topologyKey: Required value: can not be empty")
            continue
        if min_domains is None:
            min_domains = 1
        if not isinstance(min_domains, int) or isinstance(min_domains, bool) or min_domains < 1:
            problems.append(f"{w}.minDomains: must be greater than zero")
            continue
        sel_dict = c.get("labelSelector")
        match_keys = c.get("matchLabelKeys") or []
        if isinstance(match_keys, list) and match_keys and isinstance(sel_dict, dict) and \
                isinstance(sel_dict.get("matchExpressions") or [], list):
            # matchLabelKeys: the pod's own values for those keys join the selector
            extra = [{"key": k, "operator": "In", "values": [labels[k]]}
                     for k in match_keys if isinstance(k, str) and k in labels]
            sel_dict = dict(sel_dict, matchExpressions=list(sel_dict.get("matchExpressions")
                                                            or []) + extra)
        sel = _label_selector(sel_dict, f"{w}.labelSelector", problems)
        if sel is None:
            continue
        out.append(SpreadConstraint(skew, key, sel, min_domains,
                                    c.get("nodeAffinityPolicy") != "Ignore",
                                    c.get("nodeTaintsPolicy") == "Honor"))
    return tuple(out)


# -- the pod ----------------------------------------------------------------------------------
@dataclass(slots=True)
class PodInfo:
    key: str
    uid: str
    namespace: str
    name: str
    resource_version: str
    labels: dict[str, str]
    priority: int = 0
    node_name: str = ""
    requests: Resources = field(default_factory=Resources)
    #: cpu and memory with upstream's defaults for containers without requests (scoring)
    nonzero: Resources = field(default_factory=Resources)
    #: (hostIP, protocol, hostPort) of every container port with a hostPort
    host_ports: tuple[tuple[str, str, int], ...] = ()
    node_selector: dict[str, str] = field(default_factory=dict)
    #: None: no required node affinity; otherwise the node must match one term
    required_node_terms: tuple[NodeTerm, ...] | None = None
    preferred_node_terms: tuple[tuple[int, NodeTerm], ...] = ()
    tolerations: tuple[Toleration, ...] = ()
    affinity: tuple[PodTerm, ...] = ()
    anti_affinity: tuple[PodTerm, ...] = ()
    preferred_affinity: tuple[PodTerm, ...] = ()
    preferred_anti_affinity: tuple[PodTerm, ...] = ()
    spread: tuple[SpreadConstraint, ...] = ()
    #: uid of the controlling owner (ReplicaSet, Job, ...): its pods are spread apart
    owner_uid: str = ""
    terminating: bool = False
    #: the names of the PersistentVolumeClaims its volumes use
    claims: tuple[str, ...] = ()
    problems: list[str] = field(default_factory=list)

    @property
    def has_pod_affinity(self) -> bool:
        return bool(self.affinity or self.anti_affinity or self.preferred_affinity
                    or self.preferred_anti_affinity)

    def tolerates_unschedulable(self) -> bool:
        return tolerated(self.tolerations, Taint(UNSCHEDULABLE_TAINT, "", NO_SCHEDULE))


def _labels(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def _host_ports(spec: dict[str, Any], problems: list[str]) -> tuple[tuple[str, str, int], ...]:
    out = []
    for group in ("initContainers", "containers"):
        containers = spec.get(group)
        for c in containers if isinstance(containers, list) else []:
            ports = c.get("ports") if isinstance(c, dict) else None
            for p in ports if isinstance(ports, list) else []:
                if not isinstance(p, dict):
                    continue
                host_port = p.get("hostPort")
                if host_port in (None, 0):
                    continue
                if not isinstance(host_port, int) or isinstance(host_port, bool) or \
                        not 0 < host_port < 65536:
                    problems.append(f"spec.{group}[].ports[].hostPort: {host_port!r} is not a "
                                    "valid port number")
                    continue
                out.append((_str(p.get("hostIP")) or "0.0.0.0", _str(p.get("protocol")) or "TCP",
                            host_port))
    return tuple(out)


def _node_affinity(info: PodInfo, block: Any, problems: list[str]) -> None:
    if block is None:
        return
    if not isinstance(block, dict):
        problems.append("spec.affinity.nodeAffinity: must be an object")
        return
    where = "spec.affinity.nodeAffinity"
    required = block.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is not None:
        terms = required.get("nodeSelectorTerms") if isinstance(required, dict) else None
        if not isinstance(terms, list):
            problems.append(f"{where}.required.nodeSelectorTerms: must be a list")
            terms = []
        info.required_node_terms = tuple(
            parse_node_term(t, f"{where}.required.nodeSelectorTerms[{i}]", problems)
            for i, t in enumerate(terms))
    preferred = block.get("preferredDuringSchedulingIgnoredDuringExecution") or []
    out = []
    for i, p in enumerate(preferred if isinstance(preferred, list) else []):
        w = f"{where}.preferred[{i}]"
        weight = p.get("weight") if isinstance(p, dict) else None
        if not isinstance(weight, int) or isinstance(weight, bool) or not 1 <= weight <= 100:
            problems.append(f"{w}.weight: must be in the range 1-100")
            continue
        out.append((weight, parse_node_term(p.get("preference"), f"{w}.preference", problems)))
    info.preferred_node_terms = tuple(out)


def _owner_uid(meta: dict[str, Any]) -> str:
    refs = meta.get("ownerReferences")
    for ref in refs if isinstance(refs, list) else []:
        if isinstance(ref, dict) and ref.get("controller") is True and \
                isinstance(ref.get("uid"), str):
            return ref["uid"]
    return ""


def parse_pod(obj: dict[str, Any]) -> PodInfo:
    """Everything the scheduler needs from a pod object; never raises on odd content."""
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    namespace, name = _str(meta.get("namespace")), _str(meta.get("name"))
    labels = _labels(meta.get("labels"))
    problems: list[str] = []
    priority = spec.get("priority")
    info = PodInfo(key=f"{namespace}/{name}", uid=_str(meta.get("uid")), namespace=namespace,
                   name=name, resource_version=_str(meta.get("resourceVersion")), labels=labels,
                   priority=priority if isinstance(priority, int) else 0,
                   node_name=_str(spec.get("nodeName")), owner_uid=_owner_uid(meta),
                   terminating=bool(meta.get("deletionTimestamp")), problems=problems)
    info.requests, info.nonzero = pod_requests(spec, problems)
    info.host_ports = _host_ports(spec, problems)
    node_selector = spec.get("nodeSelector")
    if node_selector is not None and not isinstance(node_selector, dict):
        problems.append("spec.nodeSelector: must be a map of strings")
    info.node_selector = _labels(node_selector)
    if isinstance(node_selector, dict) and len(info.node_selector) != len(node_selector):
        problems.append("spec.nodeSelector: must be a map of strings")
    info.tolerations = parse_tolerations(spec.get("tolerations"), problems)
    affinity = spec.get("affinity")
    if affinity is not None and not isinstance(affinity, dict):
        problems.append("spec.affinity: must be an object")
    elif affinity:
        _node_affinity(info, affinity.get("nodeAffinity"), problems)
        info.affinity, info.preferred_affinity = _pod_terms(
            affinity.get("podAffinity"), "podAffinity", namespace, "spec.affinity", problems)
        info.anti_affinity, info.preferred_anti_affinity = _pod_terms(
            affinity.get("podAntiAffinity"), "podAntiAffinity", namespace, "spec.affinity",
            problems)
    info.spread = _spread_constraints(spec.get("topologySpreadConstraints"), labels, problems)
    info.claims = _claims(spec.get("volumes"))
    return info


def _claims(volumes: Any) -> tuple[str, ...]:
    out = []
    for vol in volumes if isinstance(volumes, list) else []:
        ref = vol.get("persistentVolumeClaim") if isinstance(vol, dict) else None
        name = ref.get("claimName") if isinstance(ref, dict) else None
        if isinstance(name, str) and name and name not in out:
            out.append(name)
    return tuple(out)
