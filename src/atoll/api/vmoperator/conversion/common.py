"""Small helpers the kinds' shape hooks share."""

from __future__ import annotations

from typing import Any


def d(obj: Any, key: str) -> dict[str, Any]:
    """``obj[key]`` when it is an object, else an empty (throw-away) one."""
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, dict) else {}


def upper_first(text: str) -> str:
    """v1alpha1's ``poweredOn`` / ``trySoft`` as later versions spell them."""
    return text[:1].upper() + text[1:]


def lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def pop_empty(obj: dict[str, Any], key: str) -> None:
    if obj.get(key) == {}:
        del obj[key]
