"""What the three endpoint controllers share, as upstream's endpointutil and endpointsliceutil.

Which pods a Service's endpoints list (not finished, with an IP, terminating ones only where
the caller wants them), a named target port resolved against one pod's containers, the index
and mapper that find the Services selecting a pod, the "last change trigger time" the
dataplane's latency metrics read, the canonical Endpoints subset layout, and a tracker of
the slice versions a controller wrote (so a reconcile on a cache that has not seen its own
writes yet waits instead of creating the same slices twice).  All pure, no I/O.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable
from typing import Any

from atoll.api.resources.discovery_v1 import MANAGED_BY_LABEL, SERVICE_NAME_LABEL
from atoll.api.timestamps import parse_rfc3339

#: upstream's well-known names (k8s.io/api core/v1 and discovery/v1)
HEADLESS_LABEL = "service.kubernetes.io/headless"
TRIGGER_TIME_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"
OVER_CAPACITY_ANNOTATION = "endpoints.kubernetes.io/over-capacity"
SKIP_MIRROR_LABEL = "endpointslice.kubernetes.io/skip-mirror"
LEADER_ANNOTATION = "control-plane.alpha.kubernetes.io/leader"
LAST_APPLIED_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"
ZONE_LABEL = "topology.kubernetes.io/zone"
#: Services filed under ``<ns>/<key>=<value>`` of the first pair of their selector: a pod can
#: only match a Service whose first pair is among its own labels
SELECTOR_INDEX = "service-selector-first-pair"
#: slices filed under ``<ns>/<service name>`` (their service-name label)
SERVICE_INDEX = "endpointslice-service"
Obj = dict[str, Any]


# -- services -----------------------------------------------------------------------------------
def selector_of(service: Obj) -> dict[str, str] | None:
    """The Service's selector; None for a selectorless one (an empty map too: after a round
    trip through upstream's storage an empty selector is nil)."""
    sel = (service.get("spec") or {}).get("selector")
    if not isinstance(sel, dict) or not sel:
        return None
    return {str(k): str(v) for k, v in sel.items()}


def selects_pods(service: Obj) -> bool:
    """Whether the endpoint controllers (not someone else) fill this Service's endpoints."""
    spec = service.get("spec") or {}
    return spec.get("type") != "ExternalName" and selector_of(service) is not None


def cluster_ip_set(service: Obj) -> bool:
    ip = (service.get("spec") or {}).get("clusterIP")
    return bool(ip) and ip != "None"


def matches(selector: dict[str, str] | None, labels: dict[str, Any] | None) -> bool:
    if not selector:
        return False
    labels = labels or {}
    return all(labels.get(k) == v for k, v in selector.items())


def by_selector_first_pair(service: Obj) -> list[str]:
    sel = selector_of(service)
    if not sel:
        return []
    key = min(sel)
    return [f"{(service.get('metadata') or {}).get('namespace', '')}/{key}={sel[key]}"]


def by_slice_service(slice_: Obj) -> list[str]:
    meta = slice_.get("metadata") or {}
    name = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    return [f"{meta.get('namespace', '')}/{name}"] if isinstance(name, str) and name else []


def slice_managed_by(slice_: Obj) -> str:
    return str(((slice_.get("metadata") or {}).get("labels") or {}).get(MANAGED_BY_LABEL, ""))


def services_selecting(lookup: Callable[[str, str], list[Obj]], namespace: str,
                       label_sets: Iterable[dict[str, Any] | None]) -> set[str]:
    """Keys of the Services of ``namespace`` selecting any of ``label_sets`` (``lookup`` is
    the services informer's ``by_index``, over ``SELECTOR_INDEX``)."""
    out: set[str] = set()
    for labels in label_sets:
        for k, v in (labels or {}).items():
            for svc in lookup(SELECTOR_INDEX, f"{namespace}/{k}={v}"):
                if matches(selector_of(svc), labels):
                    meta = svc["metadata"]
                    out.add(f"{meta.get('namespace', '')}/{meta.get('name', '')}")
    return out


# -- pods -----------------------------------------------------------------------------------------
def pod_ready(pod: Obj) -> bool:
    return any(isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def pod_ips(pod: Obj) -> list[str]:
    status = pod.get("status") or {}
    ips = [p.get("ip") for p in status.get("podIPs") or [] if isinstance(p, dict)]
    ips = [ip for ip in ips if isinstance(ip, str) and ip]
    if not ips and isinstance(status.get("podIP"), str) and status["podIP"]:
        ips = [status["podIP"]]
    return ips


def ipv4_of(pod: Obj) -> str | None:
    for ip in pod_ips(pod):
        if address_type(ip) == "IPv4":
            return ip
    return None


def address_type(ip: Any) -> str | None:
    """``IPv4``/``IPv6`` for a valid address, None otherwise."""
    try:
        parsed = ipaddress.ip_address(ip)
    except (ValueError, TypeError):
        return None
    return "IPv4" if parsed.version == 4 else "IPv6"


def should_pod_be_in_endpoints(pod: Obj, include_terminating: bool) -> bool:
    """Not finished (Succeeded/Failed), has an IP, and not terminating unless asked for."""
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return False
    if not pod_ips(pod):
        return False
    return include_terminating or not (pod.get("metadata") or {}).get("deletionTimestamp")


def find_port(pod: Obj, service_port: Obj) -> int | None:
    """The Service port's target on this pod: a number as given, a name looked up in the
    containers' ports (and restartable init containers', as upstream) with the same protocol."""
    target = service_port.get("targetPort")
    if target is None or target == "" or target == 0:
        target = service_port.get("port")
    if isinstance(target, int) and not isinstance(target, bool):
        return target if target > 0 else None
    if isinstance(target, str) and target.isdigit():
        return int(target)
    if not isinstance(target, str):
        return None
    protocol = service_port.get("protocol") or "TCP"
    spec = pod.get("spec") or {}
    containers = list(spec.get("containers") or [])
    containers += [c for c in spec.get("initContainers") or []
                   if isinstance(c, dict) and c.get("restartPolicy") == "Always"]
    for c in containers:
        for p in (c.get("ports") or []) if isinstance(c, dict) else []:
            if isinstance(p, dict) and p.get("name") == target and \
                    (p.get("protocol") or "TCP") == protocol and \
                    isinstance(p.get("containerPort"), int):
                return p["containerPort"]
    return None


def should_set_hostname(pod: Obj, service: Obj) -> bool:
    """A pod's hostname is published for the Service its ``subdomain`` names (headless
    StatefulSets give each pod its DNS name this way)."""
    spec = pod.get("spec") or {}
    return bool(spec.get("hostname")) and spec.get("subdomain") == \
        service["metadata"].get("name") and \
        pod["metadata"].get("namespace") == service["metadata"].get("namespace")


def _ready_condition(pod: Obj) -> Obj | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == "Ready":
            return c
    return None


def pod_trigger_time(pod: Obj) -> float | None:
    c = _ready_condition(pod)
    return parse_rfc3339(c.get("lastTransitionTime")) if c else None


def _endpoint_facts(pod: Obj | None) -> tuple[Any, ...]:
    if pod is None:
        return ()
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    ready = _ready_condition(pod) or {}
    return (meta.get("labels"), bool(meta.get("deletionTimestamp")), pod_ips(pod),
            (pod.get("status") or {}).get("phase"), ready.get("status"),
            ready.get("lastTransitionTime"), spec.get("nodeName"), spec.get("hostname"),
            spec.get("subdomain"), meta.get("uid"))


def pod_endpoints_changed(pod: Obj, old: Obj | None) -> bool:
    """Whether a pod change can change any endpoint (status churn of containers cannot)."""
    return old is None or _endpoint_facts(pod) != _endpoint_facts(old)


# -- naming ----------------------------------------------------------------------------------------
def slice_prefix(name: str) -> str:
    """``<name>-`` as generateName, or the bare name where the dash would make it too long."""
    return f"{name}-" if len(name) + 1 <= 253 else name


def endpoint_key(ep: Obj) -> tuple[Any, ...]:
    """An endpoint's identity within a slice set (upstream's endpoint hash): addresses,
    hostname and the object it stands for; conditions and topology are its content."""
    ref = ep.get("targetRef") or {}
    return (tuple(sorted(str(a) for a in ep.get("addresses") or [])), ep.get("hostname") or "",
            ref.get("namespace") or "", ref.get("name") or "")


def ports_key(ports: Iterable[Obj] | None) -> tuple[Any, ...]:
    """A slice's port set, order-free (upstream's PortMapKey)."""
    return tuple(sorted((str(p.get("name") or ""), str(p.get("protocol") or "TCP"),
                         int(p.get("port") or 0), str(p.get("appProtocol") or ""))
                        for p in ports or [] if isinstance(p, dict)))


def ip_sort_key(ip: Any) -> tuple[int, int, str]:
    try:
        parsed = ipaddress.ip_address(ip)
        return (parsed.version, int(parsed), "")
    except (ValueError, TypeError):
        return (9, 0, str(ip))


# -- Endpoints subsets ---------------------------------------------------------------------------
def repack_subsets(subsets: Iterable[Obj] | None) -> list[Obj]:
    """Subsets in the canonical layout (upstream's RepackSubsets): each address once per port
    set, not-ready winning over ready for the same address and port, addresses grouped by the
    exact set of ports they offer, everything sorted, so two equal sets compare equal."""
    sentinel: tuple[Any, ...] = ()
    addresses: dict[tuple[str, str], Obj] = {}
    ports: dict[tuple[Any, ...], Obj] = {}
    readiness: dict[tuple[Any, ...], dict[tuple[str, str], bool]] = {}
    for subset in subsets or []:
        if not isinstance(subset, dict):
            continue
        port_list = [p for p in subset.get("ports") or [] if isinstance(p, dict)]
        for port in port_list or [None]:
            pk = sentinel if port is None else ports_key([port])
            if port is not None:
                ports.setdefault(pk, port)
            for field, ready in (("addresses", True), ("notReadyAddresses", False)):
                for addr in subset.get(field) or []:
                    if not isinstance(addr, dict):
                        continue
                    uid = (addr.get("targetRef") or {}).get("uid", "")
                    ak = (str(addr.get("ip", "")), str(uid))
                    addresses.setdefault(ak, addr)
                    seen = readiness.setdefault(pk, {})
                    if seen.get(ak, True):
                        seen[ak] = ready
    groups: dict[frozenset[tuple[tuple[str, str], bool]], list[Obj]] = {}
    for pk, seen in readiness.items():
        members = groups.setdefault(frozenset(seen.items()), [])
        if pk != sentinel:
            members.append(ports[pk])
    out = []
    for members, port_objs in groups.items():
        ready = sorted((ak for ak, ok in members if ok), key=lambda k: (ip_sort_key(k[0]), k[1]))
        not_ready = sorted((ak for ak, ok in members if not ok),
                           key=lambda k: (ip_sort_key(k[0]), k[1]))
        subset: Obj = {}
        if ready:
            subset["addresses"] = [addresses[k] for k in ready]
        if not_ready:
            subset["notReadyAddresses"] = [addresses[k] for k in not_ready]
        if port_objs:
            subset["ports"] = sorted(port_objs, key=lambda p: ports_key([p]))
        out.append(subset)

    def first(s: Obj) -> tuple[Any, ...]:
        addrs = (s.get("addresses") or []) + (s.get("notReadyAddresses") or [])
        return (ip_sort_key(addrs[0].get("ip")) if addrs else (9, 0, ""),
                ports_key(s.get("ports")))
    return sorted(out, key=first)


# -- trigger times ---------------------------------------------------------------------------------
class TriggerTimeTracker:
    """The ``last-change-trigger-time`` of a Service's endpoints (upstream's
    TriggerTimeTracker): on first sight the Service's creation; later the earliest Ready
    transition (or Service creation) that changed since the previous sync; None if none did."""

    def __init__(self) -> None:
        self._state: dict[str, tuple[dict[str, float], float | None]] = {}

    def compute(self, key: str, service: Obj, pods: Iterable[Obj]) -> float | None:
        known = self._state.get(key)
        last_pods, last_service = known if known is not None else ({}, None)
        earliest: float | None = None
        now_pods: dict[str, float] = {}
        for pod in pods:
            t = pod_trigger_time(pod)
            if t is None:
                continue
            name = pod["metadata"].get("name", "")
            now_pods[name] = t
            if name not in last_pods or t > last_pods[name]:
                earliest = t if earliest is None else min(earliest, t)
        created = parse_rfc3339(service["metadata"].get("creationTimestamp"))
        if created is not None and (last_service is None or created > last_service):
            earliest = created if earliest is None else min(earliest, created)
        self._state[key] = (now_pods, created)
        if known is None:
            return created
        return earliest

    def forget(self, key: str) -> None:
        self._state.pop(key, None)


# -- the slices a controller wrote -------------------------------------------------------------
class SliceTracker:
    """The resourceVersion of every slice this controller created or updated, and the slices
    it deleted, per Service (upstream's EndpointSliceTracker).  ``stale`` says the informer has
    not caught up with them yet: a reconcile then would work from an old picture and could
    create the same slices again.  Resource versions are compared as the integers Atoll's
    store makes them; an expectation the cache never meets is given up after ``patience``
    seconds (its object went away before the write's answer came back)."""

    def __init__(self, patience: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.patience = patience
        self.clock = clock
        #: service key → slice uid → (resourceVersion, or None for an expected deletion; when)
        self._written: dict[str, dict[str, tuple[int | None, float]]] = {}

    @staticmethod
    def _rv(obj: Obj) -> int:
        try:
            return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
        except (TypeError, ValueError):
            return 0

    def wrote(self, key: str, slice_: Obj) -> None:
        uid = (slice_.get("metadata") or {}).get("uid")
        if uid:
            self._written.setdefault(key, {})[uid] = (self._rv(slice_), self.clock())

    def deleted(self, key: str, slice_: Obj) -> None:
        uid = (slice_.get("metadata") or {}).get("uid")
        if uid:
            self._written.setdefault(key, {})[uid] = (None, self.clock())

    def own_write(self, key: str, slice_: Obj) -> bool:
        """Whether this version of the slice is one this controller wrote."""
        uid = (slice_.get("metadata") or {}).get("uid")
        mine = self._written.get(key, {}).get(uid or "")
        return mine is not None and mine[0] == self._rv(slice_)

    def observed_deletion(self, key: str, slice_: Obj) -> bool:
        """Forget a deleted slice; True when this controller deleted it."""
        uid = (slice_.get("metadata") or {}).get("uid")
        mine = self._written.get(key)
        if mine is None or uid not in mine:
            return False
        return mine.pop(uid)[0] is None

    def stale(self, key: str, cached: Iterable[Obj]) -> bool:
        mine = self._written.get(key)
        if not mine:
            return False
        now = self.clock()
        have = {(s.get("metadata") or {}).get("uid"): self._rv(s) for s in cached}
        for uid, (rv, at) in list(mine.items()):
            if rv is None:
                if uid not in have:
                    del mine[uid]  # the deletion is seen
                    continue
            elif have.get(uid, -1) >= rv:
                continue
            if now - at > self.patience:
                del mine[uid]
                continue
            return True
        return False

    def forget(self, key: str) -> None:
        self._written.pop(key, None)
