"""Bounded decoding of request bodies: no document may expand, nest or grow past fixed limits.

A YAML body is read event by event (libyaml's parser when present) and built
straight into JSON-shaped values, so the limits hold *while* decoding, before
anything is expanded:

- an alias is charged the full size of what it stands for, and the document is
  refused once its decoded size passes ``MAX_DECODED_BYTES`` (a 429-byte
  "billion laughs" stops after a few hundred events, having copied nothing);
- nesting, counted through aliases too, stops at ``MAX_DEPTH`` (libyaml itself
  stops at 1000 levels of text, orjson at 1024);
- an alias to an anchor still open (a recursive document) is refused;
- values are JSON's: mapping keys become strings, as sigs.k8s.io/yaml makes
  them, and timestamps and other YAML-only scalars keep their text.

Every alias ends up as its own copy, as Go's YAML decoder makes it: later
pruning or defaulting of one occurrence must not change the others.  Copies are
made once the whole document is known to fit, so a bomb costs no copying.

``object_depth_error`` is the second, semantic bound: objects deeper than
``MAX_OBJECT_DEPTH`` are refused (422, with the field path) before any of the
server's recursive processing sees them (patches, managedFields and schema
walks recurse once per level, and managedFields stops at 100; orjson encodes at
most 254 levels).
"""

from __future__ import annotations

import base64
import datetime
from typing import Any

import orjson
import yaml
from yaml import events as ev

from atoll.api import errors

MAX_DEPTH = 1000
MAX_OBJECT_DEPTH = 100
#: how large a body may become once decoded (an estimate of its JSON size)
MAX_DECODED_BYTES = 6 * 1024 * 1024
_OVERHEAD = 3  # what a value costs besides its text: quotes, separator
_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_MAP_TAGS = (None, "!", "tag:yaml.org,2002:map")
_SEQ_TAGS = (None, "!", "tag:yaml.org,2002:seq")
_TEXT_TAGS = ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value")
_INT_MIN, _INT_MAX = -(2 ** 63), 2 ** 64 - 1



class LimitExceeded(errors.BadRequest):
    """A body refused for what it would decode to (aliasing, nesting), not for its syntax."""


try:
    _Parser: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML without libyaml
    _Parser = yaml.SafeLoader


def loads_yaml(data: bytes | str) -> Any:
    """One YAML document as JSON values; every failure is a 400 (413 when merely too big)."""
    return yaml_document(data)[0]


def yaml_document(data: bytes | str) -> tuple[Any, int]:
    """``loads_yaml``, with the document's nesting depth (aliases expanded)."""
    parser = _Parser(data)
    try:
        builder = _Builder(parser)
        return builder.document(), builder.depth
    except yaml.YAMLError as exc:
        raise errors.BadRequest(f"error decoding YAML: {_short(exc)}") from None
    except RecursionError:  # the pure-Python parser recurses on deep text
        raise errors.BadRequest(f"error decoding YAML: exceeded max depth of {MAX_DEPTH}") from None
    finally:
        parser.dispose()


class _Frame:
    __slots__ = ("value", "anchor", "start", "depth", "key", "has_key", "merges", "is_map")

    def __init__(self, value: Any, anchor: str | None, start: int) -> None:
        self.value = value
        self.anchor = anchor
        self.start = start  # decoded size when the container opened
        self.depth = 0  # deepest child, in levels below this container
        self.key: Any = None
        self.has_key = False
        self.merges: list[dict[str, Any]] | None = None
        self.is_map = isinstance(value, dict)


class _Builder:
    """Events to values, charging every value (and every alias, in full) as it arrives."""

    def __init__(self, parser: Any) -> None:
        self.parser = parser
        self.size = 0
        self.aliased = False
        self.stack: list[_Frame] = []
        #: anchor → (value, decoded size, depth, is a scalar)
        self.anchors: dict[str, tuple[Any, int, int, bool]] = {}
        self.root: list[Any] = []
        self.depth = 0  # the whole document's, once built

    def document(self) -> Any:
        p = self.parser
        p.get_event()  # StreamStart
        if p.check_event(ev.StreamEndEvent):
            return None
        p.get_event()  # DocumentStart
        handlers = {ev.ScalarEvent: self._scalar, ev.AliasEvent: self._alias,
                    ev.MappingStartEvent: self._open, ev.SequenceStartEvent: self._open,
                    ev.MappingEndEvent: self._close, ev.SequenceEndEvent: self._close}
        while True:
            event = p.get_event()
            handler = handlers.get(type(event))
            if handler is None:  # DocumentEnd: the stack is empty again
                break
            handler(event)
        if not p.check_event(ev.StreamEndEvent):
            raise errors.BadRequest("error decoding YAML: expected a single document in the "
                                    "stream, but found another document")
        if not self.root:
            return None
        return _unshare(self.root[0]) if self.aliased else self.root[0]

    # -- charging ---------------------------------------------------------------------------
    def _charge(self, n: int, depth: int) -> None:
        self.size += n
        if self.size > MAX_DECODED_BYTES:
            if self.aliased:
                raise LimitExceeded(
                    "error decoding YAML: document contains excessive aliasing (it would "
                    f"decode to more than {MAX_DECODED_BYTES} bytes)")
            raise errors.RequestEntityTooLarge(
                f"Request entity too large: the body decodes to more than {MAX_DECODED_BYTES} "
                "bytes")
        if len(self.stack) + depth > MAX_DEPTH:
            raise LimitExceeded(f"error decoding YAML: exceeded max depth of {MAX_DEPTH}")

    # -- events -----------------------------------------------------------------------------
    def _scalar(self, event: Any) -> None:
        value, is_merge = self._construct(event)
        self._charge(len(event.value) + _OVERHEAD, 0)
        if event.anchor is not None:
            self.anchors[event.anchor] = (value, len(event.value) + _OVERHEAD, 0, True)
        self._add(value, 0, scalar=True, merge=is_merge)

    def _alias(self, event: Any) -> None:
        found = self.anchors.get(event.anchor)
        if found is None:  # unknown, or still open: a document containing itself
            raise LimitExceeded(f"error decoding YAML: unknown anchor '{event.anchor}' "
                                    "referenced (or an anchor whose value contains itself)")
        value, size, depth, scalar = found
        self.aliased = True
        self._charge(size, depth)
        self._add(value, depth, scalar=scalar)  # shared for now: copied once the whole fits

    def _open(self, event: Any) -> None:
        is_map = isinstance(event, ev.MappingStartEvent)
        if event.tag not in (_MAP_TAGS if is_map else _SEQ_TAGS):
            raise errors.BadRequest(f"error decoding YAML: unsupported tag {event.tag!r}")
        self._charge(_OVERHEAD, 1)
        self.stack.append(_Frame({} if is_map else [], event.anchor, self.size - _OVERHEAD))

    def _close(self, event: Any) -> None:
        frame = self.stack.pop()
        value = frame.value
        if frame.is_map and frame.has_key:  # pragma: no cover - the parser pairs them
            raise errors.BadRequest("error decoding YAML: a mapping key has no value")
        if frame.merges:
            merged: dict[str, Any] = {}
            for m in frame.merges:  # earlier mappings win, the mapping's own keys over all
                for k, v in m.items():
                    merged.setdefault(k, v)
            merged.update(value)
            value = merged
        depth = frame.depth + 1
        if frame.anchor is not None:
            self.anchors[frame.anchor] = (value, self.size - frame.start, depth, False)
        self._add(value, depth, scalar=False)

    def _add(self, value: Any, depth: int, *, scalar: bool, merge: bool = False) -> None:
        if not self.stack:
            self.root.append(value)
            self.depth = depth
            return
        frame = self.stack[-1]
        if depth > frame.depth:
            frame.depth = depth
        if not frame.is_map:
            frame.value.append(value)
            return
        if not frame.has_key:
            if not scalar:
                raise errors.BadRequest("error decoding YAML: a mapping key must be a scalar")
            frame.key = _MERGE if merge else _key(value)
            frame.has_key = True
            return
        frame.has_key = False
        if frame.key is _MERGE:
            maps = value if isinstance(value, list) else [value]
            if not all(isinstance(m, dict) for m in maps):
                raise errors.BadRequest("error decoding YAML: a merge key (<<) needs a mapping "
                                        "or a list of mappings")
            frame.merges = (frame.merges or []) + maps
            return
        frame.value[frame.key] = value

    def _construct(self, event: Any) -> tuple[Any, bool]:
        """A scalar's JSON value, and whether it is the merge key ``<<``."""
        tag = event.tag
        if tag is None or tag == "!":
            if tag == "!" or not event.implicit[0]:  # quoted, or "!": a string
                return event.value, False
            tag = self.parser.resolve(yaml.ScalarNode, event.value, event.implicit)
        if tag == _STR:
            return event.value, False
        if tag == _MERGE:
            return event.value, True
        if tag in _TEXT_TAGS:
            return event.value, False
        constructor = self.parser.yaml_constructors.get(tag)
        if constructor is None:
            raise errors.BadRequest(f"error decoding YAML: unsupported tag {tag!r}")
        try:
            value = constructor(self.parser, yaml.ScalarNode(tag, event.value))
        except (ValueError, TypeError, OverflowError) as exc:
            raise errors.BadRequest(f"error decoding YAML: bad {tag.rsplit(':', 1)[-1]} value: "
                                    f"{_short(exc)}") from None
        return _jsonable(value), False


def _jsonable(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, (str, float)):
        return value
    if isinstance(value, int):
        if _INT_MIN <= value <= _INT_MAX:
            return value
        try:
            return float(value)  # as a JSON number beyond 64 bits decodes
        except OverflowError:
            raise errors.BadRequest("error decoding YAML: number out of range") from None
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")  # as Go encodes []byte
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    raise errors.BadRequest(f"error decoding YAML: unsupported value of type {type(value).__name__}")


def _key(value: Any) -> str:
    """Mapping keys as sigs.k8s.io/yaml turns them into JSON object keys."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _unshare(root: Any) -> Any:
    """Every container that occurs more than once (through aliases or merges) copied, so each
    occurrence is its own value, as if the text had been written out in full."""
    if not isinstance(root, (dict, list)):
        return root
    seen = {id(root)}
    stack = [root]
    while stack:
        container = stack.pop()
        for k, v in list(container.items() if isinstance(container, dict)
                         else enumerate(container)):
            if isinstance(v, (dict, list)):
                if id(v) in seen:
                    container[k] = _copy(v)
                else:
                    seen.add(id(v))
                    stack.append(v)
    return root


def _copy(value: Any) -> Any:
    """A deep copy of dicts and lists, without recursion (aliases may nest deeply)."""
    top: list[Any] = [None]
    work: list[tuple[Any, Any, Any]] = [(top, 0, value)]
    while work:
        parent, slot, item = work.pop()
        if isinstance(item, dict):
            new: Any = {}
            parent[slot] = new
            for k, v in item.items():
                if isinstance(v, (dict, list)):
                    new[k] = None
                    work.append((new, k, v))
                else:
                    new[k] = v
        elif isinstance(item, list):
            new = [None] * len(item)
            parent[slot] = new
            for i, v in enumerate(item):
                if isinstance(v, (dict, list)):
                    work.append((new, i, v))
                else:
                    new[i] = v
        else:
            parent[slot] = item
    return top[0]


# -- the object bound -----------------------------------------------------------------------------
def bracket_bound(data: bytes) -> int:
    """An upper bound on a JSON text's nesting: no level opens without a bracket."""
    return data.count(b"{") + data.count(b"[")


def object_depth_error(obj: Any, limit: int = MAX_OBJECT_DEPTH) -> errors.Invalid | None:
    """A 422 naming the first field nested deeper than ``limit`` levels, or None."""
    stack: list[tuple[Any, int, tuple[Any, ...]]] = [(obj, 1, ())]
    while stack:
        value, depth, path = stack.pop()
        if depth > limit:
            field = _field_path(path)
            kind = obj.get("kind", "") if isinstance(obj, dict) else ""
            name = ((obj.get("metadata") or {}).get("name", "")
                    if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict) else "")
            cause = errors.Cause("FieldValueInvalid", f"Invalid value: the object is nested too "
                                 f"deeply: must have at most {limit} levels", field)
            if isinstance(kind, str) and kind:
                api_version = obj.get("apiVersion")
                group = api_version.split("/")[0] if isinstance(api_version, str) and \
                    "/" in api_version else ""
                return errors.invalid(kind, str(name), [cause], group)
            return errors.Invalid(f"the object is invalid: {field}: {cause.message}",
                                  causes=[cause])
        if isinstance(value, dict):
            stack.extend((v, depth + 1, (path, k)) for k, v in value.items()
                         if isinstance(v, (dict, list)))
        elif isinstance(value, list):
            stack.extend((v, depth + 1, (path, i)) for i, v in enumerate(value)
                         if isinstance(v, (dict, list)))
    return None


def _field_path(path: tuple[Any, ...]) -> str:
    parts: list[Any] = []
    while path:
        path, part = path
        parts.append(part)
    out = ""
    for part in reversed(parts):
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out if len(out) <= 1024 else out[:1021] + "..."


def _short(exc: Exception) -> str:
    return str(exc).replace("\n", " ")[:300]
