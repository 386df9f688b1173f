"""Kubernetes resource quantities (``500m``, ``1.5Gi``, ``2e3``) as exact numbers."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_SUFFIXES = {
    "": Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9, "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15, "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
}
_PATTERN = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[numkKMGTPE]i?|)$")


def parse(value: object) -> Decimal:
    """The quantity's value; ValueError for anything Kubernetes would not accept."""
    if isinstance(value, bool):
        raise ValueError(f"quantity must be a string or number, not {value!r}")
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    if not isinstance(value, str):
        raise ValueError(f"quantity must be a string, not {type(value).__name__}")
    match = _PATTERN.match(value.strip())
    if not match or match.group(2) in ("mi", "ui", "ni", "ki"):
        raise ValueError(f"quantities must match the regular expression "
                         f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {value!r}")
    number, suffix = match.groups()
    try:
        base = Decimal(number)
    except InvalidOperation:
        raise ValueError(f"invalid quantity {value!r}") from None
    if suffix[:1] in ("e", "E"):
        return base * (Decimal(10) ** int(suffix[1:]))
    if suffix not in _SUFFIXES:
        raise ValueError(f"invalid quantity suffix in {value!r}")
    return base * _SUFFIXES[suffix]


def millis(value: object) -> int:
    """CPU-style: the value in thousandths, rounded up (``100m`` → 100, ``0.5`` → 500)."""
    v = parse(value) * 1000
    return int(v.to_integral_value(rounding="ROUND_CEILING"))


def integer(value: object) -> int:
    """Memory-style: the value in units, rounded up (``1Ki`` → 1024)."""
    return int(parse(value).to_integral_value(rounding="ROUND_CEILING"))
