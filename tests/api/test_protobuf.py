"""The protobuf request decoder: wire format to JSON shapes, and garbage to 4xx."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings, strategies as st

from atoll.api import errors, protobuf


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num: int, value: int | bytes | str) -> bytes:
    if isinstance(value, int):
        return varint(num << 3) + varint(value)
    data = value.encode() if isinstance(value, str) else value
    return varint(num << 3 | 2) + varint(len(data)) + data


def envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    type_meta = field(1, api_version) + field(2, kind)
    return protobuf.MAGIC + field(1, type_meta) + field(2, raw)


def test_deployment_with_zero_replicas_and_go_zero_values() -> None:
    meta = field(1, "web") + field(3, "demo") + field(8, field(1, -62135596800))
    labels = field(11, field(1, "app") + field(2, "web"))
    port = field(2, 0) + field(3, 80) + field(4, "TCP")  # hostPort 0 is Go's "unset"
    container = field(1, "c") + field(2, "nginx") + field(6, port) + field(16, 0)
    pod_spec = field(2, container)
    template = field(1, labels) + field(2, pod_spec)
    spec = field(1, 0) + field(3, template) + field(5, 0)
    body = envelope("apps/v1", "Deployment", field(1, meta + labels) + field(2, spec))
    obj = protobuf.decode(body)
    assert obj["apiVersion"] == "apps/v1" and obj["kind"] == "Deployment"
    assert obj["metadata"] == {"name": "web", "namespace": "demo", "labels": {"app": "web"}}
    assert obj["spec"]["replicas"] == 0  # a pointer field: an explicit zero is kept
    assert "minReadySeconds" not in obj["spec"]
    (c,) = obj["spec"]["template"]["spec"]["containers"]
    assert c == {"name": "c", "image": "nginx", "ports": [{"containerPort": 80, "protocol": "TCP"}]}


def test_secret_bytes_quantity_and_int_or_string() -> None:
    secret = envelope("v1", "Secret", field(1, field(1, "s")) +
                      field(2, field(1, "p") + field(2, b"\x00\xff")))
    assert protobuf.decode(secret)["data"] == {"p": base64.b64encode(b"\x00\xff").decode()}
    limits = field(1, field(1, "cpu") + field(2, field(1, "500m")))
    rr = envelope("v1", "ResourceQuota", field(2, limits))
    assert protobuf.decode(rr)["spec"]["hard"] == {"cpu": "500m"}
    port = field(1, "http") + field(3, 80) + field(4, field(1, 1) + field(3, "web"))
    svc = envelope("v1", "Service", field(2, field(1, port)))
    assert protobuf.decode(svc)["spec"]["ports"] == [{"name": "http", "port": 80,
                                                      "targetPort": "web"}]


def test_unknown_kind_is_415_and_garbage_is_400() -> None:
    with pytest.raises(errors.UnsupportedMediaType):
        protobuf.decode(envelope("example.com/v1", "Widget", b""))
    with pytest.raises(errors.BadRequest):
        protobuf.decode(b"not protobuf")
    with pytest.raises(errors.BadRequest):
        protobuf.decode(protobuf.MAGIC + b"\x0a\xff\xff\xff\xff\x0f")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["Pod", "ConfigMap", "Deployment", "Namespace"]))
def test_random_bytes_never_escape_as_anything_but_api_errors(raw: bytes, kind: str) -> None:
    version = "apps/v1" if kind == "Deployment" else "v1"
    for body in (protobuf.MAGIC + raw, envelope(version, kind, raw)):
        try:
            protobuf.decode(body)
        except errors.ApiError as err:
            assert 400 <= err.code < 500
