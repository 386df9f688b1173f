"""Request parsing and response writing shared by every handler.

Hostile input stops here: bodies are size-limited and decoded with clear 400s,
query parameters are parsed the way Go's ``strconv`` does, and every response
body is ``orjson``-encoded.
"""

from __future__ import annotations

from typing import Any, Mapping

import orjson
import yaml
from aiohttp import web

from atoll.api import errors, protobuf

MAX_BODY_BYTES = 3 * 1024 * 1024
JSON = "application/json"

_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}

try:
    _YamlLoader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _YamlLoader = yaml.SafeLoader


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
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise errors.RequestEntityTooLarge("Request entity too large: limit is 3145728")
    try:
        data = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise errors.RequestEntityTooLarge("Request entity too large: limit is 3145728") from None
    if len(data) > MAX_BODY_BYTES:
        raise errors.RequestEntityTooLarge("Request entity too large: limit is 3145728")
    return data


BODY_TYPES = ("application/json", "application/yaml", protobuf.MEDIA_TYPE)


def decode(data: bytes, content_type: str) -> Any:
    """Decode JSON or YAML (kubectl sends JSON; people send YAML)."""
    ct = content_type.split(";")[0].strip().lower()
    if ct == protobuf.MEDIA_TYPE:
        return protobuf.decode(data)
    if ct.endswith(("protobuf", "cbor")):
        raise errors.UnsupportedMediaType(
            f'the body of the request was in an unknown format - accepted media types include: '
            f'{", ".join(BODY_TYPES)}')
    if not data.strip():
        raise errors.BadRequest("the request body is empty")
    if ct.endswith("yaml"):
        try:
            return yaml.load(data, Loader=_YamlLoader)  # noqa: S506 - safe loader
        except yaml.YAMLError as exc:
            raise errors.BadRequest(f"error decoding YAML: {_short(exc)}") from None
        except RecursionError:
            raise errors.BadRequest("error decoding YAML: document nested too deeply") from None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if ct in ("", JSON, "*/*") and not data.lstrip().startswith((b"{", b"[")):
            try:  # be lenient with YAML posted as JSON by hand-written scripts
                doc = yaml.load(data, Loader=_YamlLoader)  # noqa: S506
                if isinstance(doc, (dict, list)):
                    return doc
            except (yaml.YAMLError, RecursionError):
                pass
        raise errors.BadRequest(f"error decoding JSON: {_short(exc)}") from None


def decode_object(data: bytes, content_type: str) -> dict[str, Any]:
    obj = decode(data, content_type)
    if not isinstance(obj, dict):
        raise errors.BadRequest("the request body must be a JSON object")
    return obj


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
    if not warnings:
        return None
    # aiohttp does not allow repeated headers via dict; one header with comma-joined values is
    # how HTTP folds repeated headers, and client-go splits them.
    return {"Warning": ", ".join(f'299 - "{w.replace(chr(34), chr(39))}"' for w in warnings[:20])}
