"""Every field of every built-in kind survives the protobuf decoder.

For each served kind with a protobuf message, a sample object fills every field the
generated table knows (to a bounded depth), is encoded to the wire format here, and must
decode back to exactly its JSON form: inlined structs (a Volume's source, a Probe's
handler, a ConfigMapKeySelector's name) included, as client-go sends them.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest

from atoll.api import protobuf, resources
from tests.api.test_protobuf import varint

MAX_DEPTH = 5
T = "k8s.io.apimachinery.pkg."


def key(num: int, wire: int) -> bytes:
    return varint(num << 3 | wire)


def length_delimited(num: int, data: bytes) -> bytes:
    return key(num, 2) + varint(len(data)) + data


#: apimachinery types with a JSON form of their own: (JSON value, message bytes)
SPECIAL: dict[str, tuple[Any, bytes]] = {
    T + "apis.meta.v1.Time": ("2026-01-02T03:04:05Z", key(1, 0) + varint(1767323045)),
    T + "apis.meta.v1.MicroTime": ("2026-01-02T03:04:05.250000Z",
                                   key(1, 0) + varint(1767323045) + key(2, 0) + varint(250000000)),
    T + "apis.meta.v1.Duration": ("3s", key(1, 0) + varint(3 * 10**9)),
    T + "api.resource.Quantity": ("500m", length_delimited(1, b"500m")),
    T + "util.intstr.IntOrString": (7, key(1, 0) + varint(0) + key(2, 0) + varint(7)),
    T + "runtime.RawExtension": ({"a": 1}, length_delimited(1, b'{"a":1}')),
    T + "apis.meta.v1.FieldsV1": ({"f:a": {}}, length_delimited(1, b'{"f:a":{}}')),
    T + "apis.meta.v1.Verbs": (["get"], length_delimited(1, b"get")),
}


def scalar(typ: str, num: int) -> tuple[Any, bytes]:
    if typ == "string":
        return f"s{num}", length_delimited(num, f"s{num}".encode())
    if typ == "bytes":
        return base64.b64encode(b"\x01\x02").decode(), length_delimited(num, b"\x01\x02")
    if typ == "bool":
        return True, key(num, 0) + varint(1)
    if typ in ("int32", "int64", "uint32", "uint64"):
        return 3, key(num, 0) + varint(3)
    if typ == "double":
        return 1.5, key(num, 1) + struct.pack("<d", 1.5)
    raise ValueError(typ)


def sample(message: str, depth: int = 0) -> tuple[dict[str, Any], bytes]:
    """(JSON form, wire bytes) of a message with every field set."""
    fields = protobuf._fields()[message]
    inline = protobuf.INLINE.get(message, frozenset())
    out: dict[str, Any] = {}
    wire = b""
    for num, (name, typ, value_type, repeated, _) in sorted(fields.items()):
        if typ == "map":
            value = value_of(value_type, 2, depth)
            if value is None:
                continue
            entry = length_delimited(1, b"k") + value[1]
            out[name] = {"k": value[0]}
            wire += length_delimited(num, entry)
            continue
        value = value_of(typ, num, depth)
        if value is None:
            continue
        if num in inline:
            out.update(value[0])
        else:
            out[name] = [value[0]] if repeated else value[0]
        wire += value[1]
    return out, wire


def value_of(typ: str, num: int, depth: int) -> tuple[Any, bytes] | None:
    if "." not in typ:
        return scalar(typ, num)
    if typ in SPECIAL:
        json_value, data = SPECIAL[typ]
        return json_value, length_delimited(num, data)
    if typ.endswith(".ExtraValue"):  # a list in JSON, a message of items on the wire
        return ["x"], length_delimited(num, length_delimited(1, b"x"))
    if typ.startswith(protobuf.EXT) or typ not in protobuf._fields() or depth >= MAX_DEPTH:
        return None  # schemas recurse without end; other apimachinery types are covered above
    if typ.rsplit(".", 1)[-1] in protobuf._SPECIAL:
        return None
    json_value, data = sample(typ, depth + 1)
    if not json_value:
        return None
    return json_value, length_delimited(num, data)


def kinds() -> list[tuple[str, str, str]]:
    out = []
    for rt in resources.BUILTIN:
        message = protobuf.message_for(rt.group_version, rt.kind)
        if message is not None:
            out.append((rt.group_version, rt.kind, message))
    return sorted(set(out))


@pytest.mark.parametrize("api_version,kind,message", kinds(),
                         ids=[f"{k}.{v}" for v, k, _ in kinds()])
def test_every_field_round_trips(api_version: str, kind: str, message: str) -> None:
    expected, raw = sample(message)
    type_meta = length_delimited(1, api_version.encode()) + length_delimited(2, kind.encode())
    body = protobuf.MAGIC + length_delimited(1, type_meta) + length_delimited(2, raw)
    decoded = protobuf.decode(body)
    assert decoded == {"apiVersion": api_version, "kind": kind, **expected}, \
        json.dumps(decoded)[:2000]


def test_the_inlined_sources_of_a_pod_are_kept() -> None:
    expected, _ = sample("k8s.io.api.core.v1.Volume")
    assert {"name", "configMap", "hostPath", "persistentVolumeClaim"} <= set(expected)
    assert expected["configMap"]["name"] == "s1"  # LocalObjectReference, inlined too
    probe, _ = sample("k8s.io.api.core.v1.Probe")
    assert {"exec", "httpGet", "tcpSocket", "periodSeconds"} <= set(probe)


def test_the_table_covers_the_core_workload_kinds() -> None:
    covered = {k for _, k, _ in kinds()}
    assert {"Pod", "Deployment", "Service", "ConfigMap", "Secret", "Job", "CronJob",
            "StatefulSet", "DaemonSet", "Namespace", "Node"} <= covered
