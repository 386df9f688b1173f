"""metav1.Condition lists (``type``, ``status``, ``reason``, ``message``,
``lastTransitionTime``, ``observedGeneration``) as several writers share them.

Each writer owns some condition types and rewrites only those: ``merge`` puts
its conditions into the list it last read, keeping the others untouched and
``lastTransitionTime`` unchanged while the status stays the same.
"""

from __future__ import annotations

from typing import Any

from atoll.api.timestamps import rfc3339


def now() -> str:
    """Now as a condition's ``lastTransitionTime`` (metav1.Time: whole seconds, UTC)."""
    return rfc3339()


def condition(type_: str, ok: bool | None, reason: str, message: str = "",
              generation: int | None = None) -> dict[str, Any]:
    """A condition; ``ok`` None means Unknown."""
    status = "Unknown" if ok is None else ("True" if ok else "False")
    c: dict[str, Any] = {"type": type_, "status": status, "reason": reason, "message": message}
    if generation is not None:
        c["observedGeneration"] = generation
    return c


def find(conditions: list[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)


def is_true(conditions: list[dict[str, Any]] | None, type_: str) -> bool:
    c = find(conditions, type_)
    return c is not None and c.get("status") == "True"


def merge(current: list[dict[str, Any]] | None, updates: list[dict[str, Any]],
          remove: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """``current`` with ``updates`` put in (by type) and ``remove`` types taken out."""
    out = [dict(c) for c in current or [] if c.get("type") not in remove]
    for new in updates:
        old = find(out, new["type"])
        stamped = dict(new)
        if old is not None and old.get("status") == new["status"] and old.get("lastTransitionTime"):
            stamped["lastTransitionTime"] = old["lastTransitionTime"]
        else:
            stamped["lastTransitionTime"] = now()
        if old is None:
            out.append(stamped)
        else:
            out[out.index(old)] = stamped
    return out


def changed(current: list[dict[str, Any]] | None, merged: list[dict[str, Any]]) -> bool:
    """Whether writing ``merged`` would change anything but nothing at all."""
    def strip(cs: list[dict[str, Any]] | None) -> list[tuple[Any, ...]]:
        return sorted((c.get("type"), c.get("status"), c.get("reason"), c.get("message"),
                       c.get("observedGeneration")) for c in cs or [])
    return strip(current) != strip(merged)
