"""Decoding Kubernetes' protobuf wire format into the JSON-shaped dicts the server works on.

client-go's typed clients (so ``kubectl create``, ``kubectl auth can-i``,
``kubectl drain`` and Go controllers) send built-in objects as
``application/vnd.kubernetes.protobuf``: the bytes ``k8s\\x00`` followed by a
``runtime.Unknown`` envelope whose ``raw`` field is the object's message.  The
field table (``proto_fields.json``, generated from upstream's
``generated.proto`` files by ``scripts/gen_proto_fields.py``) maps each field
number to its JSON name and type; a handful of apimachinery types have a JSON
form of their own (times, quantities, int-or-string, raw JSON) and are
converted here.  Responses are always JSON, which those clients accept.
"""

from __future__ import annotations

import base64
import functools
import importlib.resources
import json
import struct
from typing import Any

from atoll.api import errors
from atoll.api.timestamps import rfc3339

MAGIC = b"k8s\x00"
MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
META = "k8s.io.apimachinery.pkg.apis.meta.v1."
EXT = "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1."
MAX_DEPTH = 100
_GO_ZERO_TIME = -62135596800  # Go's time.Time{} in Unix seconds: encoded, means "unset"
_DECODE_ERRORS = (IndexError, ValueError, TypeError, KeyError, UnicodeDecodeError, struct.error,
                  OverflowError, RecursionError)
#: embedded structs whose JSON is inlined into their parent (Go's ``json:""`` or
#: ``json:",inline"`` tags, found in k8s.io/api's types.go): the proto nests them as a field,
#: JSON does not (a Volume's ``configMap`` sits beside its ``name``)
INLINE: dict[str, frozenset[int]] = {
    "k8s.io.api.core.v1.Volume": frozenset({2}),
    "k8s.io.api.core.v1.PersistentVolumeSpec": frozenset({2}),
    "k8s.io.api.core.v1.SecretProjection": frozenset({1}),
    "k8s.io.api.core.v1.ConfigMapVolumeSource": frozenset({1}),
    "k8s.io.api.core.v1.ConfigMapProjection": frozenset({1}),
    "k8s.io.api.core.v1.ConfigMapKeySelector": frozenset({1}),
    "k8s.io.api.core.v1.SecretKeySelector": frozenset({1}),
    "k8s.io.api.core.v1.ConfigMapEnvSource": frozenset({1}),
    "k8s.io.api.core.v1.SecretEnvSource": frozenset({1}),
    "k8s.io.api.core.v1.Probe": frozenset({1}),
    "k8s.io.api.core.v1.EphemeralContainer": frozenset({1}),
    "k8s.io.api.admissionregistration.v1.RuleWithOperations": frozenset({2}),
    "k8s.io.api.admissionregistration.v1.NamedRuleWithOperations": frozenset({2}),
    "k8s.io.api.networking.v1.IngressRule": frozenset({2}),
    "k8s.io.api.resource.v1.DeviceClaimConfiguration": frozenset({2}),
    "k8s.io.api.resource.v1.DeviceAllocationConfiguration": frozenset({3}),
    "k8s.io.api.resource.v1.DeviceClassConfiguration": frozenset({1}),
}
_META_KINDS = {"DeleteOptions", "CreateOptions", "UpdateOptions", "PatchOptions", "ListOptions",
               "GetOptions", "Status"}


@functools.cache
def _fields() -> dict[str, dict[int, tuple[str, str, str, bool, bool]]]:
    """message → field number → (JSON name, type, map value type, repeated, omit when zero)."""
    text = (importlib.resources.files("atoll.api") / "proto_fields.json").read_text()
    return {message: {int(num): (spec[0], spec[1], spec[2], bool(spec[3]), len(spec) > 4)
                      for num, spec in fields.items()}
            for message, fields in json.loads(text).items()}


def message_for(api_version: str, kind: str) -> str | None:
    """The protobuf message name of a built-in kind, or None if we have no table for it."""
    group, _, version = api_version.rpartition("/")
    if kind in _META_KINDS:
        name = META + kind
    elif group == "apiextensions.k8s.io":
        name = f"{EXT}{kind}"
    else:
        package = "core" if not group else group.split(".", 1)[0]
        name = f"k8s.io.api.{package}.{version}.{kind}"
    return name if name in _fields() else None


def decode(data: bytes) -> dict[str, Any]:
    """A full request body (magic + envelope) to an object with apiVersion and kind."""
    if not data.startswith(MAGIC):
        raise errors.BadRequest("protobuf body does not start with the Kubernetes magic bytes")
    try:
        envelope = _message(memoryview(data)[len(MAGIC):], "k8s.io.apimachinery.pkg.runtime.Unknown",
                            0)
    except _DECODE_ERRORS as exc:
        raise errors.BadRequest(f"cannot decode protobuf body: {exc}") from None
    type_meta = envelope.get("typeMeta") or {}
    api_version, kind = type_meta.get("apiVersion", ""), type_meta.get("kind", "")
    if envelope.get("contentEncoding") or envelope.get("contentType") not in (None, "", MEDIA_TYPE):
        raise errors.UnsupportedMediaType("unsupported protobuf envelope encoding")
    name = message_for(api_version, kind)
    if name is None:
        raise errors.UnsupportedMediaType(
            f"protobuf is not supported for {kind or 'this kind'} {api_version}; send application/json")
    raw = base64.b64decode(envelope.get("raw") or "")
    try:
        obj = _message(memoryview(raw), name, 0)
    except _DECODE_ERRORS as exc:
        raise errors.BadRequest(f"cannot decode protobuf {kind}: {exc}") from None
    return {"apiVersion": api_version, "kind": kind, **obj}


# -- wire format ------------------------------------------------------------------------------
def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _signed(value: int, bits: int = 64) -> int:
    value &= (1 << 64) - 1
    if value >= 1 << 63:
        value -= 1 << 64
    if bits == 32:
        value = ((value + (1 << 31)) % (1 << 32)) - (1 << 31)
    return value


def _fields_of(buf: memoryview) -> Any:
    """Yield (field number, wire type, raw value) for each field in a message."""
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = _varint(buf, pos)
        num, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value = bytes(buf[pos:pos + 8])
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise ValueError("field runs past the end of the message")
            value = buf[pos:pos + length]
            pos += length
        elif wire == 5:
            value = bytes(buf[pos:pos + 4])
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > end:
            raise ValueError("truncated message")
        yield num, wire, value


_WIRE_OF = {"string": 2, "bytes": 2, "double": 1, "float": 5, "fixed64": 1, "sfixed64": 1,
            "fixed32": 5, "sfixed32": 5}


def _scalar(typ: str, wire: int, value: Any) -> Any:
    if wire != _WIRE_OF.get(typ, 0):
        raise ValueError(f"wire type {wire} does not carry a {typ}")
    if typ == "string":
        return bytes(value).decode("utf-8")
    if typ == "bytes":
        return base64.b64encode(bytes(value)).decode("ascii")
    if typ == "bool":
        return bool(value)
    if typ in ("int64", "uint64"):
        return _signed(value) if typ == "int64" else value
    if typ in ("int32", "uint32"):
        return _signed(value, 32) if typ == "int32" else value & 0xFFFFFFFF
    if typ == "double":
        return struct.unpack("<d", value)[0]
    if typ == "float":
        return struct.unpack("<f", value)[0]
    raise ValueError(f"unsupported scalar type {typ}")


def _packed(typ: str, buf: memoryview) -> list[Any]:
    out, pos = [], 0
    while pos < len(buf):
        if typ == "double":
            out.append(struct.unpack("<d", bytes(buf[pos:pos + 8]))[0])
            pos += 8
        elif typ in _WIRE_OF:
            raise ValueError(f"{typ} cannot be packed")
        else:
            value, pos = _varint(buf, pos)
            out.append(_scalar(typ, 0, value))
    return out


def _value(typ: str, wire: int, value: Any, depth: int) -> Any:
    if "." in typ:
        if wire != 2:
            raise ValueError(f"expected a message for {typ}")
        return _message(value, typ, depth + 1)
    return _scalar(typ, wire, value)


def _message(buf: memoryview, name: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise ValueError("message nested too deeply")
    short = name.rsplit(".", 1)[-1]
    special = _SPECIAL.get(short) if name.startswith(("k8s.io.apimachinery", EXT)) else None
    if short == "ExtraValue":
        special = _SPECIAL["Verbs"]
    fields = _fields().get(name)
    if fields is None:
        raise ValueError(f"unknown message {name}")
    out: dict[str, Any] = {}
    inline = INLINE.get(name, frozenset())
    for num, wire, value in _fields_of(buf):
        spec = fields.get(num)
        if spec is None:
            continue  # a field newer than our table: ignored, as proto readers do
        json_name, typ, value_type, repeated, omit_zero = spec
        if num in inline:
            embedded = _value(typ, wire, value, depth)
            if isinstance(embedded, dict):
                out.update(embedded)
            continue
        if typ == "map":
            entry = _map_entry(value, value_type, depth)
            out.setdefault(json_name, {})[entry[0]] = entry[1]
        elif repeated:
            items = out.setdefault(json_name, [])
            if wire == 2 and typ not in ("string", "bytes") and "." not in typ:
                items.extend(_packed(typ, value))
            else:
                items.append(_value(typ, wire, value, depth))
        else:
            decoded = _value(typ, wire, value, depth)
            if omit_zero and decoded in _ZEROS and not isinstance(decoded, dict):
                out.pop(json_name, None)
            else:
                out[json_name] = decoded
    if special is not None:
        return special(out)
    return {k: v for k, v in out.items() if v != "" and v is not _UNSET}


def _map_entry(buf: memoryview, value_type: str, depth: int) -> tuple[str, Any]:
    key, val = "", None
    for num, wire, value in _fields_of(buf):
        if num == 1:
            key = bytes(value).decode("utf-8")
        elif num == 2:
            val = _value(value_type, wire, value, depth)
    if val is None:
        val = "" if value_type in ("string", "bytes") else {}
    return key, val


# -- apimachinery types with a JSON form of their own ---------------------------------------
_UNSET = object()
_ZEROS = (0, False, "", 0.0)


def _time(micro: bool) -> Any:
    def convert(fields: dict[str, Any]) -> Any:
        seconds = fields.get("seconds", 0)
        if seconds == _GO_ZERO_TIME or (not fields):
            return _UNSET
        if micro:
            return rfc3339(seconds + fields.get("nanos", 0) // 1000 / 1e6, digits=6)
        return rfc3339(seconds)
    return convert


def _duration(fields: dict[str, Any]) -> str:
    nanos = fields.get("duration", 0)
    sign = "-" if nanos < 0 else ""
    nanos = abs(nanos)
    hours, rest = divmod(nanos, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    seconds = rest / 10**9
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if hours or minutes else "")
    return sign + text + (f"{seconds:g}s")


def _raw_json(fields: dict[str, Any]) -> Any:
    raw = fields.get("raw") or fields.get("Raw")
    if not raw:
        return _UNSET
    return json.loads(base64.b64decode(raw))


def _int_or_string(fields: dict[str, Any]) -> Any:
    return fields.get("strVal", "") if fields.get("type") == 1 else fields.get("intVal", 0)


def _or_bool(fields: dict[str, Any]) -> Any:
    return fields["schema"] if "schema" in fields else fields.get("allows", False)


def _or_array(fields: dict[str, Any]) -> Any:
    return fields["schema"] if "schema" in fields else fields.get("jSONSchemas", [])


def _or_string_array(fields: dict[str, Any]) -> Any:
    return fields["schema"] if "schema" in fields else fields.get("property", [])


_SPECIAL: dict[str, Any] = {
    "Time": _time(False),
    "MicroTime": _time(True),
    "Duration": _duration,
    "Quantity": lambda f: f.get("string", "0"),
    "IntOrString": _int_or_string,
    "RawExtension": _raw_json,
    "FieldsV1": _raw_json,
    "JSON": _raw_json,
    "Verbs": lambda f: f.get("items", []),
    "JSONSchemaPropsOrBool": _or_bool,
    "JSONSchemaPropsOrArray": _or_array,
    "JSONSchemaPropsOrStringArray": _or_string_array,
}
