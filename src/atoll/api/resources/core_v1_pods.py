"""core/v1 Pods: resource type, defaults and update rules, ``kubectl get pods`` columns,
selectable fields.

``default_pod_spec`` and the container checks are shared with the workload kinds
(``apps_v1``, ``batch_v1``), whose templates are pod specs.
"""

from __future__ import annotations

from typing import Any

import orjson

from atoll.api import errors, quantity, validation
from atoll.api.printing import (Cells, Printer, _age, _age_col, _deleting, _dict, _get, _has_condition,
                                _int, _list, _name, _name_col, _str, _wide, column,
                                human_duration, printer)
from atoll.api.qos import qos_class
from atoll.api.resources import podephemeral, podpaths, podupdate
from atoll.api.resources.base import Kind, field_bool, field_str
from atoll.api.resourcetype import PROXY_VERBS, STATUS, SUB_VERBS, Subresource, builtin
from atoll.api.strategy import Strategy
from atoll.api.timestamps import parse_rfc3339

POD_SUBRESOURCES = (
    STATUS,
    Subresource("binding", kind="Binding", verbs=("create",)),
    Subresource("eviction", kind="Eviction", group="policy", version="v1", verbs=("create",)),
    Subresource("log", kind="Pod", verbs=("get",)),
    Subresource("exec", kind="PodExecOptions", verbs=("create", "get")),
    Subresource("attach", kind="PodAttachOptions", verbs=("create", "get")),
    Subresource("portforward", kind="PodPortForwardOptions", verbs=("create", "get")),
    Subresource("ephemeralcontainers", verbs=SUB_VERBS),
    Subresource("proxy", kind="PodProxyOptions", verbs=PROXY_VERBS),
)

PODS = builtin("", "v1", "Pod", "pods", True, short_names=("po",), categories=("all",),
               subresources=POD_SUBRESOURCES)


# -- strategy -------------------------------------------------------------------------------------
def default_pod_spec(spec: dict[str, Any]) -> None:
    """The API type's defaults for a PodSpec (pods and workload templates alike)."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    for key in ("containers", "initContainers", "ephemeralContainers"):
        for c in spec.get(key) or []:
            if isinstance(c, dict):
                _default_container(c)
    for v in spec.get("volumes") or []:
        # a volume that names no source is an emptyDir (upstream's SetDefaults_Volume)
        if isinstance(v, dict) and all(val is None for k, val in v.items() if k != "name"):
            v["emptyDir"] = {}


class PodStrategy(Strategy):
    def prepare_create(self, svc, rt, obj, opts):  # type: ignore[no-untyped-def]
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return
        default_pod_spec(spec)
        # what upstream's admission plugins add to pods only (ServiceAccount, Priority,
        # DefaultTolerationSeconds)
        spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
        spec.setdefault("priority", 0)
        tolerations = spec.get("tolerations")
        if tolerations is None or isinstance(tolerations, list):
            tolerations = list(tolerations or [])
            for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
                if not any(isinstance(t, dict) and (t.get("key") in (key, None, "")
                                                    and t.get("effect") in ("NoExecute", None,
                                                                            ""))
                           for t in tolerations):
                    tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute",
                                        "tolerationSeconds": svc.pod_toleration_seconds})
            spec["tolerations"] = tolerations
        obj["status"] = {"phase": "Pending", "qosClass": qos_class(spec)}

    def validate(self, rt, obj):  # type: ignore[no-untyped-def]
        causes: list[errors.Cause] = []
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return [errors.required("spec")]
        causes += _validate_containers(spec.get("containers"), "spec.containers", required=True)
        if spec.get("initContainers") is not None:
            causes += _validate_containers(spec.get("initContainers"), "spec.initContainers",
                                           required=False)
        rp = spec.get("restartPolicy")
        if rp not in ("Always", "OnFailure", "Never"):
            causes.append(errors.not_supported("spec.restartPolicy", rp,
                                               ["Always", "OnFailure", "Never"]))
        causes += podpaths.validate(spec)
        return causes

    def prepare_update(self, rt, old, new, subresource=""):  # type: ignore[no-untyped-def]
        """Default the new spec as the API does, then hold it to what a pod may change.

        Runs for every write but status (whose spec is the old one by then): plain
        updates and patches, ``binding`` (which may set ``nodeName`` once), and any
        other subresource that writes a pod.
        """
        if subresource == "status":
            return
        if subresource == "ephemeralcontainers":
            self._update_ephemeral(rt, old, new)
            return
        spec, old_spec = new.get("spec"), old.get("spec") or {}
        if isinstance(spec, dict) and isinstance(old_spec, dict):
            default_pod_spec(spec)
            if not spec.get("serviceAccountName") and spec.get("serviceAccount"):
                spec["serviceAccountName"] = spec["serviceAccount"]
            if "priority" not in spec and "priority" in old_spec:
                spec["priority"] = old_spec["priority"]  # Priority admission keeps it
            _keep_default_tolerations(old_spec, spec)
            # a pod stored before a default existed compares as if it had it
            old = {**old, "spec": orjson.loads(orjson.dumps(old_spec))}
            default_pod_spec(old["spec"])
        causes = podupdate.validate(old, new, subresource=subresource)
        if causes:
            raise errors.invalid(rt.kind, old["metadata"].get("name", ""), causes, rt.group)

    def _update_ephemeral(self, rt: Any, old: dict[str, Any], new: dict[str, Any]) -> None:
        """``pods/ephemeralcontainers``: only the ephemeral containers change."""
        pod = podephemeral.merged(old, new)
        spec = pod.get("spec")
        if isinstance(spec, dict):
            for c in spec.get("ephemeralContainers") or []:
                if isinstance(c, dict):
                    _default_container(c)
        new.clear()
        new.update(pod)
        causes = podephemeral.validate_update(old, new)
        if causes:
            raise errors.invalid(rt.kind, old["metadata"].get("name", ""), causes, rt.group)

    def validate_create(self, svc, rt, obj):  # type: ignore[no-untyped-def]
        spec = obj.get("spec")
        causes = self.validate(rt, obj) + podephemeral.forbidden_on_create(
            spec if isinstance(spec, dict) else {})
        if causes:
            raise errors.invalid(rt.kind, obj["metadata"].get("name", ""), causes, rt.group)

    def deletion_grace(self, obj, grace):  # type: ignore[no-untyped-def]
        if grace is not None:
            return grace
        value = (obj.get("spec") or {}).get("terminationGracePeriodSeconds")
        return value if isinstance(value, int) and value >= 0 else 30

    def graceful_delete(self, rt, obj, grace):  # type: ignore[no-untyped-def]
        # a pod bound to a node is finished by its agent (which stops the containers first)
        if grace == 0:
            return False
        return bool((obj.get("spec") or {}).get("nodeName")) and \
            (obj.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def _keep_default_tolerations(old_spec: dict[str, Any], spec: dict[str, Any]) -> None:
    """DefaultTolerationSeconds runs on updates too: an update that drops the not-ready and
    unreachable tolerations it added gets them back."""
    tolerations = spec.get("tolerations")
    if tolerations is not None and not isinstance(tolerations, list):
        return
    tolerations = list(tolerations or [])
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if any(isinstance(t, dict) and t.get("key") in (key, None, "")
               and t.get("effect") in ("NoExecute", None, "") for t in tolerations):
            continue
        tolerations += [t for t in old_spec.get("tolerations") or []
                        if isinstance(t, dict) and t.get("key") == key]
    if tolerations or "tolerations" in spec:
        spec["tolerations"] = tolerations


def _default_container(c: dict[str, Any]) -> None:
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    image = c.get("image") or ""
    if isinstance(image, str):
        tag_latest = ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")
        c.setdefault("imagePullPolicy", "Always" if tag_latest else "IfNotPresent")
    c.setdefault("resources", {})
    for p in c.get("ports") or []:
        if isinstance(p, dict):
            p.setdefault("protocol", "TCP")


def _validate_containers(containers: Any, path: str, *, required: bool) -> list[errors.Cause]:
    if containers is None or containers == []:
        return [errors.required(path)] if required else []
    if not isinstance(containers, list):
        return [errors.Cause("FieldValueTypeInvalid", "Invalid value: must be a list", path)]
    causes: list[errors.Cause] = []
    seen: set[str] = set()
    for i, c in enumerate(containers):
        p = f"{path}[{i}]"
        if not isinstance(c, dict):
            causes.append(errors.Cause("FieldValueTypeInvalid", "Invalid value: must be an object", p))
            continue
        causes += validation.container_name_causes(c.get("name"), f"{p}.name", seen)
        if not c.get("image"):
            causes.append(errors.required(f"{p}.image"))
        causes += _validate_resources(c.get("resources"), f"{p}.resources")
    return causes


def _validate_resources(res: Any, path: str) -> list[errors.Cause]:
    """Quantities must parse and not be negative; a request may not exceed its limit."""
    if res is None:
        return []
    if not isinstance(res, dict):
        return [errors.invalid_value(path, res, "must be an object")]
    causes: list[errors.Cause] = []
    parsed: dict[str, dict[str, Any]] = {}
    for section in ("requests", "limits"):
        values = res.get(section)
        if values is None:
            continue
        if not isinstance(values, dict):
            causes.append(errors.invalid_value(f"{path}.{section}", values, "must be a map"))
            continue
        for name, raw in values.items():
            field = f"{path}.{section}[{name}]"
            try:
                amount = quantity.parse(raw)
            except ValueError as e:
                causes.append(errors.invalid_value(field, raw, str(e)))
                continue
            if amount < 0:
                causes.append(errors.invalid_value(field, raw, "must be greater than or equal "
                                                               "to 0"))
            parsed.setdefault(section, {})[name] = amount
    for name, request in (parsed.get("requests") or {}).items():
        limit = (parsed.get("limits") or {}).get(name)
        if limit is not None and request > limit:
            causes.append(errors.invalid_value(
                f"{path}.requests[{name}]", res["requests"][name],
                f"must be less than or equal to {name} limit of {res['limits'][name]}"))
    return causes


# -- printer -------------------------------------------------------------------------------------
@printer(columns=[
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
    return parse_rfc3339(_get(status, "lastState", "terminated", "finishedAt"))


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


def _pod_conditions(obj: dict[str, Any]) -> list[dict[str, str]]:
    """Row conditions upstream attaches: finished pods are marked ``Completed``."""
    phase = _get(obj, "status", "phase")
    if phase == "Succeeded":
        return [{"type": "Completed", "status": "True", "reason": "PodCompleted",
                 "message": "The pod has completed successfully."}]
    if phase == "Failed":
        return [{"type": "Completed", "status": "True", "reason": "PodFailed",
                 "message": "The pod failed."}]
    return []


# -- selectable fields ---------------------------------------------------------------------------
def _pod_fields(obj: dict[str, Any]) -> dict[str, str]:
    pod_ip = field_str(_get(obj, "status", "podIPs", 0, "ip")) or field_str(_get(obj, "status", "podIP"))
    return {
        "spec.nodeName": field_str(_get(obj, "spec", "nodeName")),
        "spec.restartPolicy": field_str(_get(obj, "spec", "restartPolicy")),
        "spec.schedulerName": field_str(_get(obj, "spec", "schedulerName")),
        "spec.serviceAccountName": field_str(_get(obj, "spec", "serviceAccountName")),
        "spec.hostNetwork": field_bool(_get(obj, "spec", "hostNetwork")),
        "status.phase": field_str(_get(obj, "status", "phase")),
        "status.podIP": pod_ip,
        "status.nominatedNodeName": field_str(_get(obj, "status", "nominatedNodeName")),
    }


POD = Kind(PODS, PodStrategy(), Printer(_pod.columns, _pod.cells, _pod_conditions), _pod_fields)
