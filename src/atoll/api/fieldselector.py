"""Field selectors, parsed the way ``k8s.io/apimachinery/pkg/fields`` does: ``,``-separated
``=``/``==``/``!=`` terms with ``\\`` escapes.  Which fields a kind exposes is the kind's
own declaration (``atoll.api.resources``); ``atoll.api.selectors.field_set`` looks it up.
"""

from __future__ import annotations

from dataclasses import dataclass

from atoll.api import errors

_TERM_OPERATORS = ("!=", "==", "=")


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[tuple[str, str, str], ...] = ()

    @property
    def fields(self) -> set[str]:
        return {f for f, _, _ in self.requirements}

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, fields: dict[str, str]) -> bool:
        for name, op, value in self.requirements:
            equal = fields.get(name, "") == value
            if equal if op == "!=" else not equal:
                return False
        return True

    def exact_value(self, field_name: str) -> str | None:
        """The value ``field_name`` is pinned to by ``=``/``==`` (lets a list fetch one key)."""
        for name, op, value in self.requirements:
            if name == field_name and op in ("=", "=="):
                return value
        return None


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not escaped with a backslash."""
    terms, start, escaped = [], 0, False
    for i, c in enumerate(text):
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == ",":
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def _split_term(term: str) -> tuple[str, str, str] | None:
    for i in range(len(term)):
        for op in _TERM_OPERATORS:
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op):]
    return None


def unescape_field_value(value: str) -> str:
    r"""fields.UnescapeValue: ``\\``, ``\,`` and ``\=`` are the only escapes."""
    out: list[str] = []
    escaped = False
    for c in value:
        if escaped:
            if c not in "\\,=":
                raise errors.BadRequest(f"invalid field selector: invalid escape sequence: \\{c}")
            out.append(c)
            escaped = False
        elif c == "\\":
            escaped = True
        elif c in ",=":
            raise errors.BadRequest(f"invalid field selector: unescaped character in value: {c}")
        else:
            out.append(c)
    if escaped:
        raise errors.BadRequest("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


def parse_field_selector(text: str) -> FieldSelector:
    """fields.ParseSelector; errors.BadRequest with upstream's message on bad input."""
    if not isinstance(text, str):
        raise errors.BadRequest("field selector must be a string")
    reqs: list[tuple[str, str, str]] = []
    for term in sorted(_split_terms(text)) if text else []:
        if not term:
            continue
        split = _split_term(term)
        if split is None:
            raise errors.BadRequest(f"invalid selector: '{text}'; can't understand '{term}'")
        name, op, value = split
        reqs.append((name, op, unescape_field_value(value)))
    return FieldSelector(tuple(reqs))
