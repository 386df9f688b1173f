"""Request parsing and response writing shared by every handler.

Hostile input stops here: bodies are size-limited, of a known media type (else
415), and decoded within bounds (``atoll.api.decoding``) with clear 400s,
query parameters are parsed the way Go's ``strconv`` does, and every response
body is ``orjson``-encoded.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Callable, Mapping, TypeVar

import orjson
from aiohttp import web

from atoll.api import decoding, errors, protobuf
from atoll.apiserver import headers

T = TypeVar("T")

MAX_BODY_BYTES = 3 * 1024 * 1024
JSON = "application/json"

_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}


def query_bool(query: Mapping[str, str], name: str, default: bool = False) -> bool:
    value = query.get(name)
    if value is None or value == "":
        return default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise errors.BadRequest(f'invalid boolean value for {name}: "{value}"')


def query_int(query: Mapping[str, str], name: str, default: int | None = None,
              minimum: int | None = None) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except ValueError:
        raise errors.BadRequest(f'invalid integer value for {name}: "{value}"') from None
    if minimum is not None and n < minimum:
        raise errors.BadRequest(f"{name} must be >= {minimum}")
    return n


async def read_body(request: web.Request) -> bytes:
    """The body, at most ``MAX_BODY_BYTES``: a chunked body is cut off there too (aiohttp's
    ``client_max_size``), never read whole first."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise errors.RequestEntityTooLarge(TOO_LARGE)
    try:
        data = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise errors.RequestEntityTooLarge(TOO_LARGE) from None
    if len(data) > MAX_BODY_BYTES:
        raise errors.RequestEntityTooLarge(TOO_LARGE)
    return data


TOO_LARGE = f"Request entity too large: limit is {MAX_BODY_BYTES}"
BODY_TYPES = ("application/json", "application/yaml", protobuf.MEDIA_TYPE)
#: patch media types, and whether their body is YAML (JSON is YAML too)
PATCH_BODY_TYPES = {
    "application/json-patch+json": False,
    "application/merge-patch+json": False,
    "application/strategic-merge-patch+json": False,
    "application/apply-patch+yaml": True,
    "application/apply-patch+json": False,
}
UNKNOWN_FORMAT = ("the body of the request was in an unknown format - accepted media types "
                  "include: " + ", ".join(BODY_TYPES))
#: bodies larger than this are decoded on a worker thread, away from the event loop
OFFLOAD_BYTES = 64 * 1024
_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="atoll-decode")


def media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def decode(data: bytes, content_type: str) -> Any:
    """Decode a request body of one of ``BODY_TYPES`` (kubectl sends JSON; people send YAML).

    Anything else is 415, as upstream answers it.  No type at all is JSON, upstream's first
    media type (the official Python client sends its JSON bodies without one)."""
    ct = media_type(content_type) or JSON
    if ct == protobuf.MEDIA_TYPE:
        return protobuf.decode(data)
    if ct not in BODY_TYPES:
        raise errors.UnsupportedMediaType(UNKNOWN_FORMAT)
    return _decode_text(data, is_yaml=ct == "application/yaml")


def decode_patch(data: bytes, content_type: str) -> Any:
    """Decode a PATCH body; the caller has checked its type is one of ``PATCH_BODY_TYPES``."""
    is_yaml = PATCH_BODY_TYPES.get(media_type(content_type))
    if is_yaml is None:
        raise errors.UnsupportedMediaType(UNKNOWN_FORMAT)
    return _decode_text(data, is_yaml=is_yaml)


def decode_object(data: bytes, content_type: str) -> dict[str, Any]:
    obj = decode(data, content_type)
    if not isinstance(obj, dict):
        raise errors.BadRequest("the request body must be a JSON object")
    return obj


async def decode_object_async(data: bytes, content_type: str) -> dict[str, Any]:
    """``decode_object``, on a worker thread when decoding may take long."""
    return await _offload(data, decode_object, data, content_type)


async def decode_patch_async(data: bytes, content_type: str) -> Any:
    return await _offload(data, decode_patch, data, content_type)


async def offload(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run CPU-heavy work on the worker threads; the event loop keeps serving meanwhile (the
    GIL switches every few milliseconds, so /readyz and small requests are answered)."""
    return await asyncio.get_running_loop().run_in_executor(_POOL, partial(fn, *args, **kwargs))


async def _offload(data: bytes, fn: Callable[..., T], *args: Any) -> T:
    """Small bodies inline (a thread hop costs more than decoding them); large ones, and YAML
    that may use aliases (a few bytes can stand for megabytes), on a worker thread."""
    if len(data) <= OFFLOAD_BYTES and not (b"*" in data and b"&" in data):
        return fn(*args)
    return await asyncio.get_running_loop().run_in_executor(_POOL, partial(fn, *args))


def _decode_text(data: bytes, *, is_yaml: bool) -> Any:
    """JSON or YAML, bounded in size, aliasing and nesting (see ``atoll.api.decoding``)."""
    if not data.strip():
        raise errors.BadRequest("the request body is empty")
    json_like = data.lstrip()[:1] in (b"{", b"[")
    doc: Any = None
    depth = -1
    json_error: Exception | None = None
    if json_like or not is_yaml:
        try:
            doc = orjson.loads(data)
            depth = decoding.bracket_bound(data)
        except orjson.JSONDecodeError as exc:
            if not is_yaml and json_like:
                raise errors.BadRequest(f"error decoding JSON: {_short(exc)}") from None
            json_error = exc
    if depth < 0 and is_yaml:
        doc, depth = decoding.yaml_document(data)
    elif depth < 0:  # be lenient with YAML posted as JSON by hand-written scripts
        try:
            doc, depth = decoding.yaml_document(data)
        except (decoding.LimitExceeded, errors.RequestEntityTooLarge):
            raise
        except errors.ApiError:
            doc = None
        if not isinstance(doc, (dict, list)):
            raise errors.BadRequest(f"error decoding JSON: {json_error}"[:320]) from None
    if depth > decoding.MAX_OBJECT_DEPTH:
        too_deep = decoding.object_depth_error(doc)
        if too_deep is not None:
            raise too_deep
    return doc


def _short(exc: Exception) -> str:
    text = str(exc).replace("\n", " ")
    return text[:300]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None,
                  content_type: str = JSON) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type=content_type.split(";")[0],
                        headers=headers)


def raw_json_response(raw: bytes, status: int = 200,
                      headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=raw, status=status, content_type=JSON, headers=headers)


def wants_table(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "as=Table" in accept and "g=meta.k8s.io" in accept


def wants_partial_metadata(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "as=PartialObjectMetadata" in accept


def warning_headers(warnings: list[str]) -> dict[str, str] | None:
    """``Warning`` as upstream's recorder writes it: escaped, deduplicated, size-bounded."""
    value = headers.warning_value(warnings)
    return {"Warning": value} if value else None
