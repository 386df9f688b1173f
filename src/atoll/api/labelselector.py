"""Label selectors, parsed and matched the way ``k8s.io/apimachinery/pkg/labels`` does.

A small lexer and a recursive-descent parser whose error messages clients see
verbatim (``unable to parse requirement: ...``), the metav1.LabelSelector forms of
specs, and their field-level validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from atoll.api import errors, validation
from atoll.api.validation import is_qualified_name, is_valid_label_value

# -- label selector: requirements ------------------------------------------------------------------
EXISTS, DOES_NOT_EXIST = "exists", "!"
EQUALS, DOUBLE_EQUALS, NOT_EQUALS = "=", "==", "!="
IN, NOT_IN, GREATER_THAN, LESS_THAN = "in", "notin", "gt", "lt"
#: the order upstream lists binary operators in its "expected:" message
BINARY_OPERATORS = (IN, NOT_IN, EQUALS, DOUBLE_EQUALS, NOT_EQUALS, GREATER_THAN, LESS_THAN)

_INT64_MIN, _INT64_MAX = -(2 ** 63), 2 ** 63 - 1


def _parse_go_int(s: str) -> int | None:
    """strconv.ParseInt(s, 10, 64): optional sign, ASCII digits, int64 range."""
    body = s[1:] if s[:1] in ("+", "-") else s
    if not body or not body.isascii() or not body.isdigit():
        return None
    n = int(s)
    return n if _INT64_MIN <= n <= _INT64_MAX else None


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        has = self.key in labels
        value = labels.get(self.key)
        op = self.operator
        if op in (IN, EQUALS, DOUBLE_EQUALS):
            return has and value in self.values
        if op in (NOT_IN, NOT_EQUALS):
            return not has or value not in self.values
        if op == EXISTS:
            return has
        if op == DOES_NOT_EXIST:
            return not has
        if op in (GREATER_THAN, LESS_THAN):
            return self._compare(value)
        return False

    def _compare(self, value: str | None) -> bool:
        if value is None or len(self.values) != 1:
            return False
        have, want = _parse_go_int(value), _parse_go_int(self.values[0])
        if have is None or want is None:
            return False
        return have > want if self.operator == GREATER_THAN else have < want

    def __str__(self) -> str:
        op = self.operator
        if op == EXISTS:
            return self.key
        if op == DOES_NOT_EXIST:
            return "!" + self.key
        if op in (IN, NOT_IN):
            return f"{self.key} {op} ({','.join(sorted(self.values))})"
        symbol = {GREATER_THAN: ">", LESS_THAN: "<"}.get(op, op)
        return f"{self.key}{symbol}{self.values[0] if self.values else ''}"


@dataclass(frozen=True)
class LabelSelector:
    """AND of requirements.  ``nothing`` is the selector of a nil metav1.LabelSelector."""

    requirements: tuple[Requirement, ...] = ()
    nothing: bool = False

    @property
    def empty(self) -> bool:
        """True when the selector matches everything."""
        return not self.nothing and not self.requirements

    def matches(self, labels: dict[str, str] | None) -> bool:
        if self.nothing:
            return False
        labels = labels if isinstance(labels, dict) else {}
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def _requirement_errors(key: str, op: str, values: list[str]) -> list[str]:
    """labels.NewRequirement's checks, as ``field.Error`` strings with a nil path."""
    errs = []
    key_msgs = is_qualified_name(key)
    if key_msgs:
        errs.append(f'key: Invalid value: "{key}": {"; ".join(key_msgs)}')
    if op in (IN, NOT_IN) and not values:
        errs.append("values: Invalid value: " + _go_list(values)
                    + ": for 'in', 'notin' operators, values set can't be empty")
    elif op in (EQUALS, DOUBLE_EQUALS, NOT_EQUALS) and len(values) != 1:
        errs.append("values: Invalid value: " + _go_list(values)
                    + ": exact-match compatibility requires one single value")
    elif op in (EXISTS, DOES_NOT_EXIST) and values:
        errs.append("values: Invalid value: " + _go_list(values)
                    + ": values set must be empty for exists and does not exist")
    elif op in (GREATER_THAN, LESS_THAN):
        if len(values) != 1:
            errs.append("values: Invalid value: " + _go_list(values)
                        + ": for 'Gt', 'Lt' operators, exactly one value is required")
        for i, v in enumerate(values):
            if _parse_go_int(v) is None:
                errs.append(f'values[{i}]: Invalid value: "{v}": for \'Gt\', \'Lt\' operators, '
                            "the value must be an integer")
    for i, v in enumerate(values):
        msgs = is_valid_label_value(v)
        if msgs:
            errs.append(f'values[{i}][{key}]: Invalid value: "{v}": {"; ".join(msgs)}')
    return errs


def _go_list(values: Iterable[str]) -> str:
    """How Go's %#v prints a []string inside field errors."""
    return "[]string{" + ", ".join(f'"{v}"' for v in values) + "}"


def _aggregate(errs: list[str]) -> str:
    """utilerrors.NewAggregate(...).Error(): one message, or ``[a, b]``."""
    return errs[0] if len(errs) == 1 else "[" + ", ".join(errs) + "]"


def new_requirement(key: str, op: str, values: Iterable[str]) -> Requirement:
    """Build a validated requirement; BadRequest carrying upstream's message otherwise."""
    vals = list(values)
    errs = _requirement_errors(key, op, vals)
    if errs:
        raise errors.BadRequest(_aggregate(errs))
    return Requirement(key, op, tuple(vals))


# -- label selector: lexer -----------------------------------------------------------------------
_ERROR, _EOS, _CLOSE, _COMMA, _NOT, _DEQ, _EQ, _GT, _ID, _IN, _LT, _NEQ, _NOTIN, _OPEN = range(14)
_SYMBOLS = {")": _CLOSE, ",": _COMMA, "!": _NOT, "==": _DEQ, "=": _EQ, ">": _GT, "in": _IN,
            "<": _LT, "!=": _NEQ, "notin": _NOTIN, "(": _OPEN}
_SPECIAL = frozenset("=!(),><")
_WHITESPACE = frozenset(" \t\r\n")


def _lex(text: str) -> list[tuple[int, str]]:
    """Split into (token, literal) pairs; a NUL byte ends input as in the Go lexer."""
    out: list[tuple[int, str]] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in _WHITESPACE:
            i += 1
        if i >= n or text[i] == "\0":
            out.append((_EOS, ""))
            return out
        if text[i] in _SPECIAL:
            tok, lit, i = _lex_symbol(text, i)
        else:
            start = i
            while i < n and text[i] != "\0" and text[i] not in _SPECIAL and text[i] not in _WHITESPACE:
                i += 1
            lit = text[start:i]
            tok = _SYMBOLS.get(lit, _ID)
        out.append((tok, lit))
        if tok == _ERROR:
            return out


def _lex_symbol(text: str, i: int) -> tuple[int, str, int]:
    """Longest run of special characters that still forms a known operator."""
    buf = ""
    best: tuple[int, str, int] | None = None
    while i < len(text) and text[i] in _SPECIAL:
        buf += text[i]
        i += 1
        if buf in _SYMBOLS:
            best = (_SYMBOLS[buf], buf, i)
        elif best is not None:
            return best
    if best is None:
        return _ERROR, f"error expected: keyword found '{buf}'", i
    return best


# -- label selector: parser ----------------------------------------------------------------------
class _Parser:
    def __init__(self, text: str) -> None:
        self.items = _lex(text)
        self.pos = 0

    def lookahead(self, values: bool = True) -> tuple[int, str]:
        tok, lit = self.items[min(self.pos, len(self.items) - 1)]
        if values and tok in (_IN, _NOTIN):
            tok = _ID  # in a value position "in"/"notin" are ordinary words
        return tok, lit

    def consume(self, values: bool = True) -> tuple[int, str]:
        item = self.lookahead(values)
        self.pos += 1
        return item

    def parse(self) -> list[Requirement]:
        reqs: list[Requirement] = []
        while True:
            tok, lit = self.lookahead()
            if tok == _EOS:
                return reqs
            if tok not in (_ID, _NOT):
                raise errors.BadRequest(
                    f"found '{lit}', expected: !, identifier, or 'end of string'")
            try:
                reqs.append(self.requirement())
            except errors.BadRequest as e:
                raise errors.BadRequest(f"unable to parse requirement: {e.message}") from None
            tok, lit = self.consume()
            if tok == _EOS:
                return reqs
            if tok != _COMMA:
                raise errors.BadRequest(f"found '{lit}', expected: ',' or 'end of string'")
            tok, lit = self.lookahead()
            if tok not in (_ID, _NOT):
                raise errors.BadRequest(f"found '{lit}', expected: identifier after ','")

    def requirement(self) -> Requirement:
        key, op = self.key_and_unary_operator()
        if op:
            return new_requirement(key, op, [])
        op = self.binary_operator()
        if op in (IN, NOT_IN):
            values = self.value_set()
        else:
            values = self.exact_value()
        return new_requirement(key, op, sorted(values))

    def key_and_unary_operator(self) -> tuple[str, str]:
        op = ""
        tok, lit = self.consume()
        if tok == _NOT:
            op = DOES_NOT_EXIST
            tok, lit = self.consume()
        if tok != _ID:
            raise errors.BadRequest(f"found '{lit}', expected: identifier")
        msgs = is_qualified_name(lit)
        if msgs:
            raise errors.BadRequest(f'<nil>: Invalid value: "{lit}": {"; ".join(msgs)}')
        if not op and self.lookahead()[0] in (_EOS, _COMMA):
            op = EXISTS
        return lit, op

    def binary_operator(self) -> str:
        tok, lit = self.consume(values=False)
        ops = {_IN: IN, _EQ: EQUALS, _DEQ: DOUBLE_EQUALS, _GT: GREATER_THAN, _LT: LESS_THAN,
               _NOTIN: NOT_IN, _NEQ: NOT_EQUALS}
        if tok not in ops:
            raise errors.BadRequest(f"found '{lit}', expected: {', '.join(BINARY_OPERATORS)}")
        return ops[tok]

    def value_set(self) -> set[str]:
        tok, lit = self.consume()
        if tok != _OPEN:
            raise errors.BadRequest(f"found '{lit}' expected: '('")
        tok, lit = self.lookahead()
        if tok == _CLOSE:
            self.consume()
            return {""}
        if tok not in (_ID, _COMMA):
            raise errors.BadRequest(f"found '{lit}', expected: ',', ')' or identifier")
        values = self.identifier_list()
        if self.consume()[0] != _CLOSE:
            raise errors.BadRequest(f"found '{lit}', expected: ')'")
        return values

    def identifier_list(self) -> set[str]:
        """Values inside ``( )``; empty slots (``(a,,b)``, ``(,a)``) mean the empty value."""
        values: set[str] = set()
        while True:
            tok, lit = self.consume()
            if tok == _ID:
                values.add(lit)
                nxt, nlit = self.lookahead()
                if nxt == _COMMA:
                    continue
                if nxt == _CLOSE:
                    return values
                raise errors.BadRequest(f"found '{nlit}', expected: ',' or ')'")
            if tok == _COMMA:
                if not values:
                    values.add("")
                nxt, _ = self.lookahead()
                if nxt == _CLOSE:
                    values.add("")
                    return values
                if nxt == _COMMA:
                    self.consume()
                    values.add("")
                continue
            raise errors.BadRequest(f"found '{lit}', expected: ',', or identifier")

    def exact_value(self) -> set[str]:
        tok, _ = self.lookahead()
        if tok in (_EOS, _COMMA):
            return {""}
        tok, lit = self.consume()
        if tok == _ID:
            return {lit}
        raise errors.BadRequest(f"found '{lit}', expected: identifier")


def parse_label_selector(text: str) -> LabelSelector:
    """labels.Parse: ``a=b,c in (x,y),!d``; raises errors.BadRequest with upstream's message."""
    if not isinstance(text, str):
        raise errors.BadRequest("label selector must be a string")
    if "\0" in text:
        # Go's lexer takes NUL for the end of input, so "a=\0b" would quietly mean "a=";
        # refuse it rather than select something the client did not write
        raise errors.BadRequest("unable to parse requirement: found NUL, expected: identifier "
                                "or 'end of string'")
    reqs = _Parser(text).parse()
    return LabelSelector(tuple(sorted(reqs, key=lambda r: r.key)))


# -- metav1.LabelSelector objects -------------------------------------------------------------------
_EXPRESSION_OPS = {"In": IN, "NotIn": NOT_IN, "Exists": EXISTS, "DoesNotExist": DOES_NOT_EXIST}


def label_selector_from_dict(sel: dict[str, Any] | None) -> LabelSelector:
    """metav1.LabelSelectorAsSelector: nil matches nothing, ``{}`` matches everything."""
    if sel is None:
        return LabelSelector(nothing=True)
    if not isinstance(sel, dict):
        raise errors.BadRequest("label selector must be an object")
    match_labels = sel.get("matchLabels") or {}
    expressions = sel.get("matchExpressions") or []
    if not isinstance(match_labels, dict) or not isinstance(expressions, list):
        raise errors.BadRequest("label selector: matchLabels must be a map and matchExpressions "
                                "a list")
    reqs: list[Requirement] = []
    for k, v in match_labels.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise errors.BadRequest("label selector: matchLabels must map strings to strings")
        reqs.append(new_requirement(k, EQUALS, [v]))
    for expr in expressions:
        reqs.append(_expression_requirement(expr))
    return LabelSelector(tuple(sorted(reqs, key=lambda r: r.key)))


def _expression_requirement(expr: Any) -> Requirement:
    if not isinstance(expr, dict):
        raise errors.BadRequest("label selector: matchExpressions items must be objects")
    op_name = expr.get("operator")
    if op_name not in _EXPRESSION_OPS:
        raise errors.BadRequest(f'"{op_name}" is not a valid label selector operator')
    key, values = expr.get("key"), expr.get("values") or []
    if not isinstance(key, str) or not isinstance(values, list) or not all(
            isinstance(v, str) for v in values):
        raise errors.BadRequest("label selector: key must be a string and values a list of strings")
    return new_requirement(key, _EXPRESSION_OPS[op_name], values)


def selector_to_string(sel: dict[str, Any] | None) -> str:
    """The canonical string form (Scale ``status.selector``): ``app=x,tier in (a,b)``."""
    return str(label_selector_from_dict(sel))


def format_label_selector(sel: dict[str, Any] | None) -> str:
    """metav1.FormatLabelSelector as printers show it: ``<none>`` / ``<error>`` for the odd cases."""
    try:
        text = selector_to_string(sel)
    except errors.ApiError:
        return "<error>"
    return text or "<none>"


def validate_label_selector(sel: Any, path: str) -> list[errors.Cause]:
    """Field-level validation of a metav1.LabelSelector in a spec (workloads, PDBs, ...)."""
    if sel is None:
        return []
    if not isinstance(sel, dict):
        return [errors.Cause("FieldValueTypeInvalid", "Invalid value: must be an object", path)]
    causes = validation.validate_labels(sel.get("matchLabels"), f"{path}.matchLabels")
    exprs = sel.get("matchExpressions")
    if exprs is None:
        return causes
    if not isinstance(exprs, list):
        return causes + [errors.Cause("FieldValueTypeInvalid", "Invalid value: must be a list",
                                      f"{path}.matchExpressions")]
    for i, expr in enumerate(exprs):
        causes.extend(_validate_expression(expr, f"{path}.matchExpressions[{i}]"))
    return causes


def _validate_expression(expr: Any, path: str) -> list[errors.Cause]:
    if not isinstance(expr, dict):
        return [errors.Cause("FieldValueTypeInvalid", "Invalid value: must be an object", path)]
    causes: list[errors.Cause] = []
    op, values = expr.get("operator"), expr.get("values")
    if op in ("In", "NotIn"):
        if not values:
            causes.append(errors.Cause(
                "FieldValueRequired",
                "Required value: must be specified when `operator` is 'In' or 'NotIn'",
                f"{path}.values"))
    elif op in ("Exists", "DoesNotExist"):
        if values:
            causes.append(errors.forbidden_field(
                f"{path}.values", "may not be specified when `operator` is 'Exists' or "
                "'DoesNotExist'"))
    else:
        causes.append(errors.not_supported(f"{path}.operator", op,
                                           ["In", "NotIn", "Exists", "DoesNotExist"]))
    key = expr.get("key")
    if not isinstance(key, str):
        causes.append(errors.Cause("FieldValueTypeInvalid", "Invalid value: must be a string",
                                   f"{path}.key"))
    else:
        causes.extend(errors.invalid_value(f"{path}.key", key, m) for m in is_qualified_name(key))
    return causes
