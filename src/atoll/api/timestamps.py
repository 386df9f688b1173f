"""RFC 3339 timestamps, the one format every Kubernetes object and log line uses.

``rfc3339`` formats epoch seconds (now by default) as metav1.Time does (whole seconds, UTC,
``Z``); ``digits=6`` gives MicroTime (events, leases) and ``digits=9`` the nanosecond form of
container logs and CRI.  ``parse_rfc3339`` reads any of them, and offsets, back to epoch seconds;
it never raises, since timestamps arrive from clients.
"""

from __future__ import annotations

import calendar
import re
import time
from typing import Any

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def rfc3339(t: float | None = None, *, digits: int = 0) -> str:
    """``t`` (epoch seconds; now if None) in UTC with ``digits`` fractional digits (0, 3, 6, 9)."""
    t = time.time() if t is None else t
    secs = int(t // 1)
    head = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    if not digits:
        return head + "Z"
    frac = int(round((t - secs) * 10 ** digits))
    frac = min(frac, 10 ** digits - 1)
    return f"{head}.{frac:0{digits}d}Z"


def parse_rfc3339(value: Any) -> float | None:
    """RFC 3339 (with optional fraction and offset) to epoch seconds; None when malformed."""
    if not isinstance(value, str):
        return None
    m = _RFC3339.match(value.strip())
    if not m:
        return None
    year, month, day, hour, minute, sec = (int(g) for g in m.groups()[:6])
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and sec < 61):
        return None
    base = calendar.timegm((year, month, day, hour, minute, sec, 0, 0, 0))
    frac = float(m.group(7)) if m.group(7) else 0.0
    zone = m.group(8)
    offset = 0 if zone in ("Z", "z") else (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60) * (
        1 if zone[0] == "+" else -1)
    return base + frac - offset


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                   "h": 3600.0}


def parse_go_duration(text: str) -> float:
    """Seconds in a Go ``time.Duration`` string, as ``metav1.Duration`` carries one:
    ``300ms``, ``1.5h``, ``2h45m``, ``0`` (ValueError for anything else)."""
    s = str(text).strip()
    sign = -1.0 if s.startswith("-") else 1.0
    s = s.lstrip("+-")
    if s == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None:
            raise ValueError(f"not a duration: {text!r} (say 500ms, 10s or 1m30s)")
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if not s:
        raise ValueError(f"not a duration: {text!r} (say 500ms, 10s or 1m30s)")
    return sign * total
