"""Swagger 2.0 as gnostic's ``openapi.v2.Document`` protobuf, the form kubectl asks for.

kubectl validates a ``kind: List`` (and falls back for ``explain``) with the
OpenAPI v2 models, which it reads only as protobuf
(``application/com.github.proto-openapi.spec.v2@v1.0+protobuf``).  The JSON
document is translated field by field into the messages of gnostic's
``openapiv2/OpenAPIv2.proto``; maps become repeated ``Named*`` pairs in the
document's order and free-form values (defaults, enums, examples, ``x-``
extensions) become ``Any{yaml}`` holding JSON, which is YAML.  Only encoding is
needed, so a few wire-format helpers here are enough: no generated code.
"""

from __future__ import annotations

import struct
from typing import Any, Callable

import orjson

#: what clients put in Accept (both spellings: ``@`` is the old one) and what is answered
#: (``@`` is not valid in a media type, and Go's mime parser refuses it)
ACCEPTED_TYPES = ("application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
                  "application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
MEDIA_TYPE = ACCEPTED_TYPES[1]

_VARINT, _FIXED64, _BYTES = 0, 1, 2


def _varint(n: int) -> bytes:
    if n < 0:
        n &= (1 << 64) - 1  # int64 negatives take ten bytes, as protobuf encodes them
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


class _Message:
    """One message being written: fields appended in field-number order by the caller."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def _key(self, field: int, wire: int) -> None:
        self.buf += _varint(field << 3 | wire)

    def string(self, field: int, value: Any) -> None:
        if isinstance(value, str) and value:
            self.bytes(field, value.encode())

    def strings(self, field: int, values: Any) -> None:
        for v in values if isinstance(values, list) else []:
            if isinstance(v, str):
                self.bytes(field, v.encode())

    def bytes(self, field: int, data: bytes) -> None:
        self._key(field, _BYTES)
        self.buf += _varint(len(data))
        self.buf += data

    def message(self, field: int, data: bytes | None, *, always: bool = False) -> None:
        if data or (always and data is not None):
            self.bytes(field, data or b"")

    def boolean(self, field: int, value: Any) -> None:
        if value is True:
            self._key(field, _VARINT)
            self.buf.append(1)

    def int64(self, field: int, value: Any) -> None:
        if isinstance(value, int) and not isinstance(value, bool) and value:
            self._key(field, _VARINT)
            self.buf += _varint(value)

    def double(self, field: int, value: Any) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value:
            self._key(field, _FIXED64)
            self.buf += struct.pack("<d", float(value))


def _any(value: Any) -> bytes:
    """``Any{yaml: ...}``: JSON text is valid YAML, which is how gnostic reads it back."""
    m = _Message()
    m.string(2, orjson.dumps(value).decode())
    return bytes(m.buf)


def _named(pairs: dict[str, Any] | None, encode: Callable[[Any], bytes]) -> list[bytes]:
    """A map as gnostic's ordered ``Named*`` pairs ({name: 1, value: 2})."""
    out = []
    for name, value in (pairs or {}).items():
        m = _Message()
        m.string(1, name)
        m.message(2, encode(value), always=True)
        out.append(bytes(m.buf))
    return out


def _extensions(m: _Message, field: int, node: dict[str, Any]) -> None:
    for pair in _named({k: v for k, v in node.items() if k.startswith("x-")}, _any):
        m.bytes(field, pair)


def _schema(node: Any) -> bytes:
    if not isinstance(node, dict):
        return b""
    m = _Message()
    m.string(1, node.get("$ref"))
    m.string(2, node.get("format"))
    m.string(3, node.get("title"))
    m.string(4, node.get("description"))
    if "default" in node:
        m.message(5, _any(node["default"]))
    m.double(6, node.get("multipleOf"))
    m.double(7, node.get("maximum"))
    m.boolean(8, node.get("exclusiveMaximum"))
    m.double(9, node.get("minimum"))
    m.boolean(10, node.get("exclusiveMinimum"))
    m.int64(11, node.get("maxLength"))
    m.int64(12, node.get("minLength"))
    m.string(13, node.get("pattern"))
    m.int64(14, node.get("maxItems"))
    m.int64(15, node.get("minItems"))
    m.boolean(16, node.get("uniqueItems"))
    m.int64(17, node.get("maxProperties"))
    m.int64(18, node.get("minProperties"))
    m.strings(19, node.get("required"))
    for v in node.get("enum") or [] if isinstance(node.get("enum"), list) else []:
        m.message(20, _any(v), always=True)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        item = _Message()
        item.message(1, _schema(extra), always=True)
        m.message(21, bytes(item.buf), always=True)
    elif isinstance(extra, bool):
        item = _Message()
        if extra:
            item.boolean(2, True)
        else:  # false must still say "boolean" in the oneof: a zero varint
            item._key(2, _VARINT)
            item.buf.append(0)
        m.message(21, bytes(item.buf), always=True)
    typ = node.get("type")
    if typ:
        t = _Message()
        t.strings(1, typ if isinstance(typ, list) else [typ])
        m.message(22, bytes(t.buf))
    items = node.get("items")
    if isinstance(items, (dict, list)):
        it = _Message()
        for s in items if isinstance(items, list) else [items]:
            it.message(1, _schema(s), always=True)
        m.message(23, bytes(it.buf), always=True)
    for s in node.get("allOf") or [] if isinstance(node.get("allOf"), list) else []:
        m.message(24, _schema(s), always=True)
    props = node.get("properties")
    if isinstance(props, dict):
        p = _Message()
        for pair in _named(props, _schema):
            p.bytes(1, pair)
        m.message(25, bytes(p.buf), always=True)
    m.string(26, node.get("discriminator"))
    m.boolean(27, node.get("readOnly"))
    if "example" in node:
        m.message(30, _any(node["example"]))
    _extensions(m, 31, node)
    return bytes(m.buf)


def _primitive_fields(m: _Message, node: dict[str, Any], first: int) -> None:
    """type .. multiple_of of a non-body parameter, from ``first`` (their numbers are
    consecutive in every sub-schema message)."""
    m.string(first, node.get("type"))
    m.string(first + 1, node.get("format"))
    if isinstance(node.get("items"), dict):
        m.message(first + 2, _primitive_items(node["items"]), always=True)
    m.string(first + 3, node.get("collectionFormat"))
    if "default" in node:
        m.message(first + 4, _any(node["default"]))
    m.double(first + 5, node.get("maximum"))
    m.boolean(first + 6, node.get("exclusiveMaximum"))
    m.double(first + 7, node.get("minimum"))
    m.boolean(first + 8, node.get("exclusiveMinimum"))
    m.int64(first + 9, node.get("maxLength"))
    m.int64(first + 10, node.get("minLength"))
    m.string(first + 11, node.get("pattern"))
    m.int64(first + 12, node.get("maxItems"))
    m.int64(first + 13, node.get("minItems"))
    m.boolean(first + 14, node.get("uniqueItems"))
    for v in node.get("enum") or [] if isinstance(node.get("enum"), list) else []:
        m.message(first + 15, _any(v), always=True)
    m.double(first + 16, node.get("multipleOf"))


def _primitive_items(node: dict[str, Any]) -> bytes:
    m = _Message()
    _primitive_fields(m, node, 1)
    _extensions(m, 18, node)
    return bytes(m.buf)


#: where each ``in`` lives in NonBodyParameter's oneof, and where its type fields start
_NON_BODY = {"header": (1, 5), "formData": (2, 6), "query": (3, 6), "path": (4, 5)}


def _parameter(node: dict[str, Any]) -> bytes:
    """``Parameter``: a body parameter or one of the four non-body sub-schemas."""
    where = node.get("in")
    param = _Message()
    if where == "body":
        body = _Message()
        body.string(1, node.get("description"))
        body.string(2, node.get("name"))
        body.string(3, where)
        body.boolean(4, node.get("required"))
        body.message(5, _schema(node.get("schema")), always=True)
        _extensions(body, 6, node)
        param.message(1, bytes(body.buf), always=True)
        return bytes(param.buf)
    slot, first = _NON_BODY.get(str(where), (3, 6))
    sub = _Message()
    sub.boolean(1, node.get("required"))
    sub.string(2, where)
    sub.string(3, node.get("description"))
    sub.string(4, node.get("name"))
    if first == 6:
        sub.boolean(5, node.get("allowEmptyValue"))
    _primitive_fields(sub, node, first)
    _extensions(sub, first + 17, node)
    non_body = _Message()
    non_body.message(slot, bytes(sub.buf), always=True)
    param.message(2, bytes(non_body.buf), always=True)
    return bytes(param.buf)


def _parameters_item(node: Any) -> bytes:
    m = _Message()
    if isinstance(node, dict) and "$ref" in node:
        ref = _Message()
        ref.string(1, node["$ref"])
        m.message(2, bytes(ref.buf), always=True)
    elif isinstance(node, dict):
        m.message(1, _parameter(node), always=True)
    return bytes(m.buf)


def _response(node: Any) -> bytes:
    m = _Message()
    if not isinstance(node, dict):
        return b""
    m.string(1, node.get("description"))
    if isinstance(node.get("schema"), dict):
        item = _Message()
        item.message(1, _schema(node["schema"]), always=True)
        m.message(2, bytes(item.buf), always=True)
    _extensions(m, 5, node)
    value = _Message()
    value.message(1, bytes(m.buf), always=True)
    return bytes(value.buf)


def _operation(node: Any) -> bytes:
    if not isinstance(node, dict):
        return b""
    m = _Message()
    m.strings(1, node.get("tags"))
    m.string(2, node.get("summary"))
    m.string(3, node.get("description"))
    m.string(5, node.get("operationId"))
    m.strings(6, node.get("produces"))
    m.strings(7, node.get("consumes"))
    for p in node.get("parameters") or []:
        m.message(8, _parameters_item(p), always=True)
    responses = _Message()
    for pair in _named(node.get("responses") if isinstance(node.get("responses"), dict)
                       else {}, _response):
        responses.bytes(1, pair)
    m.message(9, bytes(responses.buf), always=True)
    m.strings(10, node.get("schemes"))
    m.boolean(11, node.get("deprecated"))
    _extensions(m, 13, node)
    return bytes(m.buf)


_OPERATIONS = (("get", 2), ("put", 3), ("post", 4), ("delete", 5), ("options", 6), ("head", 7),
               ("patch", 8))


def _path_item(node: Any) -> bytes:
    m = _Message()
    if not isinstance(node, dict):
        return b""
    m.string(1, node.get("$ref"))
    for verb, field in _OPERATIONS:
        if verb in node:
            m.message(field, _operation(node[verb]), always=True)
    for p in node.get("parameters") or []:
        m.message(9, _parameters_item(p), always=True)
    _extensions(m, 10, node)
    return bytes(m.buf)


def encode_document(doc: dict[str, Any]) -> bytes:
    """A Swagger 2.0 document (as served in JSON) as an ``openapi.v2.Document``."""
    m = _Message()
    m.string(1, doc.get("swagger"))
    info = doc.get("info") or {}
    i = _Message()
    i.string(1, info.get("title"))
    i.string(2, info.get("version"))
    i.string(3, info.get("description"))
    m.message(2, bytes(i.buf), always=True)
    m.string(3, doc.get("host"))
    m.string(4, doc.get("basePath"))
    m.strings(5, doc.get("schemes"))
    m.strings(6, doc.get("consumes"))
    m.strings(7, doc.get("produces"))
    paths = _Message()
    for pair in _named(doc.get("paths"), _path_item):
        paths.bytes(2, pair)
    m.message(8, bytes(paths.buf), always=True)
    definitions = _Message()
    for pair in _named(doc.get("definitions"), _schema):
        definitions.bytes(1, pair)
    m.message(9, bytes(definitions.buf), always=True)
    _extensions(m, 16, doc)
    return bytes(m.buf)
