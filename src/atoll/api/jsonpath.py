"""A small JSONPath evaluator for CRD printer columns and selectable fields.

It covers what ``additionalPrinterColumns`` use in practice (the subset of
``k8s.io/client-go/util/jsonpath`` people write): ``.a.b``, ``.a[0]``,
``.a[-1]``, ``.a[1:3]``, ``.a[*].b``, ``.a.*``, ``..name``, ``.a['x.y']`` and
filters like ``.conditions[?(@.type=="Ready")].status``.  A surrounding
``{...}`` and a leading ``$`` are accepted.  ``find`` returns every match;
missing keys simply produce no match (like ``AllowMissingKeys(true)``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any


class JSONPathError(ValueError):
    """The expression could not be parsed."""


@dataclass(frozen=True)
class Step:
    kind: str  # field | index | slice | wildcard | recursive | filter
    name: str = ""
    index: int = 0
    start: int | None = None
    stop: int | None = None
    filter: "Filter | None" = None


@dataclass(frozen=True)
class Filter:
    lhs: tuple[Step, ...]
    op: str  # "" means "exists"
    rhs: Any = None


_IDENT_END = re.compile(r"[.\[]")
_FILTER = re.compile(r"^\s*@((?:\.\.?[^\s=!<>\[.]*|\[[^\]]*\])*)\s*(?:(==|!=|<=|>=|<|>)\s*(.+?))?\s*$")
_INT = re.compile(r"^-?\d+$")


@lru_cache(maxsize=512)
def parse(path: str) -> tuple[Step, ...]:
    """Compile an expression into steps; raises JSONPathError when it isn't understood."""
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if text.startswith("$"):
        text = text[1:]
    if text and text[0] not in ".[":
        text = "." + text  # "spec.replicas" is read as ".spec.replicas"
    return tuple(_parse_steps(text))


def _parse_steps(text: str) -> list[Step]:
    steps: list[Step] = []
    i = 0
    while i < len(text):
        if text.startswith("..", i):
            steps.append(Step("recursive"))
            i += 2
            i = _parse_name(text, i, steps)
        elif text[i] == ".":
            i = _parse_name(text, i + 1, steps)
        elif text[i] == "[":
            end = _closing_bracket(text, i)
            steps.append(_parse_bracket(text[i + 1:end].strip()))
            i = end + 1
        else:
            raise JSONPathError(f"unexpected {text[i]!r} at {i} in {text!r}")
    return steps


def _parse_name(text: str, i: int, steps: list[Step]) -> int:
    m = _IDENT_END.search(text, i)
    end = m.start() if m else len(text)
    name = text[i:end]
    if name == "*":
        steps.append(Step("wildcard"))
    elif name:
        steps.append(Step("field", name=name))
    elif end < len(text) and text[end] == "[":
        pass  # ".[0]" / "..[0]": the bracket follows
    else:
        raise JSONPathError(f"empty field name in {text!r}")
    return end


def _closing_bracket(text: str, start: int) -> int:
    """Index of the ``]`` matching ``text[start]``, skipping quoted strings and parentheses."""
    depth, quote = 0, ""
    for j in range(start + 1, len(text)):
        c = text[j]
        if quote:
            if c == "\\":
                continue
            if c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "]" and depth <= 0:
            return j
    raise JSONPathError(f"unclosed '[' in {text!r}")


def _parse_bracket(inner: str) -> Step:
    if inner == "*":
        return Step("wildcard")
    if len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "'\"":
        return Step("field", name=inner[1:-1])
    if inner.startswith("?(") and inner.endswith(")"):
        return Step("filter", filter=_parse_filter(inner[2:-1]))
    if _INT.match(inner):
        return Step("index", index=int(inner))
    if ":" in inner:
        parts = [p.strip() for p in inner.split(":")]
        if len(parts) in (2, 3) and all(p == "" or _INT.match(p) for p in parts[:2]):
            return Step("slice", start=int(parts[0]) if parts[0] else None,
                        stop=int(parts[1]) if parts[1] else None)
    raise JSONPathError(f"unsupported subscript [{inner}]")


def _parse_filter(expr: str) -> Filter:
    m = _FILTER.match(expr)
    if not m:
        raise JSONPathError(f"unsupported filter {expr!r}")
    lhs_text, op, rhs_text = m.group(1), m.group(2) or "", m.group(3)
    lhs = tuple(_parse_steps(lhs_text))
    return Filter(lhs, op, _literal(rhs_text) if op else None)


def _literal(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    if text == "null":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise JSONPathError(f"unsupported literal {text!r}") from None


# -- evaluation ----------------------------------------------------------------------------------
def find(obj: Any, path: str | tuple[Step, ...]) -> list[Any]:
    """All values ``path`` selects in ``obj`` (an empty list when nothing matches)."""
    steps = parse(path) if isinstance(path, str) else path
    current = [obj]
    for step in steps:
        current = [out for value in current for out in _apply(step, value)]
        if not current:
            break
    return current


def _apply(step: Step, value: Any) -> list[Any]:
    kind = step.kind
    if kind == "field":
        return [value[step.name]] if isinstance(value, dict) and step.name in value else []
    if kind == "index":
        if isinstance(value, list) and -len(value) <= step.index < len(value):
            return [value[step.index]]
        return []
    if kind == "slice":
        return list(value[step.start:step.stop]) if isinstance(value, list) else []
    if kind == "wildcard":
        if isinstance(value, dict):
            return list(value.values())
        return list(value) if isinstance(value, list) else []
    if kind == "recursive":
        return _descendants(value)
    if kind == "filter" and step.filter is not None:
        items = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
        return [item for item in items if _holds(step.filter, item)]
    return []


def _descendants(value: Any) -> list[Any]:
    out = [value]
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    for child in children:
        out.extend(_descendants(child))
    return out


def _holds(flt: Filter, item: Any) -> bool:
    found = find(item, flt.lhs)
    if not flt.op:
        return bool(found)
    if not found:
        return False
    return _compare(found[0], flt.op, flt.rhs)


def _compare(left: Any, op: str, right: Any) -> bool:
    numeric = (isinstance(left, (int, float)) and isinstance(right, (int, float))
               and not isinstance(left, bool) and not isinstance(right, bool))
    if op == "==":
        return left == right if numeric or type(left) is type(right) else False
    if op == "!=":
        return not _compare(left, "==", right)
    if not numeric and not (isinstance(left, str) and isinstance(right, str)):
        return False
    return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]


# -- rendering ------------------------------------------------------------------------------------
def to_text(value: Any) -> str:
    """How kube's jsonpath prints one result: scalars as text, objects/lists as compact JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_float(value)
    if value is None:
        return "<nil>"
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def go_float(f: float) -> str:
    """Go's ``%v`` for a float64: shortest digits, exponent form below 1e-4 or from 1e21."""
    if f != f:
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "+Inf" if f > 0 else "-Inf"
    d = Decimal(repr(f))
    exp = d.adjusted()
    if -4 <= exp < 21:
        text = format(d, "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return text
    sign, digits, _ = d.normalize().as_tuple()
    mantissa = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
    return f"{'-' if sign else ''}{mantissa}e{'+' if exp >= 0 else '-'}{abs(exp):02d}"
