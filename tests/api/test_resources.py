"""The registry of built-in kinds: each declared once, and its rules see only ``ObjectReader``."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

import pytest

from atoll.api import errors, kinds, resources
from atoll.api.resources import core_v1
from atoll.api.resources.serviceaddresses import ServiceRanges
from atoll.api.resourcetype import ResourceType
from atoll.api.strategy import ObjectReader, Strategy, WriteOptions


def test_each_kind_is_declared_once() -> None:
    keys = [k.kind_key for k in resources.SERVED + resources.EXTRA]
    assert len(keys) == len(set(keys))
    served = [(rt.group, rt.version, rt.plural) for rt in resources.BUILTIN]
    assert len(served) == len(set(served))
    assert kinds.BUILTIN == resources.BUILTIN
    for k in resources.SERVED:
        if k.rt is None:
            continue
        assert resources.builtin_type(k.rt.group, k.rt.plural) is k.rt  # the stored version
        for rt in (k.rt, *k.other_versions):
            assert resources.kind(rt.kind_key) is k
            assert rt in resources.BUILTIN
            assert rt is k.rt or rt.storage_version == k.rt.version


def test_declarations_hold_what_they_say() -> None:
    for k in resources.SERVED + resources.EXTRA:
        assert k.strategy is None or isinstance(k.strategy, Strategy), k.kind_key
        assert (k.rt is None) == bool(k.key), k.kind_key
    assert resources.strategy_for("/Endpoints") is None  # the generic rules apply
    assert resources.printer_for("/ReplicationController") is not None
    assert resources.fields_for("apps/Deployment") is None


def test_the_object_service_is_an_object_reader() -> None:
    from atoll.apiserver.objects import ObjectService

    for name in ("read", "read_list", "resource"):
        assert callable(getattr(ObjectService, name)), name
    assert "pod_toleration_seconds" in ObjectReader.__annotations__


@dataclass
class _Stored:
    key: str
    obj: dict[str, Any]
    raw: bytes = b""
    mod_revision: int = 1


class _Reader:
    """A read-only view over a dict of objects: all a strategy may use."""

    pod_toleration_seconds = 300
    service_ranges = ServiceRanges(ipaddress.IPv4Network("10.96.0.0/24"), (30000, 30009))

    def __init__(self, objs: list[tuple[ResourceType, dict[str, Any]]]) -> None:
        self.objs = objs

    def read(self, rt: ResourceType, namespace: str, name: str) -> _Stored | None:
        return next((s for s in self.read_list(rt, namespace)
                     if s.obj["metadata"]["name"] == name), None)

    def read_list(self, rt: ResourceType, namespace: str = "") -> list[_Stored]:
        prefix = rt.prefix(namespace)
        stored = [_Stored(rt.key(o["metadata"].get("namespace", ""), o["metadata"]["name"]), o)
                  for t, o in self.objs if t is rt]
        return sorted((s for s in stored if s.key.startswith(prefix)), key=lambda s: s.key)

    def resource(self, group: str, plural: str) -> ResourceType | None:
        return None


def test_a_strategy_works_against_the_read_only_view() -> None:
    taken = [(core_v1.SERVICES, {"metadata": {"name": f"s{i}", "namespace": "a"},
                                 "spec": {"clusterIP": f"10.96.0.{i}"}}) for i in range(10, 250)]
    reader: ObjectReader = _Reader(taken)
    svc = {"metadata": {"name": "new", "namespace": "a"}, "spec": {"ports": [{"port": 80}]}}
    core_v1.SERVICE.strategy.prepare_create(reader, core_v1.SERVICES, svc, WriteOptions())
    ip = svc["spec"]["clusterIP"]
    # 10-249 taken, and 1-16 are the static band: only 250-254 remain for dynamic picks
    assert ip in {f"10.96.0.{i}" for i in range(250, 255)}, ip
    assert svc["spec"]["clusterIPs"] == [ip]
    assert svc["spec"]["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]


def _service(name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "a"},
            "spec": {"ports": [{"port": 80}], **spec}}


def test_requested_cluster_ips_and_node_ports_are_checked_as_upstream() -> None:
    strategy = core_v1.SERVICE.strategy
    reader = _Reader([(core_v1.SERVICES, {
        "metadata": {"name": "old", "namespace": "a"},
        "spec": {"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"], "type": "NodePort",
                 "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30001}]}})])
    cases = {
        "spec.clusterIPs: Invalid value: \"10.96.0.1\": failed to allocate IP 10.96.0.1: "
        "provided IP is already allocated": _service("a", clusterIP="10.96.0.1"),
        "is not in the valid range. The range of valid IPs is 10.96.0.0/24":
            _service("b", clusterIP="10.97.0.1"),
        "must be a valid IP address": _service("c", clusterIP="ten"),
        "spec.ports[0].nodePort: Invalid value: 30001: provided port is already allocated":
            _service("d", type="NodePort", ports=[{"port": 80, "nodePort": 30001}]),
        "provided port is not in the valid range. The range of valid ports is 30000-30009":
            _service("e", type="NodePort", ports=[{"port": 80, "nodePort": 80}]),
    }
    for message, body in cases.items():
        with pytest.raises(errors.Invalid) as caught:
            strategy.prepare_create(reader, core_v1.SERVICES, body, WriteOptions())
        assert caught.value.code == 422 and message in str(caught.value), (message, caught.value)
    # the well-known static address is free to ask for; node ports fill the rest of the range
    dns = _service("kube-dns", clusterIP="10.96.0.10", type="NodePort",
                   ports=[{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}])
    strategy.prepare_create(reader, core_v1.SERVICES, dns, WriteOptions())
    ports = [p["nodePort"] for p in dns["spec"]["ports"]]
    assert dns["spec"]["clusterIPs"] == ["10.96.0.10"]
    assert len(set(ports)) == 2 and all(30000 <= p <= 30009 and p != 30001 for p in ports)
    headless = _service("h", clusterIP="None")
    strategy.prepare_create(reader, core_v1.SERVICES, headless, WriteOptions())
    assert headless["spec"]["clusterIPs"] == ["None"]


def test_configmap_and_secret_data_limits_and_keys_as_upstream() -> None:
    import base64

    from atoll.api.resources import core_v1

    cm = core_v1.ConfigMapStrategy()
    rt = core_v1.CONFIGMAPS
    assert cm.validate(rt, {"data": {"a.b_c-D": "x" * 1000}, "binaryData": {"bin": "AAAA"}}) == []
    big = cm.validate(rt, {"data": {f"k{i}": "x" * 1024 for i in range(1025)}})
    assert [(c.reason, c.field) for c in big] == [("FieldValueTooLong", "")]
    assert "1048576 bytes" in big[0].message
    bad = cm.validate(rt, {"data": {"a/b": "", "..x": "", "dup": ""}, "binaryData": {"dup": ""}})
    assert {c.field for c in bad} == {"data[a/b]", "data[..x]", "data[dup]"}
    secret = core_v1.SecretStrategy()
    chunk = base64.b64encode(b"x" * 1024).decode()
    assert [c.field for c in secret.validate(core_v1.SECRETS, {"data": {
        f"k{i}": chunk for i in range(1025)}})] == ["data"]
    assert secret.validate(core_v1.SECRETS, {"data": {"ok": chunk}}) == []


def test_base64_fields_read_as_go_reads_them() -> None:
    """Go's []byte decoding skips line breaks; the API stores the canonical form."""
    secret = {"metadata": {"name": "s"}, "data": {"a": "aGVs\nbG8=", "b": "aGVsbG8=\r\n"}}
    core_v1.SecretStrategy().prepare_create(None, core_v1.SECRETS, secret, WriteOptions())
    assert secret["data"] == {"a": "aGVsbG8=", "b": "aGVsbG8="}
    cm = {"metadata": {"name": "c"}, "binaryData": {"a": "aGVs\r\nbG8="}}
    core_v1.ConfigMapStrategy().prepare_create(None, core_v1.CONFIGMAPS, cm, WriteOptions())
    assert cm["binaryData"] == {"a": "aGVsbG8="}
    bad = core_v1.ConfigMapStrategy().validate(core_v1.CONFIGMAPS, {"binaryData": {"x": "!!"}})
    assert [(c.field, c.message) for c in bad] == [("binaryData[x]", 'Invalid value: "!!": '
                                                                     "illegal base64 data")]
    hidden = core_v1.SecretStrategy().validate(core_v1.SECRETS, {"data": {"x": "!!"}})
    assert "!!" not in hidden[0].message and "redacted" in hidden[0].message
