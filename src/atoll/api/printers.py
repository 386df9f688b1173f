"""Server-side Table printing (``Accept: application/json;as=Table;g=meta.k8s.io;v=v1``).

kubectl asks the server for a ``meta.k8s.io/v1`` Table and prints its cells
as-is, so the columns and cell text here mirror kube-apiserver's printers
(``pkg/printers/internalversion``) for the built-in kinds, and its CRD table
convertor for custom resources.  The server always fills every column,
including the ``priority: 1`` ones kubectl only shows with ``-o wide``.

Cells must be JSON-serializable; ``None`` (printed by kubectl as ``<none>``)
marks a CRD column whose JSONPath found nothing.
"""

from __future__ import annotations

import calendar
import re
import time
from typing import Any, Callable, Iterable

from atoll.api import jsonpath
from atoll.api.selectors import format_label_selector

Cells = list[Any]
CellsFn = Callable[[dict[str, Any], float], Cells]

# -- durations and timestamps ---------------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """apimachinery's ``duration.HumanDuration``: two significant units at most, coarser with age."""
    whole = int(seconds)  # Go truncates toward zero
    if whole < -1:
        return "<invalid>"
    if whole < 0:
        return "0s"
    if whole < 60 * 2:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 10:
        s = whole % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = whole // 3600
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if dy == 0 else f"{hours // 24 // 365}y{dy}d"
    return f"{hours // 24 // 365}y"


_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def parse_time(value: Any) -> float | None:
    """RFC3339 (with optional fraction) to epoch seconds; None when missing or malformed."""
    if not isinstance(value, str):
        return None
    m = _RFC3339.match(value.strip())
    if not m:
        return None
    year, month, day, hour, minute, sec = (int(g) for g in m.groups()[:6])
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and sec < 61):
        return None
    base = calendar.timegm((year, month, day, hour, minute, sec, 0, 0, 0))
    frac = float(m.group(7)) if m.group(7) else 0.0
    zone = m.group(8)
    offset = 0 if zone in ("Z", "z") else (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60) * (
        1 if zone[0] == "+" else -1)
    return base + frac - offset


def since(value: Any, now: float) -> str:
    """translateTimestampSince: the age of a timestamp, ``<unknown>`` when there is none."""
    t = parse_time(value)
    return "<unknown>" if t is None else human_duration(now - t)


def rfc3339(value: Any) -> str:
    """A timestamp as ``Created At`` cells show it: UTC, whole seconds (Go's zero time if unset)."""
    t = parse_time(value)
    if t is None:
        return "0001-01-01T00:00:00Z"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(t // 1)))


# -- safe accessors (objects come from clients; a printer must never raise) -----------------------
def _get(obj: Any, *path: str | int) -> Any:
    for part in path:
        if isinstance(part, int):
            obj = obj[part] if isinstance(obj, list) and 0 <= part < len(obj) else None
        else:
            obj = obj.get(part) if isinstance(obj, dict) else None
        if obj is None:
            return None
    return obj


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return int(value)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _name(obj: dict[str, Any]) -> str:
    return _str(_get(obj, "metadata", "name"))


def _age(obj: dict[str, Any], now: float) -> str:
    return since(_get(obj, "metadata", "creationTimestamp"), now)


def _deleting(obj: dict[str, Any]) -> bool:
    return bool(_get(obj, "metadata", "deletionTimestamp"))


def format_labels(labels: Any) -> str:
    """labels.FormatLabels: ``a=b,c=d`` sorted by key, ``<none>`` when empty."""
    pairs = [f"{k}={v}" for k, v in sorted(_dict(labels).items()) if isinstance(v, str)]
    return ",".join(pairs) or "<none>"


def _containers_cells(obj: dict[str, Any]) -> list[str]:
    """Wide ``Containers`` and ``Images`` of a pod template."""
    containers = [c for c in _list(_get(obj, "spec", "template", "spec", "containers"))
                  if isinstance(c, dict)]
    return [",".join(_str(c.get("name")) for c in containers),
            ",".join(_str(c.get("image")) for c in containers)]


# -- column definitions -----------------------------------------------------------------------------
NAME_DESC = ("Name must be unique within a namespace. Is required when creating resources, although "
             "some resources may allow a client to request the generation of an appropriate name "
             "automatically. Name is primarily intended for creation idempotence and configuration "
             "definition. Cannot be updated. More info: "
             "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names")
CREATED_DESC = ("CreationTimestamp is a timestamp representing the server time when this object was "
                "created. It is not guaranteed to be set in happens-before order across separate "
                "operations. Clients may not set this value. It is represented in RFC3339 form and "
                "is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: "
                "https://git.k8s.io/community/contributors/devel/sig-architecture/"
                "api-conventions.md#metadata")
TEMPLATE_CONTAINERS = "Names of each container in the template."
TEMPLATE_IMAGES = "Images referenced by each container in the template."


def column(name: str, type_: str = "string", description: str = "", *, fmt: str = "",
           priority: int = 0) -> dict[str, Any]:
    """One TableColumnDefinition; upstream serializes all five fields, empty or not."""
    return {"name": name, "type": type_, "format": fmt, "description": description,
            "priority": priority}


def _name_col() -> dict[str, Any]:
    return column("Name", description=NAME_DESC, fmt="name")


def _age_col() -> dict[str, Any]:
    return column("Age", description=CREATED_DESC)


def _wide(name: str, description: str = "") -> dict[str, Any]:
    return column(name, description=description, priority=1)


_PRINTERS: dict[str, tuple[list[dict[str, Any]], CellsFn]] = {}


def _printer(*kind_keys: str, columns: list[dict[str, Any]]) -> Callable[[CellsFn], CellsFn]:
    def register(fn: CellsFn) -> CellsFn:
        for key in kind_keys:
            _PRINTERS[key] = (columns, fn)
        return fn
    return register


def column_definitions(kind_key: str) -> list[dict[str, Any]]:
    """Columns for a built-in kind (``<group>/<Kind>``); Name and Age for kinds without a printer."""
    entry = _PRINTERS.get(kind_key)
    columns = entry[0] if entry else [_name_col(), _age_col()]
    return [dict(c) for c in columns]


def row_cells(kind_key: str, obj: dict[str, Any], now: float) -> Cells:
    entry = _PRINTERS.get(kind_key)
    if entry is None:
        return [_name(obj), _age(obj, now)]
    return entry[1](obj, now)


def row_conditions(kind_key: str, obj: dict[str, Any]) -> list[dict[str, str]]:
    """Row conditions upstream attaches: finished pods are marked ``Completed``."""
    if kind_key != "/Pod":
        return []
    phase = _get(obj, "status", "phase")
    if phase == "Succeeded":
        return [{"type": "Completed", "status": "True", "reason": "PodCompleted",
                 "message": "The pod has completed successfully."}]
    if phase == "Failed":
        return [{"type": "Completed", "status": "True", "reason": "PodFailed",
                 "message": "The pod failed."}]
    return []


# -- core ------------------------------------------------------------------------------------------
@_printer("/Namespace", columns=[_name_col(), column("Status", description="The status of the namespace"),
                                 _age_col()])
def _namespace(obj: dict[str, Any], now: float) -> Cells:
    return [_name(obj), _str(_get(obj, "status", "phase")), _age(obj, now)]


@_printer("/Node", columns=[
    _name_col(), column("Status", description="The status of the node"),
    column("Roles", description="The roles of the node"), _age_col(),
    column("Version", description="Kubelet Version reported by the node."),
    _wide("Internal-IP", "List of addresses reachable to the node."),
    _wide("External-IP", "List of addresses reachable to the node."),
    _wide("OS-Image", "OS Image reported by the node from /etc/os-release."),
    _wide("Kernel-Version", "Kernel Version reported by the node from 'uname -r'."),
    _wide("Container-Runtime", "ContainerRuntime Version reported by the node through runtime "
                               "remote API."),
])
def _node(obj: dict[str, Any], now: float) -> Cells:
    status = []
    ready = next((c for c in _list(_get(obj, "status", "conditions"))
                  if isinstance(c, dict) and c.get("type") == "Ready"), None)
    if ready is not None:
        status.append("Ready" if ready.get("status") == "True" else "NotReady")
    else:
        status.append("Unknown")
    if _get(obj, "spec", "unschedulable") is True:
        status.append("SchedulingDisabled")
    info = _dict(_get(obj, "status", "nodeInfo"))
    return [_name(obj), ",".join(status), ",".join(_node_roles(obj)) or "<none>", _age(obj, now),
            _str(info.get("kubeletVersion")),
            _node_address(obj, "InternalIP"), _node_address(obj, "ExternalIP"),
            _str(info.get("osImage")) or "<unknown>", _str(info.get("kernelVersion")) or "<unknown>",
            _str(info.get("containerRuntimeVersion")) or "<unknown>"]


def _node_roles(obj: dict[str, Any]) -> list[str]:
    """Roles from ``node-role.kubernetes.io/<role>`` keys and the ``kubernetes.io/role`` value."""
    roles = set()
    for key, value in _dict(_get(obj, "metadata", "labels")).items():
        if key.startswith("node-role.kubernetes.io/"):
            role = key[len("node-role.kubernetes.io/"):]
            if role:
                roles.add(role)
        elif key == "kubernetes.io/role" and value:
            roles.add(value)
    return sorted(roles)


def _node_address(obj: dict[str, Any], kind: str) -> str:
    for addr in _list(_get(obj, "status", "addresses")):
        if isinstance(addr, dict) and addr.get("type") == kind:
            return _str(addr.get("address"))
    return "<none>"


@_printer("/Pod", columns=[
    _name_col(),
    column("Ready", description="The aggregate readiness state of this pod for accepting traffic."),
    column("Status", description="The aggregate status of the containers in this pod."),
    column("Restarts", description="The number of times the containers in this pod have been "
                                   "restarted and when the last container in this pod has restarted."),
    _age_col(),
    _wide("IP", "podIP address allocated to the pod. Routable at least within the cluster. Empty if "
                "not yet allocated."),
    _wide("Node", "NodeName indicates in which node this pod is scheduled."),
    _wide("Nominated Node", "nominatedNodeName is set only when this pod preempts other pods on the "
                            "node, but it cannot be scheduled right away as preemption victims "
                            "receive their graceful termination periods."),
    _wide("Readiness Gates", "If specified, all readiness gates will be evaluated for pod readiness."),
])
def _pod(obj: dict[str, Any], now: float) -> Cells:
    summary = pod_summary(obj)
    restarts = str(summary.restarts)
    if summary.restarts != 0 and summary.last_restart is not None:
        restarts = f"{summary.restarts} ({human_duration(now - summary.last_restart)} ago)"
    status = _dict(obj.get("status"))
    pod_ip = _str(_get(status, "podIPs", 0, "ip")) or _str(status.get("podIP"))
    return [_name(obj), f"{summary.ready}/{summary.total}", summary.reason, restarts, _age(obj, now),
            pod_ip or "<none>", _str(_get(obj, "spec", "nodeName")) or "<none>",
            _str(status.get("nominatedNodeName")) or "<none>", _readiness_gates(obj)]


class PodSummary:
    """What ``kubectl get pods`` derives from a pod: ready/total, status reason, restarts."""

    def __init__(self) -> None:
        self.ready = 0
        self.total = 0
        self.reason = ""
        self.restarts = 0
        self.last_restart: float | None = None


def _finished_at(status: dict[str, Any]) -> float | None:
    return parse_time(_get(status, "lastState", "terminated", "finishedAt"))


def _later(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _terminated_reason(term: dict[str, Any], prefix: str = "") -> str:
    """A terminated state's reason, or ``Signal:N`` / ``ExitCode:N`` when it gave none."""
    if _str(term.get("reason")):
        return prefix + term["reason"]
    if _int(term.get("signal")):
        return f"{prefix}Signal:{_int(term.get('signal'))}"
    return f"{prefix}ExitCode:{_int(term.get('exitCode'))}"


def _has_condition(status: dict[str, Any], type_: str) -> bool:
    return any(isinstance(c, dict) and c.get("type") == type_ and c.get("status") == "True"
               for c in _list(status.get("conditions")))


def pod_summary(pod: dict[str, Any]) -> PodSummary:
    """printPod's status logic: init containers first, then app containers (last one wins)."""
    spec, status = _dict(pod.get("spec")), _dict(pod.get("status"))
    out = PodSummary()
    out.total = len(_list(spec.get("containers")))
    phase = _str(status.get("phase"))
    out.reason = _str(status.get("reason")) or phase
    for cond in _list(status.get("conditions")):
        if isinstance(cond, dict) and cond.get("type") == "PodScheduled" \
                and cond.get("reason") == "SchedulingGated":
            out.reason = "SchedulingGated"

    init_specs = {c.get("name"): c for c in _list(spec.get("initContainers")) if isinstance(c, dict)}
    sidecars = {n for n, c in init_specs.items() if c.get("restartPolicy") == "Always"}
    out.total += len(sidecars)
    initializing = _summarize_init(out, status, init_specs, sidecars)
    if not initializing or _has_condition(status, "Initialized"):
        _summarize_containers(out, status, sidecars)

    if _deleting(pod) and status.get("reason") == "NodeLost":
        out.reason = "Unknown"
    elif _deleting(pod) and phase not in ("Succeeded", "Failed"):
        out.reason = "Terminating"
    return out


def _summarize_init(out: PodSummary, status: dict[str, Any], init_specs: dict[Any, Any],
                    sidecars: set[Any]) -> bool:
    """Walk init container statuses; True while the pod is still initializing."""
    n_init = len(init_specs)
    for i, cs in enumerate(_list(status.get("initContainerStatuses"))):
        if not isinstance(cs, dict):
            continue
        out.restarts += _int(cs.get("restartCount"))
        out.last_restart = _later(out.last_restart, _finished_at(cs))
        state = _dict(cs.get("state"))
        term, waiting = state.get("terminated"), state.get("waiting")
        if isinstance(term, dict) and _int(term.get("exitCode")) == 0:
            continue
        if cs.get("name") in sidecars and cs.get("started") is True:
            if cs.get("ready") is True:
                out.ready += 1
            continue
        if isinstance(term, dict):
            out.reason = _terminated_reason(term, "Init:")
        elif isinstance(waiting, dict) and _str(waiting.get("reason")) \
                and waiting.get("reason") != "PodInitializing":
            out.reason = "Init:" + waiting["reason"]
        else:
            out.reason = f"Init:{i}/{n_init}"
        return True
    return False


def _summarize_containers(out: PodSummary, status: dict[str, Any], sidecars: set[Any]) -> None:
    # once initialized, only restartable (sidecar) init containers add to the restart count
    out.restarts, out.last_restart = 0, None
    for cs in _list(status.get("initContainerStatuses")):
        if isinstance(cs, dict) and cs.get("name") in sidecars:
            out.restarts += _int(cs.get("restartCount"))
            out.last_restart = _later(out.last_restart, _finished_at(cs))
    has_running = False
    for cs in reversed(_list(status.get("containerStatuses"))):
        if not isinstance(cs, dict):
            continue
        out.restarts += _int(cs.get("restartCount"))
        out.last_restart = _later(out.last_restart, _finished_at(cs))
        state = _dict(cs.get("state"))
        waiting, term = state.get("waiting"), state.get("terminated")
        if isinstance(waiting, dict) and _str(waiting.get("reason")):
            out.reason = waiting["reason"]
        elif isinstance(term, dict):
            out.reason = _terminated_reason(term)
        elif cs.get("ready") is True and isinstance(state.get("running"), dict):
            has_running = True
            out.ready += 1
    if out.reason == "Completed" and has_running:
        out.reason = "Running" if _has_condition(status, "Ready") else "NotReady"


def _readiness_gates(pod: dict[str, Any]) -> str:
    gates = [g for g in _list(_get(pod, "spec", "readinessGates")) if isinstance(g, dict)]
    if not gates:
        return "<none>"
    conditions = [c for c in _list(_get(pod, "status", "conditions")) if isinstance(c, dict)]
    true = 0
    for gate in gates:
        match = next((c for c in conditions if c.get("type") == gate.get("conditionType")), None)
        if match is not None and match.get("status") == "True":
            true += 1
    return f"{true}/{len(gates)}"


@_printer("/Service", columns=[
    _name_col(),
    column("Type", description="type determines how the Service is exposed."),
    column("Cluster-IP", description="clusterIP is the IP address of the service."),
    column("External-IP", description="externalIPs is a list of IP addresses for which nodes in the "
                                      "cluster will also accept traffic for this service."),
    column("Port(s)", description="The list of ports that are exposed by this service."),
    _age_col(),
    _wide("Selector", "Route service traffic to pods with label keys and values matching this "
                      "selector."),
])
def _service(obj: dict[str, Any], now: float) -> Cells:
    spec = _dict(obj.get("spec"))
    cluster_ip = _str(_get(spec, "clusterIPs", 0)) or _str(spec.get("clusterIP")) or "<none>"
    return [_name(obj), _str(spec.get("type")) or "ClusterIP", cluster_ip,
            _service_external_ip(obj), service_ports(spec.get("ports")) or "<none>", _age(obj, now),
            format_labels(spec.get("selector"))]


def service_ports(ports: Any) -> str:
    """``80/TCP,443:30443/TCP``: port, node port when allocated, protocol."""
    pieces = []
    for p in _list(ports):
        if not isinstance(p, dict):
            continue
        proto = _str(p.get("protocol")) or "TCP"
        node_port = _int(p.get("nodePort"))
        port = _int(p.get("port"))
        pieces.append(f"{port}:{node_port}/{proto}" if node_port > 0 else f"{port}/{proto}")
    return ",".join(pieces)


def _service_external_ip(obj: dict[str, Any]) -> str:
    spec = _dict(obj.get("spec"))
    svc_type = _str(spec.get("type")) or "ClusterIP"
    external = [ip for ip in _list(spec.get("externalIPs")) if isinstance(ip, str)]
    if svc_type in ("ClusterIP", "NodePort"):
        return ",".join(external) or "<none>"
    if svc_type == "LoadBalancer":
        lb = _load_balancer_ips(_get(obj, "status", "loadBalancer", "ingress"))
        if external:
            return ",".join(lb + external)
        return ",".join(lb) or "<pending>"
    if svc_type == "ExternalName":
        return _str(spec.get("externalName"))
    return "<unknown>"


def _load_balancer_ips(ingress: Any) -> list[str]:
    found = set()
    for entry in _list(ingress):
        if isinstance(entry, dict):
            value = _str(entry.get("ip")) or _str(entry.get("hostname"))
            if value:
                found.add(value)
    return sorted(found)


@_printer("/Endpoints", columns=[
    _name_col(), column("Endpoints", description="The set of all endpoints is the union of all "
                                                  "subsets."), _age_col()])
def _endpoints(obj: dict[str, Any], now: float) -> Cells:
    return [_name(obj), format_endpoints(obj), _age(obj, now)]


def format_endpoints(obj: dict[str, Any], limit: int = 3) -> str:
    """``10.0.0.1:80,10.0.0.2:80 + 3 more...`` across subsets; ``<none>`` without subsets."""
    subsets = [s for s in _list(obj.get("subsets")) if isinstance(s, dict)]
    if not subsets:
        return "<none>"
    shown: list[str] = []
    count = 0
    more = False
    for subset in subsets:
        ips = [_str(a.get("ip")) for a in _list(subset.get("addresses")) if isinstance(a, dict)]
        ports = [p for p in _list(subset.get("ports")) if isinstance(p, dict)]
        for port in ports or [None]:
            count += len(ips)
            for ip in ips:
                if len(shown) == limit:
                    more = True
                    break
                shown.append(ip if port is None else _host_port(ip, _int(port.get("port"))))
    text = ",".join(shown)
    return f"{text} + {count - limit} more..." if more else text


def _host_port(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


@_printer("/ConfigMap", columns=[_name_col(), column("Data", description="Data contains the "
                                                                        "configuration data."),
                                 _age_col()])
def _configmap(obj: dict[str, Any], now: float) -> Cells:
    return [_name(obj), len(_dict(obj.get("data"))) + len(_dict(obj.get("binaryData"))),
            _age(obj, now)]


@_printer("/Secret", columns=[_name_col(), column("Type", description="Used to facilitate "
                                                                      "programmatic handling of "
                                                                      "secret data."),
                              column("Data", description="Data contains the secret data."),
                              _age_col()])
def _secret(obj: dict[str, Any], now: float) -> Cells:
    keys = set(_dict(obj.get("data"))) | set(_dict(obj.get("stringData")))
    return [_name(obj), _str(obj.get("type")), len(keys), _age(obj, now)]


@_printer("/ServiceAccount", columns=[_name_col(), column("Secrets", description="Secrets is a list "
                                                                                 "of the secrets in "
                                                                                 "the same namespace "
                                                                                 "that pods running "
                                                                                 "using this "
                                                                                 "ServiceAccount are "
                                                                                 "allowed to use."),
                                      _age_col()])
def _service_account(obj: dict[str, Any], now: float) -> Cells:
    return [_name(obj), len(_list(obj.get("secrets"))), _age(obj, now)]


# -- events (core/v1 and events.k8s.io/v1 share one printer) ----------------------------------
@_printer("/Event", "events.k8s.io/Event", columns=[
    column("Last Seen", description="The time at which the most recent occurrence of this event "
                                    "was recorded."),
    column("Type", description="Type of this event (Normal, Warning), new types could be added in "
                               "the future"),
    column("Reason", description="This should be a short, machine understandable string that gives "
                                 "the reason for the transition into the object's current status."),
    column("Object", description="The object that this event is about."),
    _wide("Subobject", "If referring to a piece of an object instead of an entire object, this "
                       "string should contain a valid JSON/Go field access statement."),
    _wide("Source", "The component reporting this event. Should be a short machine understandable "
                    "string."),
    column("Message", description="A human-readable description of the status of this operation."),
    _wide("First Seen", "The time at which the event was first recorded. (Time of server receipt "
                        "is in TypeMeta.)"),
    _wide("Count", "The number of times this event has occurred."),
    column("Name", description=NAME_DESC, fmt="name", priority=1),
])
def _event(obj: dict[str, Any], now: float) -> Cells:
    ev = _as_core_event(obj)
    first = since(ev.get("firstTimestamp"), now) if parse_time(ev.get("firstTimestamp")) \
        else since(ev.get("eventTime"), now)
    last = since(ev.get("lastTimestamp"), now) if parse_time(ev.get("lastTimestamp")) else first
    count = _int(ev.get("count"))
    series = ev.get("series")
    if isinstance(series, dict):
        last = since(series.get("lastObservedTime"), now)
        count = _int(series.get("count"))
    elif count == 0:
        count = 1  # singleton events of the new API carry no count
    involved = _dict(ev.get("involvedObject"))
    kind = _str(involved.get("kind")).lower()
    target = f"{kind}/{involved['name']}" if _str(involved.get("name")) else kind
    source = _dict(ev.get("source"))
    component = _str(source.get("component")) or _str(ev.get("reportingController"))
    host = _str(source.get("host")) or _str(ev.get("reportingInstance"))
    return [last, _str(ev.get("type")), _str(ev.get("reason")), target,
            _str(involved.get("fieldPath")), f"{component}, {host}" if host else component,
            _str(ev.get("message")).strip(), first, count, _name(obj)]


def _as_core_event(obj: dict[str, Any]) -> dict[str, Any]:
    """Map an events.k8s.io/v1 Event onto core/v1 field names (upstream converts the same way)."""
    if "regarding" not in obj and "note" not in obj and "deprecatedCount" not in obj:
        return obj
    return {
        "involvedObject": obj.get("regarding"), "message": obj.get("note"),
        "firstTimestamp": obj.get("deprecatedFirstTimestamp"),
        "lastTimestamp": obj.get("deprecatedLastTimestamp"),
        "count": obj.get("deprecatedCount"), "source": obj.get("deprecatedSource"),
        "eventTime": obj.get("eventTime"), "series": obj.get("series"),
        "reportingController": obj.get("reportingController"),
        "reportingInstance": obj.get("reportingInstance"),
        "type": obj.get("type"), "reason": obj.get("reason"),
    }


# -- storage ------------------------------------------------------------------------------------
def access_modes(modes: Any) -> str:
    """``RWO,ROX,RWX,RWOP`` in that fixed order, duplicates dropped."""
    present = set(m for m in _list(modes) if isinstance(m, str))
    order = (("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"),
             ("ReadWriteOncePod", "RWOP"))
    return ",".join(short for mode, short in order if mode in present)


def _storage_class(obj: dict[str, Any]) -> str:
    beta = _get(obj, "metadata", "annotations", "volume.beta.kubernetes.io/storage-class")
    if isinstance(beta, str):
        return beta
    return _str(_get(obj, "spec", "storageClassName"))


def _quantity(value: Any) -> str:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return jsonpath.to_text(value)
    return "0"


@_printer("/PersistentVolume", columns=[
    _name_col(),
    column("Capacity", description="capacity is the description of the persistent volume's "
                                   "resources and capacity."),
    column("Access Modes", description="accessModes contains all ways the volume can be mounted."),
    column("Reclaim Policy", description="persistentVolumeReclaimPolicy defines what happens to a "
                                         "persistent volume when released from its claim."),
    column("Status", description="phase indicates if a volume is available, bound to a claim, or "
                                 "released by a claim."),
    column("Claim", description="claimRef is part of a bi-directional binding between "
                                "PersistentVolume and PersistentVolumeClaim."),
    column("StorageClass", description="StorageClass of the pv"),
    column("VolumeAttributesClass", description="VolumeAttributesClass of the pv"),
    column("Reason", description="reason is a brief CamelCase string that describes any failure "
                                 "and is meant for machine parsing and tidy display in the CLI."),
    _age_col(),
    _wide("VolumeMode", "volumeMode defines if a volume is intended to be used with a formatted "
                        "filesystem or to remain in raw block state."),
])
def _persistent_volume(obj: dict[str, Any], now: float) -> Cells:
    spec = _dict(obj.get("spec"))
    claim = ""
    ref = spec.get("claimRef")
    if isinstance(ref, dict):
        claim = f"{_str(ref.get('namespace'))}/{_str(ref.get('name'))}"
    phase = "Terminating" if _deleting(obj) else _str(_get(obj, "status", "phase"))
    vac = spec.get("volumeAttributesClassName")
    return [_name(obj), _quantity(_get(spec, "capacity", "storage")),
            access_modes(spec.get("accessModes")),
            _str(spec.get("persistentVolumeReclaimPolicy")), phase, claim, _storage_class(obj),
            vac if isinstance(vac, str) else "<unset>", _str(_get(obj, "status", "reason")),
            _age(obj, now), _str(spec.get("volumeMode")) or "<unset>"]


@_printer("/PersistentVolumeClaim", columns=[
    _name_col(),
    column("Status", description="phase represents the current phase of PersistentVolumeClaim."),
    column("Volume", description="volumeName is the binding reference to the PersistentVolume "
                                 "backing this claim."),
    column("Capacity", description="capacity represents the actual resources of the underlying "
                                   "volume."),
    column("Access Modes", description="accessModes contains the actual access modes the volume "
                                       "backing the PVC has."),
    column("StorageClass", description="StorageClass of the pvc"),
    column("VolumeAttributesClass", description="VolumeAttributesClass of the pvc"),
    _age_col(),
    _wide("VolumeMode", "volumeMode defines what type of volume is required by the claim."),
])
def _persistent_volume_claim(obj: dict[str, Any], now: float) -> Cells:
    spec = _dict(obj.get("spec"))
    status = _dict(obj.get("status"))
    phase = "Terminating" if _deleting(obj) else _str(status.get("phase"))
    volume = _str(spec.get("volumeName"))
    capacity = modes = ""
    if volume:
        modes = access_modes(status.get("accessModes"))
        capacity = _quantity(_get(status, "capacity", "storage"))
    vac = spec.get("volumeAttributesClassName")
    return [_name(obj), phase, volume, capacity, modes, _storage_class(obj),
            vac if isinstance(vac, str) else "<unset>", _age(obj, now),
            _str(spec.get("volumeMode")) or "<unset>"]


@_printer("storage.k8s.io/StorageClass", columns=[
    _name_col(),
    column("Provisioner", description="provisioner indicates the type of the provisioner."),
    column("ReclaimPolicy", description="reclaimPolicy controls the reclaimPolicy for dynamically "
                                        "provisioned PersistentVolumes of this storage class."),
    column("VolumeBindingMode", description="volumeBindingMode indicates how PersistentVolumeClaims "
                                            "should be provisioned and bound."),
    column("AllowVolumeExpansion", description="allowVolumeExpansion shows whether the storage "
                                               "class allow volume expand."),
    _age_col(),
])
def _storage_class_row(obj: dict[str, Any], now: float) -> Cells:
    annotations = _dict(_get(obj, "metadata", "annotations"))
    default = "true" in (annotations.get("storageclass.kubernetes.io/is-default-class"),
                         annotations.get("storageclass.beta.kubernetes.io/is-default-class"))
    name = _name(obj) + (" (default)" if default else "")
    return [name, _str(obj.get("provisioner")), _str(obj.get("reclaimPolicy")) or "Delete",
            _str(obj.get("volumeBindingMode")) or "Immediate",
            obj.get("allowVolumeExpansion") is True, _age(obj, now)]


@_printer("/ResourceQuota", columns=[
    _name_col(),
    column("Request", description="Request represents a minimum amount of cpu/memory that a "
                                  "container may consume."),
    column("Limit", description="Limits control the maximum amount of cpu/memory that a container "
                                "may use independent of contention on the node."),
    _age_col(),
])
def _resource_quota(obj: dict[str, Any], now: float) -> Cells:
    hard = _dict(_get(obj, "status", "hard"))
    used = _dict(_get(obj, "status", "used"))
    requests, limits = [], []
    for resource in sorted(hard):
        target = limits if resource.split(".")[0] == "limits" and "." in resource else requests
        target.append(f"{resource}: {_quantity(used.get(resource))}/{_quantity(hard[resource])}")
    return [_name(obj), ", ".join(requests), ", ".join(limits), _age(obj, now)]


# -- workloads ------------------------------------------------------------------------------------
_WORKLOAD_WIDE = [_wide("Containers", TEMPLATE_CONTAINERS), _wide("Images", TEMPLATE_IMAGES)]


@_printer("apps/Deployment", columns=[
    _name_col(), column("Ready", description="Number of the pod with ready state"),
    column("Up-to-date", description="Total number of non-terminated pods targeted by this "
                                     "deployment that have the desired template spec."),
    column("Available", description="Total number of available pods (ready for at least "
                                    "minReadySeconds) targeted by this deployment."),
    _age_col(), *_WORKLOAD_WIDE,
    _wide("Selector", "Label selector for pods. Existing ReplicaSets whose pods are selected by "
                      "this will be the ones affected by this deployment."),
])
def _deployment(obj: dict[str, Any], now: float) -> Cells:
    status = _dict(obj.get("status"))
    desired = _int(_get(obj, "spec", "replicas"), 1)
    selector = _selector_string(_get(obj, "spec", "selector"))
    return [_name(obj), f"{_int(status.get('readyReplicas'))}/{desired}",
            _int(status.get("updatedReplicas")), _int(status.get("availableReplicas")),
            _age(obj, now), *_containers_cells(obj), selector]


def _selector_string(sel: Any) -> str:
    """LabelSelectorAsSelector(...).String(), ``<invalid>`` when it can't be built."""
    formatted = format_label_selector(sel)
    if formatted == "<error>":
        return "<invalid>"
    return "" if formatted == "<none>" else formatted


@_printer("apps/ReplicaSet", "/ReplicationController", columns=[
    _name_col(),
    column("Desired", "integer", "Replicas is the number of desired replicas."),
    column("Current", "integer", "Replicas is the most recently observed number of replicas."),
    column("Ready", "integer", "The number of ready replicas for this replica set."),
    _age_col(), *_WORKLOAD_WIDE,
    _wide("Selector", "Selector is a label query over pods that should match the replica count."),
])
def _replica_set(obj: dict[str, Any], now: float) -> Cells:
    status = _dict(obj.get("status"))
    sel = _get(obj, "spec", "selector")
    if obj.get("kind") == "ReplicationController" or (
            isinstance(sel, dict) and sel and "matchLabels" not in sel
            and "matchExpressions" not in sel):
        selector = format_labels(sel)  # ReplicationControllers select with a plain map
    else:
        selector = format_label_selector(sel)
    return [_name(obj), _int(_get(obj, "spec", "replicas"), 1), _int(status.get("replicas")),
            _int(status.get("readyReplicas")), _age(obj, now), *_containers_cells(obj), selector]


@_printer("apps/DaemonSet", columns=[
    _name_col(),
    column("Desired", "integer", "The total number of nodes that should be running the daemon pod."),
    column("Current", "integer", "The number of nodes that are running at least 1 daemon pod and "
                                 "are supposed to run the daemon pod."),
    column("Ready", "integer", "numberReady is the number of nodes that should be running the "
                               "daemon pod and have one or more of the daemon pod running with a "
                               "Ready Condition."),
    column("Up-to-date", "integer", "The total number of nodes that are running updated daemon "
                                    "pod"),
    column("Available", "integer", "The number of nodes that should be running the daemon pod and "
                                   "have one or more of the daemon pod running and available."),
    column("Node Selector", description="NodeSelector is a selector which must be true for the pod "
                                        "to fit on a node."),
    _age_col(), *_WORKLOAD_WIDE,
    _wide("Selector", "A label query over pods that are managed by the daemon set."),
])
def _daemon_set(obj: dict[str, Any], now: float) -> Cells:
    status = _dict(obj.get("status"))
    return [_name(obj), _int(status.get("desiredNumberScheduled")),
            _int(status.get("currentNumberScheduled")), _int(status.get("numberReady")),
            _int(status.get("updatedNumberScheduled")), _int(status.get("numberAvailable")),
            format_labels(_get(obj, "spec", "template", "spec", "nodeSelector")), _age(obj, now),
            *_containers_cells(obj), format_label_selector(_get(obj, "spec", "selector"))]


@_printer("apps/StatefulSet", columns=[
    _name_col(), column("Ready", description="Number of the pod with ready state"), _age_col(),
    *_WORKLOAD_WIDE,
])
def _stateful_set(obj: dict[str, Any], now: float) -> Cells:
    ready = _int(_get(obj, "status", "readyReplicas"))
    return [_name(obj), f"{ready}/{_int(_get(obj, 'spec', 'replicas'), 1)}", _age(obj, now),
            *_containers_cells(obj)]


@_printer("batch/Job", columns=[
    _name_col(), column("Status", description="Status of the job."),
    column("Completions", description="The number of pods which reached phase Succeeded."),
    column("Duration", description="Time required to complete the job."),
    _age_col(), *_WORKLOAD_WIDE,
    _wide("Selector", "A label query over pods that should match the pod count."),
])
def _job(obj: dict[str, Any], now: float) -> Cells:
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    succeeded = _int(status.get("succeeded"))
    if isinstance(spec.get("completions"), int):
        completions = f"{succeeded}/{spec['completions']}"
    elif _int(spec.get("parallelism")) > 1:
        completions = f"{succeeded}/1 of {_int(spec.get('parallelism'))}"
    else:
        completions = f"{succeeded}/1"
    start, end = parse_time(status.get("startTime")), parse_time(status.get("completionTime"))
    duration = "" if start is None else human_duration((end if end is not None else now) - start)
    return [_name(obj), _job_status(obj), completions, duration, _age(obj, now),
            *_containers_cells(obj), format_label_selector(spec.get("selector"))]


def _job_status(obj: dict[str, Any]) -> str:
    status = _dict(obj.get("status"))
    for cond, text in (("Complete", "Complete"), ("Failed", "Failed")):
        if _has_condition(status, cond):
            return text
    if _deleting(obj):
        return "Terminating"
    for cond in ("Suspended", "FailureTarget", "SuccessCriteriaMet"):
        if _has_condition(status, cond):
            return cond
    return "Running"


# -- coordination, rbac, and kinds printed with the default convertor -------------------------------
@_printer("coordination.k8s.io/Lease", columns=[
    _name_col(), column("Holder", description="holderIdentity contains the identity of the holder "
                                              "of a current lease."), _age_col()])
def _lease(obj: dict[str, Any], now: float) -> Cells:
    return [_name(obj), _str(_get(obj, "spec", "holderIdentity")), _age(obj, now)]


_RBAC = "rbac.authorization.k8s.io"


def _binding_columns(what: str) -> list[dict[str, Any]]:
    return [_name_col(), column("Role", description="RoleRef can reference a Role in the current "
                                                    "namespace or a ClusterRole in the global "
                                                    "namespace."),
            _age_col(), _wide("Users", f"Users in the {what}"), _wide("Groups", f"Groups in the {what}"),
            _wide("ServiceAccounts", f"ServiceAccounts in the {what}")]


def _binding(obj: dict[str, Any], now: float) -> Cells:
    ref = _dict(obj.get("roleRef"))
    users, groups, sas = [], [], []
    for subject in _list(obj.get("subjects")):
        if not isinstance(subject, dict):
            continue
        kind, name = subject.get("kind"), _str(subject.get("name"))
        if kind == "ServiceAccount":
            sas.append(f"{_str(subject.get('namespace'))}/{name}")
        elif kind == "User":
            users.append(name)
        elif kind == "Group":
            groups.append(name)
    return [_name(obj), f"{_str(ref.get('kind'))}/{_str(ref.get('name'))}", _age(obj, now),
            ", ".join(users), ", ".join(groups), ", ".join(sas)]


_printer(f"{_RBAC}/RoleBinding", columns=_binding_columns("roleBinding"))(_binding)
_printer(f"{_RBAC}/ClusterRoleBinding", columns=_binding_columns("clusterRoleBinding"))(_binding)


@_printer(f"{_RBAC}/Role", f"{_RBAC}/ClusterRole", "/LimitRange",
          "apiextensions.k8s.io/CustomResourceDefinition",
          columns=[_name_col(), column("Created At", "date", CREATED_DESC)])
def _created_at(obj: dict[str, Any], now: float) -> Cells:
    """kube-apiserver's default table convertor: name and creation time as RFC3339."""
    return [_name(obj), rfc3339(_get(obj, "metadata", "creationTimestamp"))]


# -- custom resources -----------------------------------------------------------------------------
_DEFAULT_CRD_COLUMNS = [{"name": "Age", "type": "date", "description": CREATED_DESC,
                         "jsonPath": ".metadata.creationTimestamp"}]


def _effective_crd_columns(printer_columns: Any) -> list[dict[str, Any]]:
    cols = [c for c in _list(printer_columns) if isinstance(c, dict)]
    return cols or _DEFAULT_CRD_COLUMNS


def crd_columns(printer_columns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Name, then the CRD's additionalPrinterColumns (or Age when it declares none)."""
    out = [_name_col()]
    for col in _effective_crd_columns(printer_columns):
        path = _str(col.get("jsonPath"))
        out.append(column(
            _str(col.get("name")), _str(col.get("type")) or "string",
            _str(col.get("description"))
            or f"Custom resource definition column (in JSONPath format): {path}",
            fmt=_str(col.get("format")), priority=_int(col.get("priority"))))
    return out


def crd_cells(printer_columns: list[dict[str, Any]], obj: dict[str, Any], now: float) -> Cells:
    """Evaluate each column's jsonPath; ``None`` when nothing (or nothing usable) is found."""
    cells: Cells = [_name(obj)]
    for col in _effective_crd_columns(printer_columns):
        try:
            found = jsonpath.find(obj, _str(col.get("jsonPath")))
        except jsonpath.JSONPathError:
            found = []
        cells.append(_crd_cell(_str(col.get("type")) or "string", found, now))
    return cells


def _crd_cell(type_: str, found: list[Any], now: float) -> Any:
    if not found or found[0] is None:
        return None
    value = found[0]
    if type_ == "string":
        return ",".join(jsonpath.to_text(v) for v in found if v is not None)
    if type_ == "integer":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return int(value)
    elif type_ == "number":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif type_ == "boolean":
        if isinstance(value, bool):
            return value
    elif type_ == "date":
        if isinstance(value, str):
            t = parse_time(value)
            return "<invalid>" if t is None else human_duration(now - t)
    return None


# -- the Table ------------------------------------------------------------------------------------
def _row_object(obj: dict[str, Any], include_object: str) -> dict[str, Any] | None:
    if include_object == "Object":
        return obj
    if include_object == "None":
        return None
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}}


def table(kind_key: str, objs: Iterable[dict[str, Any]], now: float, include_object: str = "Metadata",
          columns: list[dict[str, Any]] | None = None, cells_fn: CellsFn | None = None,
          resource_version: str = "", continue_token: str = "",
          remaining: int | None = None) -> dict[str, Any]:
    """A complete ``meta.k8s.io/v1`` Table for ``objs``.

    ``columns``/``cells_fn`` override the built-in printer (custom resources pass
    ``crd_columns``/``crd_cells``).  ``include_object`` is the request's
    ``includeObject``: ``Metadata`` (default), ``Object`` or ``None``.
    """
    cols = columns if columns is not None else column_definitions(kind_key)
    rows = []
    for obj in objs:
        cells = cells_fn(obj, now) if cells_fn is not None else row_cells(kind_key, obj, now)
        row: dict[str, Any] = {"cells": cells}
        conditions = row_conditions(kind_key, obj) if cells_fn is None else []
        if conditions:
            row["conditions"] = conditions
        row_obj = _row_object(obj, include_object)
        if row_obj is not None:
            row["object"] = row_obj
        rows.append(row)
    metadata: dict[str, Any] = {}
    if resource_version:
        metadata["resourceVersion"] = resource_version
    if continue_token:
        metadata["continue"] = continue_token
    if remaining is not None:
        metadata["remainingItemCount"] = remaining
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata,
            "columnDefinitions": cols, "rows": rows}


__all__ = [
    "human_duration", "parse_time", "since", "rfc3339", "column", "column_definitions", "row_cells",
    "row_conditions", "pod_summary", "service_ports", "format_endpoints", "format_labels",
    "access_modes", "crd_columns", "crd_cells", "table",
]


@_printer("certificates.k8s.io/CertificateSigningRequest", columns=[
    _name_col(), _age_col(), column("SignerName", description="Name of the signer."),
    column("Requestor", description="Who made the request."),
    column("RequestedDuration", description="The certificate's requested lifetime."),
    column("Condition", description="Approved, Denied, Failed and Issued.")])
def _csr(obj: dict[str, Any], now: float) -> Cells:
    """As upstream: the decisions, then Issued once the signer filled in the certificate."""
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    seconds = spec.get("expirationSeconds")
    duration = _short_duration(seconds) if isinstance(seconds, int) else "<none>"
    conds = [str(c.get("type")) for c in status.get("conditions") or [] if isinstance(c, dict)]
    if status.get("certificate"):
        conds.append("Issued")
    return [_name(obj), _age(obj, now), _str(spec.get("signerName")), _str(spec.get("username")),
            duration, ",".join(conds) or "Pending"]


def _short_duration(seconds: int) -> str:
    if seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"
