"""Response headers that always serialise: user data never reaches the wire raw.

A header value built from a request (an unknown field's name in a ``Warning``,
a name echoed back) may hold CR, LF or other control characters.  aiohttp then
refuses to write the head and drops the connection after the write was stored,
so every such string is escaped here, and ``scrub`` is the last guard applied
to every response head just before it is written.

Warnings follow kube-apiserver's recorder (``k8s.io/apiserver`` filters): one
``299 - "text"`` per distinct text, quotes and backslashes escaped; once the
texts pass 4 Ki runes in all, each is cut to 256 runes and later ones dropped.
Upstream drops a text with control characters; we escape them instead, so the
client still learns which field was unknown.
"""

from __future__ import annotations

import re
from typing import Iterable

from multidict import CIMultiDict

#: what the Server header says: no software or version banner
SERVER = "atoll"
WARNING_TOTAL_RUNES = 4 * 1024
WARNING_ITEM_RUNES = 256

#: C0 controls (tab included: a warning text is one line), DEL, C1 controls; lone surrogates
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
#: what aiohttp refuses in a header value (HTAB is allowed there)
_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_controls(text: str) -> str:
    """Control characters as Go's ``%q`` shows them (``\\n``, ``\\x00``, ``\\u0085``)."""
    def one(m: re.Match[str]) -> str:
        ch = m.group()
        if ch in _NAMED:
            return _NAMED[ch]
        return f"\\x{ord(ch):02x}" if ord(ch) < 0x80 else f"\\u{ord(ch):04x}"
    return _CONTROL.sub(one, text)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def warning_texts(warnings: Iterable[str]) -> list[str]:
    """Distinct, escaped texts within upstream's rune budget, in the order given."""
    seen: set[str] = set()
    texts: list[str] = []
    for w in warnings:
        if not w or w in seen:
            continue
        seen.add(w)
        texts.append(escape_controls(w))
    if sum(len(t) for t in texts) <= WARNING_TOTAL_RUNES:
        return texts
    out: list[str] = []
    written = 0
    for t in texts:  # truncating: each cut short, none once the budget is spent
        if written >= WARNING_TOTAL_RUNES:
            break
        t = t[:WARNING_ITEM_RUNES]
        out.append(t)
        written += len(t)
    return out


def warning_value(warnings: Iterable[str]) -> str:
    """One ``Warning`` value; repeated warnings folded with commas, as client-go splits them."""
    return ", ".join(f"299 - {_quoted(t)}" for t in warning_texts(warnings))


def safe_value(value: str) -> str:
    """A header value aiohttp will write: forbidden characters escaped."""
    if _FORBIDDEN.search(value) is None:
        return value
    return escape_controls(value)


def scrub(headers: "CIMultiDict[str]") -> None:
    """Make every value writable and hide the server software (the last guard before writing)."""
    if any(_FORBIDDEN.search(v) is not None for v in headers.values()):
        items = [(k, safe_value(v)) for k, v in headers.items()]
        headers.clear()
        headers.extend(items)
    headers["Server"] = SERVER
