"""core/v1 kinds (but pods, events and volumes, in their own modules): namespaces, nodes,
services, endpoints, configmaps, secrets, service accounts, resource quotas, limit ranges.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from typing import Any

from atoll.api import errors
from atoll.api.printing import (Cells, _age, _age_col, _dict, _get, _int, _list, _name,
                                _name_col, _quantity, _str, _wide, column, created_at_printer,
                                format_labels, printer)
from atoll.api.resources.base import Kind, field_bool, field_str
from atoll.api.resourcetype import ALL_VERBS, PROXY_VERBS, STATUS, Subresource, builtin
from atoll.api.resources import serviceaddresses as sa
from atoll.api.strategy import Strategy

NAMESPACES = builtin("", "v1", "Namespace", "namespaces", False, short_names=("ns",),
                     name_rule="label",
                     subresources=(STATUS, Subresource("finalize", verbs=("update",))),
                     generation=False,
                     verbs=tuple(v for v in ALL_VERBS if v != "deletecollection"))
NODES = builtin("", "v1", "Node", "nodes", False, short_names=("no",),
                subresources=(STATUS, Subresource("proxy", kind="NodeProxyOptions",
                                                  verbs=PROXY_VERBS)),
                generation=False)
SERVICES = builtin("", "v1", "Service", "services", True, short_names=("svc",),
                   categories=("all",), name_rule="dns1035",
                   subresources=(STATUS, Subresource("proxy", kind="ServiceProxyOptions",
                                                     verbs=PROXY_VERBS)))
ENDPOINTS = builtin("", "v1", "Endpoints", "endpoints", True, short_names=("ep",),
                    generation=False)
CONFIGMAPS = builtin("", "v1", "ConfigMap", "configmaps", True, short_names=("cm",),
                     generation=False)
SECRETS = builtin("", "v1", "Secret", "secrets", True, generation=False)
SERVICEACCOUNTS = builtin("", "v1", "ServiceAccount", "serviceaccounts", True,
                          short_names=("sa",),
                          subresources=(Subresource("token", kind="TokenRequest",
                                                    group="authentication.k8s.io",
                                                    version="v1", verbs=("create",)),),
                          generation=False)
RESOURCEQUOTAS = builtin("", "v1", "ResourceQuota", "resourcequotas", True,
                         short_names=("quota",), subresources=(STATUS,))
LIMITRANGES = builtin("", "v1", "LimitRange", "limitranges", True, short_names=("limits",),
                      generation=False)


# -- namespaces ----------------------------------------------------------------------------------
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


@printer(columns=[_name_col(), column("Status", description="The status of the namespace"),
                                 _age_col()])
def _namespace(obj: dict[str, Any], now: float) -> Cells:
    return [_name(obj), _str(_get(obj, "status", "phase")), _age(obj, now)]


# -- nodes ---------------------------------------------------------------------------------------
@printer(columns=[
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


# -- services and endpoints ----------------------------------------------------------------------
def service_spec_causes(spec: Any) -> list[errors.Cause]:
    """Upstream's checks of the Service fields the dataplane programs: source ranges are
    CIDRs (space-padding allowed) and only for LoadBalancers, external IPs are addresses,
    ports are port numbers."""
    if not isinstance(spec, dict):
        return []
    causes: list[errors.Cause] = []
    ranges = spec.get("loadBalancerSourceRanges")
    if ranges:
        path = "spec.loadBalancerSourceRanges"
        if spec.get("type") != "LoadBalancer":
            causes.append(errors.forbidden_field(
                path, "may only be used when `type` is 'LoadBalancer'"))
        for i, value in enumerate(_list(ranges)):
            if not isinstance(value, str) or not _is_cidr(value.strip()):
                causes.append(errors.invalid_value(
                    f"{path}[{i}]", value,
                    "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"))
    for i, value in enumerate(_list(spec.get("externalIPs"))):
        if not isinstance(value, str) or not _is_ip(value):
            causes.append(errors.invalid_value(f"spec.externalIPs[{i}]", value,
                                               "must be a valid IP address"))
    for i, port in enumerate(_list(spec.get("ports"))):
        if not isinstance(port, dict):
            continue
        number = port.get("port")
        if number is not None and not _port_number(number):
            causes.append(errors.invalid_value(f"spec.ports[{i}].port", number,
                                               "must be between 1 and 65535, inclusive"))
    return causes


def _is_cidr(value: str) -> bool:
    if "/" not in value:
        return False
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _port_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


class ServiceStrategy(Strategy):
    def prepare_create(self, svc, rt, obj, opts):  # type: ignore[no-untyped-def]
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            obj["spec"] = spec = {}
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        spec.setdefault("internalTrafficPolicy", "Cluster")
        if spec["type"] in sa.NODE_PORT_TYPES:
            spec.setdefault("externalTrafficPolicy", "Cluster")
        if spec["type"] == "LoadBalancer":
            spec.setdefault("allocateLoadBalancerNodePorts", True)
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        for p in spec.get("ports") or []:
            if isinstance(p, dict):
                p.setdefault("protocol", "TCP")
                if "targetPort" not in p and "port" in p:
                    p["targetPort"] = p["port"]
        if isinstance(spec.get("ports") or [], list):
            sa.assign_cluster_ip(svc, rt, obj)
            sa.assign_node_ports(svc, rt, obj)
        obj.setdefault("status", {"loadBalancer": {}})

    def prepare_update(self, rt, old, new, subresource=""):  # type: ignore[no-untyped-def]
        old_spec, new_spec = old.get("spec") or {}, new.get("spec")
        if isinstance(new_spec, dict) and old_spec.get("clusterIP") and not new_spec.get("clusterIP") \
                and new_spec.get("type") != "ExternalName":
            new_spec["clusterIP"] = old_spec["clusterIP"]
            new_spec["clusterIPs"] = old_spec.get("clusterIPs", [old_spec["clusterIP"]])
        if isinstance(new_spec, dict) and new_spec.get("type") in sa.NODE_PORT_TYPES:
            # a node port left out of an update keeps the one it had (kubectl apply drops it)
            had = {(p.get("port"), p.get("protocol", "TCP")): p.get("nodePort")
                   for p in old_spec.get("ports") or [] if isinstance(p, dict)}
            for p in new_spec.get("ports") or []:
                if isinstance(p, dict) and not p.get("nodePort"):
                    kept = had.get((p.get("port"), p.get("protocol", "TCP")))
                    if kept:
                        p["nodePort"] = kept

    def validate(self, rt, obj):  # type: ignore[no-untyped-def]
        return service_spec_causes(obj.get("spec"))

    def validate_update(self, svc, rt, old, new):  # type: ignore[no-untyped-def]
        """Also allocates: a type change may need a cluster IP or node ports, and only this
        step of an update sees the other Services."""
        super().validate_update(svc, rt, old, new)
        spec = new.get("spec")
        if not isinstance(spec, dict) or not isinstance(spec.get("ports") or [], list):
            return
        old_spec = old.get("spec") or {}
        had, wants = old_spec.get("clusterIP"), spec.get("clusterIP")
        if not sa.wants_cluster_ip(spec):
            if spec.get("type") == "ExternalName":
                spec.pop("clusterIP", None)
                spec.pop("clusterIPs", None)
        elif had and had != "None" and wants != had:
            raise errors.invalid("Service", new["metadata"].get("name", ""), [
                errors.invalid_value("spec.clusterIPs[0]", wants or "", "may not change once set")])
        elif not had or had == "None":
            if not wants:
                spec.pop("clusterIPs", None)
            sa.assign_cluster_ip(svc, rt, new)
        sa.assign_node_ports(svc, rt, new, old)


@printer(columns=[
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


@printer(columns=[
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


# -- configmaps, secrets, service accounts ----------------------------------------------------------
@printer(columns=[_name_col(), column("Data", description="Data contains the "
                                                                        "configuration data."),
                                 _age_col()])
def _configmap(obj: dict[str, Any], now: float) -> Cells:
    return [_name(obj), len(_dict(obj.get("data"))) + len(_dict(obj.get("binaryData"))),
            _age(obj, now)]


#: upstream's MaxConfigMapSize and MaxSecretSize: what fits in one etcd value with room left
MAX_DATA_BYTES = 1024 * 1024
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_CONFIG_KEY_MESSAGE = ("a valid config key must consist of alphanumeric characters, '-', '_' or "
                       "'.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for "
                       "validation is '[-._a-zA-Z0-9]+')")


def config_key_causes(path: str, key: Any) -> list[errors.Cause]:
    """As upstream's IsConfigMapKey: the keys of ConfigMaps and Secrets become file names."""
    if not isinstance(key, str):
        return [errors.invalid_value(path, key, "must be a string")]
    out = []
    if len(key) > 253:
        out.append(errors.invalid_value(path, key, "must be no more than 253 characters"))
    if not _CONFIG_KEY.match(key):
        out.append(errors.invalid_value(path, key, _CONFIG_KEY_MESSAGE))
    if key in (".", "..") or key.startswith(".."):
        out.append(errors.invalid_value(path, key, "must not be '.' or '..'" if key in (".", "..")
                                        else "must not start with '..'"))
    return out


def _too_long(path: str) -> errors.Cause:
    return errors.Cause("FieldValueTooLong",
                        f"Too long: may not be more than {MAX_DATA_BYTES} bytes", path)


def canonical_base64(value: Any) -> Any:
    """A []byte field as Go's JSON decoder reads it and the API writes it back: line breaks
    (``\\r``, ``\\n``) ignored, then re-encoded without them.  A value that is not base64 is
    left as it is, for validation to name."""
    if not isinstance(value, str) or ("\n" not in value and "\r" not in value):
        return value
    try:
        decoded = base64.b64decode(value.replace("\r", "").replace("\n", ""), validate=True)
    except (ValueError, binascii.Error):
        return value
    return base64.b64encode(decoded).decode()


def _canonical_section(obj: dict[str, Any], name: str) -> None:
    section = obj.get(name)
    if isinstance(section, dict):
        obj[name] = {k: canonical_base64(v) for k, v in section.items()}


def _base64_causes(section: dict[str, Any], name: str,
                   shown: str | None) -> tuple[list[errors.Cause], int]:
    """Invalid base64 values of ``section`` (``shown`` replaces the value in the message, for
    secrets) and the decoded size of the valid ones."""
    causes, total = [], 0
    for k, v in section.items():
        try:
            if not isinstance(v, str):
                raise ValueError
            total += len(base64.b64decode(v, validate=True))
        except (ValueError, binascii.Error):
            causes.append(errors.invalid_value(f"{name}[{k}]", v if shown is None else shown,
                                               "illegal base64 data"))
    return causes, total


class ConfigMapStrategy(Strategy):
    def prepare_create(self, svc, rt, obj, opts):  # type: ignore[no-untyped-def]
        _canonical_section(obj, "binaryData")

    def prepare_update(self, rt, old, new, subresource=""):  # type: ignore[no-untyped-def]
        _canonical_section(new, "binaryData")

    def validate(self, rt, obj):  # type: ignore[no-untyped-def]
        data, binary = obj.get("data"), obj.get("binaryData")
        causes: list[errors.Cause] = []
        total = 0
        for name, section in (("data", data), ("binaryData", binary)):
            if section is None:
                continue
            if not isinstance(section, dict):
                causes.append(errors.Cause("FieldValueTypeInvalid", "Invalid value: must be a map",
                                           name))
                continue
            for k, v in section.items():
                causes.extend(config_key_causes(f"{name}[{k}]", k))
                if isinstance(v, str) and name == "data":
                    total += len(v.encode())
            if name == "binaryData":
                bad, size = _base64_causes(section, name, None)
                causes += bad
                total += size
        if isinstance(data, dict) and isinstance(binary, dict):
            causes.extend(errors.invalid_value(f"data[{k}]", k, "duplicate of key present in "
                                               "binaryData") for k in data if k in binary)
        if total > MAX_DATA_BYTES:
            causes.append(_too_long(""))
        return causes


class SecretStrategy(Strategy):
    def prepare_create(self, svc, rt, obj, opts):  # type: ignore[no-untyped-def]
        _canonical_section(obj, "data")
        _fold_string_data(obj)
        obj.setdefault("type", "Opaque")

    def prepare_update(self, rt, old, new, subresource=""):  # type: ignore[no-untyped-def]
        _canonical_section(new, "data")
        _fold_string_data(new)
        new.setdefault("type", old.get("type", "Opaque"))

    def validate(self, rt, obj):  # type: ignore[no-untyped-def]
        data = obj.get("data")
        if data is None:
            return []
        if not isinstance(data, dict):
            return [errors.Cause("FieldValueTypeInvalid", "Invalid value: must be a map", "data")]
        causes = [c for k in data for c in config_key_causes(f"data[{k}]", k)]
        bad, total = _base64_causes(data, "data", "<secret contents redacted>")
        causes += bad
        if total > MAX_DATA_BYTES:
            causes.append(_too_long("data"))
        return causes


def _fold_string_data(obj: dict[str, Any]) -> None:
    sd = obj.pop("stringData", None)
    if isinstance(sd, dict):
        data = obj.get("data")
        if not isinstance(data, dict):
            data = obj["data"] = {}
        for k, v in sd.items():
            data[k] = base64.b64encode(str(v).encode()).decode()


@printer(columns=[_name_col(), column("Type", description="Used to facilitate "
                                                                      "programmatic handling of "
                                                                      "secret data."),
                              column("Data", description="Data contains the secret data."),
                              _age_col()])
def _secret(obj: dict[str, Any], now: float) -> Cells:
    keys = set(_dict(obj.get("data"))) | set(_dict(obj.get("stringData")))
    return [_name(obj), _str(obj.get("type")), len(keys), _age(obj, now)]


@printer(columns=[_name_col(), column("Secrets", description="Secrets is a list "
                                                                                 "of the secrets in "
                                                                                 "the same namespace "
                                                                                 "that pods running "
                                                                                 "using this "
                                                                                 "ServiceAccount are "
                                                                                 "allowed to use."),
                                      _age_col()])
def _service_account(obj: dict[str, Any], now: float) -> Cells:
    return [_name(obj), len(_list(obj.get("secrets"))), _age(obj, now)]


# -- resource quotas ------------------------------------------------------------------------------
@printer(columns=[
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


NAMESPACE = Kind(NAMESPACES, NamespaceStrategy(), _namespace,
                 lambda o: {"status.phase": field_str(_get(o, "status", "phase")),
                            "name": field_str(_get(o, "metadata", "name"))})
class NodeStrategy(Strategy):
    def prepare_create(self, svc, rt, obj, opts):  # type: ignore[no-untyped-def]
        # upstream always serializes a Node's status, so clients index it without a check;
        # a host registers first and posts its status right after
        if not isinstance(obj.get("status"), dict):
            obj["status"] = {}


NODE = Kind(NODES, NodeStrategy(), _node,
            fields=lambda o: {"spec.unschedulable": field_bool(_get(o, "spec", "unschedulable"))})
SERVICE = Kind(SERVICES, ServiceStrategy(), _service)
ENDPOINT = Kind(ENDPOINTS, printer=_endpoints)
CONFIGMAP = Kind(CONFIGMAPS, ConfigMapStrategy(), _configmap)
SECRET = Kind(SECRETS, SecretStrategy(), _secret, lambda o: {"type": field_str(o.get("type"))})
SERVICEACCOUNT = Kind(SERVICEACCOUNTS, printer=_service_account)
RESOURCEQUOTA = Kind(RESOURCEQUOTAS, printer=_resource_quota)
LIMITRANGE = Kind(LIMITRANGES, printer=created_at_printer)
