"""Per-kind rules applied on writes: defaults, validation, status handling, deletion.

``Strategy`` holds what every kind shares (upstream's generic registry
behaviour); subclasses override only what their kind does differently, as
kube-apiserver's per-resource ``strategy.go`` files do.
"""

from __future__ import annotations

import ipaddress
import logging
import time
import random
from typing import TYPE_CHECKING, Any

import orjson

from atoll.api import errors, validation
from atoll.api.kinds import STANDARD_FINALIZERS, ResourceType
from atoll.apiserver import builtin_schema, podpaths, podupdate

if TYPE_CHECKING:
    from atoll.apiserver.objects import ObjectService, WriteOptions

IMMUTABLE_META = ("uid", "creationTimestamp", "name", "namespace")
SERVER_META = ("generation", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink")

log = logging.getLogger(__name__)


class Strategy:
    default_propagation = "Background"
    allow_create_on_update = False

    def prepare_create(self, svc: "ObjectService", rt: ResourceType, obj: dict[str, Any],
                       opts: "WriteOptions") -> None:
        """Defaults and server-set fields on create."""

    def validate_create(self, svc: "ObjectService", rt: ResourceType, obj: dict[str, Any]) -> None:
        causes = self.validate(rt, obj)
        if causes:
            raise errors.invalid(rt.kind, obj["metadata"].get("name", ""), causes, rt.group)

    def validate_update(self, svc: "ObjectService", rt: ResourceType, old: dict[str, Any],
                        new: dict[str, Any]) -> None:
        causes = self.validate(rt, new) + self.validate_transition(rt, old, new)
        if causes:
            raise errors.invalid(rt.kind, new["metadata"].get("name", ""), causes, rt.group)

    def validate(self, rt: ResourceType, obj: dict[str, Any]) -> list[errors.Cause]:
        return []

    def validate_transition(self, rt: ResourceType, old: dict[str, Any],
                            new: dict[str, Any]) -> list[errors.Cause]:
        return []

    def prepare_update(self, rt: ResourceType, old: dict[str, Any], new: dict[str, Any],
                       subresource: str = "") -> None:
        """Kind-specific carry-over of server-owned fields on update."""

    def deletion_finalizers(self, rt: ResourceType, obj: dict[str, Any]) -> list[str]:
        return []

    def graceful_delete(self, rt: ResourceType, obj: dict[str, Any], grace: int | None) -> bool:
        """True when deletion first marks the object and someone else finishes it."""
        return False

    def deletion_grace(self, obj: dict[str, Any], grace: int | None) -> int:
        """``deletionGracePeriodSeconds`` to record when an object is marked for deletion."""
        return grace if grace is not None else 0

    def on_delete_marked(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        pass

    def ready_to_delete(self, obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        return bool(meta.get("deletionTimestamp")) and not meta.get("finalizers")


# -- generic steps ----------------------------------------------------------------------------
def decode_check(rt: ResourceType, obj: dict[str, Any], opts: "WriteOptions") -> None:
    """What decoding into Go types refuses (wrong JSON types: 400) and drops (unknown fields).

    Runs before any kind-specific defaulting, so that code only sees well-typed objects.
    """
    if rt.custom is None:
        builtin_schema.check(rt, obj, opts)


def validate_common(svc: "ObjectService", rt: ResourceType, obj: dict[str, Any],
                    opts: "WriteOptions") -> None:
    """Metadata rules for every kind, then custom resources' schemas."""
    meta = obj["metadata"]
    causes = validation.validate_object_meta(meta, namespaced=rt.namespaced,
                                             name_rule=rt.name_rule)
    name = meta.get("name", "") if isinstance(meta.get("name"), str) else ""
    if causes:
        raise errors.invalid(rt.kind, name, causes, rt.group)
    if rt.custom is not None:
        rt.custom.admit(rt, obj, opts)


def prepare_update(svc: "ObjectService", rt: ResourceType, old: dict[str, Any], new: dict[str, Any],
                   opts: "WriteOptions", *, subresource: str = "") -> None:
    """Carry server-owned fields over, apply status-subresource rules, bump generation."""
    if not isinstance(new.get("metadata"), dict):
        raise errors.BadRequest("metadata must be an object")
    old_meta, new_meta = old["metadata"], new["metadata"]
    causes = validation.validate_update_meta(old_meta, new_meta)
    if causes:
        raise errors.invalid(rt.kind, old_meta.get("name", ""), causes, rt.group)
    if subresource == "status":
        status = new.get("status")
        new.clear()
        new.update(orjson.loads(orjson.dumps(old)))
        if status is None:
            new.pop("status", None)
        else:
            new["status"] = status
        new_meta = new["metadata"]
    elif subresource in ("", "scale") and rt.has_status:
        if "status" in old:
            new["status"] = old["status"]
        else:
            new.pop("status", None)
    for f in IMMUTABLE_META:
        if f in old_meta:
            new_meta[f] = old_meta[f]
    for f in SERVER_META:
        if f in old_meta:
            new_meta[f] = old_meta[f]
        else:
            new_meta.pop(f, None)
    if old_meta.get("deletionTimestamp"):
        added = set(new_meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
        if added:
            raise errors.invalid(rt.kind, old_meta.get("name", ""), [errors.forbidden_field(
                "metadata.finalizers",
                f"no new finalizers can be added if the object is being deleted, found new "
                f"finalizers {sorted(added)}")], rt.group)
    if subresource != "status":
        decode_check(rt, new, opts)
    for_type(rt).prepare_update(rt, old, new, subresource)
    if subresource != "status":
        validate_common(svc, rt, new, opts)
    if (rt.generation or rt.custom is not None) and spec_changed(old, new):
        new_meta["generation"] = int(old_meta.get("generation") or 1) + 1


def spec_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    for key in set(old) | set(new):
        if key in ("metadata", "status", "apiVersion", "kind"):
            continue
        if old.get(key) != new.get(key):
            return True
    return False


def track_managed_fields(rt: ResourceType, old: dict[str, Any] | None, new: dict[str, Any],
                         opts: "WriteOptions", *, operation: str = "Update",
                         subresource: str = "") -> None:
    """Record field ownership for non-apply writes (apply records its own).

    Bindings are not recorded, as upstream: the scheduler's ``nodeName`` is not a
    field anyone applies, and skipping it halves what a binding costs.
    """
    if operation == "Apply" or subresource == "binding":
        return
    from atoll.api import managedfields
    from atoll.apiserver.objects import now_rfc3339

    manager = opts.field_manager or "unknown"
    try:
        managed = managedfields.track_update(
            old, new, manager=manager, api_version=rt.group_version, now=now_rfc3339(),
            schema=schema_for(rt), subresource=subresource)
    except errors.ApiError:
        raise
    except Exception:  # ownership bookkeeping must never fail a write
        log.exception("cannot track managed fields of %s", rt.kind)
        return
    if managed:
        new["metadata"]["managedFields"] = managed
    else:
        new["metadata"].pop("managedFields", None)


def schema_for(rt: ResourceType) -> dict[str, Any] | None:
    """The schema that drives merges and field ownership: upstream's, or the CRD version's."""
    if rt.custom is not None:
        return rt.custom.schema.raw if rt.custom.schema is not None else None
    from atoll.api import schemas

    return schemas.schema_for(rt.group, rt.version, rt.kind)


# -- kinds ------------------------------------------------------------------------------------
class NamespaceStrategy(Strategy):
    def prepare_create(self, svc, rt, obj, opts):  # type: ignore[no-untyped-def]
        obj["spec"] = {"finalizers": ["kubernetes"]}
        obj["status"] = {"phase": "Active"}
        meta = obj["metadata"]
        labels = meta.get("labels")
        if labels is None or isinstance(labels, dict):
            meta["labels"] = dict(labels or {})
            meta["labels"]["kubernetes.io/metadata.name"] = meta.get("name", "")

    def prepare_update(self, rt, old, new, subresource=""):  # type: ignore[no-untyped-def]
        if subresource != "finalize":
            new["spec"] = old.get("spec", {})
        labels = new["metadata"].get("labels")
        if labels is None or isinstance(labels, dict):
            new["metadata"]["labels"] = dict(labels or {})
            new["metadata"]["labels"]["kubernetes.io/metadata.name"] = new["metadata"]["name"]

    def graceful_delete(self, rt, obj, grace):  # type: ignore[no-untyped-def]
        return True

    def on_delete_marked(self, rt, obj):  # type: ignore[no-untyped-def]
        obj.setdefault("status", {})["phase"] = "Terminating"

    def ready_to_delete(self, obj):  # type: ignore[no-untyped-def]
        return super().ready_to_delete(obj) and not (obj.get("spec") or {}).get("finalizers")


def default_pod_spec(spec: dict[str, Any]) -> None:
    """The API type's defaults for a PodSpec (pods and workload templates alike)."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    for key in ("containers", "initContainers"):
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
        name = c.get("name")
        if not name:
            causes.append(errors.required(f"{p}.name"))
        elif not isinstance(name, str) or validation.is_dns1123_label(name):
            causes.append(errors.invalid_value(f"{p}.name", name,
                                               "a lowercase RFC 1123 label must consist of lower "
                                               "case alphanumeric characters or '-'"))
        elif name in seen:
            causes.append(errors.Cause("FieldValueDuplicate", f'Duplicate value: "{name}"',
                                       f"{p}.name"))
        else:
            seen.add(name)
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
    from atoll.api import quantity

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


def qos_class(spec: dict[str, Any]) -> str:
    requests_any = limits_all = False
    all_guaranteed = True
    for c in spec.get("containers") or []:
        if not isinstance(c, dict):
            continue
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        if req or lim:
            requests_any = True
        for r in ("cpu", "memory"):
            if r not in lim or (r in req and req[r] != lim[r]):
                all_guaranteed = False
        limits_all = limits_all or bool(lim)
    if not requests_any:
        return "BestEffort"
    return "Guaranteed" if all_guaranteed else "Burstable"


SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/12")


class ServiceStrategy(Strategy):
    def prepare_create(self, svc, rt, obj, opts):  # type: ignore[no-untyped-def]
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            obj["spec"] = spec = {}
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        spec.setdefault("internalTrafficPolicy", "Cluster")
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        for p in spec.get("ports") or []:
            if isinstance(p, dict):
                p.setdefault("protocol", "TCP")
                if "targetPort" not in p and "port" in p:
                    p["targetPort"] = p["port"]
        if spec.get("type") != "ExternalName" and not spec.get("clusterIP"):
            spec["clusterIP"] = _allocate_cluster_ip(svc)
            spec["clusterIPs"] = [spec["clusterIP"]]
        elif spec.get("clusterIP") and "clusterIPs" not in spec:
            spec["clusterIPs"] = [spec["clusterIP"]]
        obj.setdefault("status", {"loadBalancer": {}})

    def prepare_update(self, rt, old, new, subresource=""):  # type: ignore[no-untyped-def]
        old_spec, new_spec = old.get("spec") or {}, new.get("spec")
        if isinstance(new_spec, dict) and old_spec.get("clusterIP") and not new_spec.get("clusterIP"):
            new_spec["clusterIP"] = old_spec["clusterIP"]
            new_spec["clusterIPs"] = old_spec.get("clusterIPs", [old_spec["clusterIP"]])


def _allocate_cluster_ip(svc: "ObjectService") -> str:
    used = set()
    for cached in svc.cacher.list("/registry/core/services/"):
        ip = (cached.obj.get("spec") or {}).get("clusterIP")
        if ip:
            used.add(ip)
    size = SERVICE_CIDR.num_addresses
    for _ in range(1000):
        ip = str(SERVICE_CIDR.network_address + random.randrange(10, size - 1))
        if ip not in used:
            return ip
    raise errors.InternalError("no cluster IP available")


class WorkloadStrategy(Strategy):
    """Deployment, ReplicaSet, StatefulSet, DaemonSet: defaults and selector checks."""

    def prepare_create(self, svc, rt, obj, opts):  # type: ignore[no-untyped-def]
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return
        if rt.kind != "DaemonSet":
            spec.setdefault("replicas", 1)
        if rt.kind != "ReplicaSet":  # ReplicaSets have no revision history
            spec.setdefault("revisionHistoryLimit", 10)
        if rt.kind == "Deployment":
            spec.setdefault("progressDeadlineSeconds", 600)
            strategy = spec.get("strategy")
            if not isinstance(strategy, dict):
                strategy = spec["strategy"] = {}
            strategy.setdefault("type", "RollingUpdate")
            if strategy["type"] == "RollingUpdate":
                rolling = strategy.setdefault("rollingUpdate", {})
                if isinstance(rolling, dict):
                    rolling.setdefault("maxSurge", "25%")
                    rolling.setdefault("maxUnavailable", "25%")
        if rt.kind == "StatefulSet":
            spec.setdefault("podManagementPolicy", "OrderedReady")
            spec.setdefault("updateStrategy", {"type": "RollingUpdate",
                                               "rollingUpdate": {"partition": 0}})
        if rt.kind == "DaemonSet":
            spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {
                "maxSurge": 0, "maxUnavailable": 1}})
        tmpl = spec.get("template")
        if isinstance(tmpl, dict) and isinstance(tmpl.get("spec"), dict):
            default_pod_spec(tmpl["spec"])
        obj.setdefault("status", {})

    def validate(self, rt, obj):  # type: ignore[no-untyped-def]
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return [errors.required("spec")]
        causes: list[errors.Cause] = []
        sel = spec.get("selector")
        if not isinstance(sel, dict) or not (sel.get("matchLabels") or sel.get("matchExpressions")):
            causes.append(errors.required("spec.selector"))
        tmpl = spec.get("template")
        if not isinstance(tmpl, dict):
            causes.append(errors.required("spec.template"))
            return causes
        labels = (tmpl.get("metadata") or {}).get("labels") or {}
        if isinstance(sel, dict) and isinstance(sel.get("matchLabels"), dict) and \
                isinstance(labels, dict):
            for k, v in sel["matchLabels"].items():
                if labels.get(k) != v:
                    causes.append(errors.invalid_value(
                        "spec.template.metadata.labels", labels,
                        "`selector` does not match template `labels`"))
                    break
        tspec = tmpl.get("spec")
        if not isinstance(tspec, dict):
            causes.append(errors.required("spec.template.spec"))
        else:
            causes += _validate_containers(tspec.get("containers"),
                                           "spec.template.spec.containers", required=True)
        replicas = spec.get("replicas")
        if replicas is not None and (not isinstance(replicas, int) or isinstance(replicas, bool)
                                     or replicas < 0):
            causes.append(errors.invalid_value("spec.replicas", replicas,
                                               "must be greater than or equal to 0"))
        return causes

    def validate_transition(self, rt, old, new):  # type: ignore[no-untyped-def]
        if (old.get("spec") or {}).get("selector") != (new.get("spec") or {}).get("selector"):
            return [errors.invalid_value("spec.selector", (new.get("spec") or {}).get("selector"),
                                         "field is immutable")]
        return []


class JobStrategy(Strategy):
    def prepare_create(self, svc, rt, obj, opts):  # type: ignore[no-untyped-def]
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return
        spec.setdefault("parallelism", 1)
        spec.setdefault("completions", 1)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        uid = obj["metadata"]["uid"]
        tmpl = spec.get("template")
        if isinstance(tmpl, dict) and not spec.get("manualSelector"):
            labels = {"batch.kubernetes.io/controller-uid": uid, "controller-uid": uid,
                      "batch.kubernetes.io/job-name": obj["metadata"].get("name", ""),
                      "job-name": obj["metadata"].get("name", "")}
            tmeta = tmpl.setdefault("metadata", {})
            if isinstance(tmeta, dict):
                tmeta["labels"] = {**(tmeta.get("labels") or {}), **labels}
            spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        if isinstance(tmpl, dict) and isinstance(tmpl.get("spec"), dict):
            tmpl["spec"].setdefault("restartPolicy", "Never")
            default_pod_spec(tmpl["spec"])
        obj.setdefault("status", {})

    def validate(self, rt, obj):  # type: ignore[no-untyped-def]
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return [errors.required("spec")]
        tmpl = spec.get("template")
        if not isinstance(tmpl, dict) or not isinstance(tmpl.get("spec"), dict):
            return [errors.required("spec.template")]
        causes = _validate_containers(tmpl["spec"].get("containers"),
                                      "spec.template.spec.containers", required=True)
        if tmpl["spec"].get("restartPolicy") not in ("Never", "OnFailure"):
            causes.append(errors.not_supported("spec.template.spec.restartPolicy",
                                               tmpl["spec"].get("restartPolicy"),
                                               ["OnFailure", "Never"]))
        return causes

    @property
    def default_propagation(self) -> str:  # type: ignore[override]
        return "Background"


class SecretStrategy(Strategy):
    def prepare_create(self, svc, rt, obj, opts):  # type: ignore[no-untyped-def]
        _fold_string_data(obj)
        obj.setdefault("type", "Opaque")

    def prepare_update(self, rt, old, new, subresource=""):  # type: ignore[no-untyped-def]
        _fold_string_data(new)
        new.setdefault("type", old.get("type", "Opaque"))

    def validate(self, rt, obj):  # type: ignore[no-untyped-def]
        import base64
        import binascii

        data = obj.get("data")
        if data is None:
            return []
        if not isinstance(data, dict):
            return [errors.Cause("FieldValueTypeInvalid", "Invalid value: must be a map", "data")]
        causes = []
        for k, v in data.items():
            try:
                if not isinstance(v, str):
                    raise ValueError
                base64.b64decode(v, validate=True)
            except (ValueError, binascii.Error):
                causes.append(errors.invalid_value(f"data[{k}]", "<secret contents redacted>",
                                                   "illegal base64 data"))
        return causes


def _fold_string_data(obj: dict[str, Any]) -> None:
    import base64

    sd = obj.pop("stringData", None)
    if isinstance(sd, dict):
        data = obj.get("data")
        if not isinstance(data, dict):
            data = obj["data"] = {}
        for k, v in sd.items():
            data[k] = base64.b64encode(str(v).encode()).decode()


class CRDStrategy(Strategy):
    def prepare_create(self, svc, rt, obj, opts):  # type: ignore[no-untyped-def]
        from atoll.apiserver import crds

        crds.prepare(obj, None)

    def prepare_update(self, rt, old, new, subresource=""):  # type: ignore[no-untyped-def]
        from atoll.apiserver import crds

        crds.prepare(new, old)

    def validate(self, rt, obj):  # type: ignore[no-untyped-def]
        from atoll.apiserver import crds

        return crds.validate(obj)

    def deletion_finalizers(self, rt, obj):  # type: ignore[no-untyped-def]
        from atoll.apiserver import crds

        return [crds.CLEANUP_FINALIZER]

    def on_delete_marked(self, rt, obj):  # type: ignore[no-untyped-def]
        conds = (obj.get("status") or {}).get("conditions") or []
        if not any(c.get("type") == "Terminating" for c in conds if isinstance(c, dict)):
            conds.append({"type": "Terminating", "status": "True", "reason": "InstanceDeletionPending",
                          "message": "CustomResourceDefinition marked for deletion; its objects "
                                     "are being deleted"})
            obj.setdefault("status", {})["conditions"] = conds


class VirtualMachineStrategy(Strategy):
    """vm-operator's webhook rules for VirtualMachines that a schema cannot state."""

    def validate_create(self, svc, rt, obj):  # type: ignore[no-untyped-def]
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        causes = []
        if spec.get("powerState") == "Suspended":
            causes.append(errors.invalid_value("spec.powerState", "Suspended",
                                               "a VirtualMachine cannot be created Suspended"))
        if spec.get("nextRestartTime") not in (None, ""):
            causes.append(errors.invalid_value("spec.nextRestartTime", spec["nextRestartTime"],
                                               "can only be set on update, to \"now\""))
        if causes:
            raise errors.invalid(rt.kind, obj["metadata"].get("name", ""), causes, rt.group)

    def prepare_update(self, rt, old, new, subresource=""):  # type: ignore[no-untyped-def]
        """``nextRestartTime: now`` (any case, as upstream) becomes the time of this request,
        to the microsecond so that two restarts within a second stay two (the agent restarts
        the VM once per value); any other new value is refused."""
        spec = new.get("spec")
        if subresource or not isinstance(spec, dict):
            return
        before = (old.get("spec") or {}).get("nextRestartTime") or ""
        wanted = spec.get("nextRestartTime") or ""
        if isinstance(wanted, str) and wanted.lower() == "now":
            now = time.time()
            spec["nextRestartTime"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + \
                f".{int(now % 1 * 1e6):06d}Z"
        elif wanted not in ("", before):
            raise errors.invalid(rt.kind, new["metadata"].get("name", ""), [errors.invalid_value(
                "spec.nextRestartTime", wanted, 'must be "now" (or left unchanged)')], rt.group)


class CustomResourceStrategy(Strategy):
    """Custom resources: schema work happens in ``custom.admit``; nothing kind-specific."""


_DEFAULT = Strategy()
_BY_KIND: dict[str, Strategy] = {
    "/Namespace": NamespaceStrategy(),
    "/Pod": PodStrategy(),
    "/Service": ServiceStrategy(),
    "/Secret": SecretStrategy(),
    "apps/Deployment": WorkloadStrategy(),
    "apps/ReplicaSet": WorkloadStrategy(),
    "apps/StatefulSet": WorkloadStrategy(),
    "apps/DaemonSet": WorkloadStrategy(),
    "batch/Job": JobStrategy(),
    "apiextensions.k8s.io/CustomResourceDefinition": CRDStrategy(),
    "vmoperator.vmware.com/VirtualMachine": VirtualMachineStrategy(),
}


def for_type(rt: ResourceType) -> Strategy:
    return _BY_KIND.get(rt.kind_key, _DEFAULT)


def register(kind_key: str, strategy: Strategy) -> None:
    """For kinds whose rules live in their own module (``<group>/<Kind>``)."""
    _BY_KIND[kind_key] = strategy


__all__ = ["Strategy", "for_type", "decode_check", "validate_common", "prepare_update", "track_managed_fields",
           "STANDARD_FINALIZERS"]
