"""Upstream's checks of the paths a pod names inside its volumes.

Files of configMap, secret, downwardAPI and projected volumes (``items[].path``,
``serviceAccountToken.path``) and a mount's ``subPath``/``subPathExpr`` must
stay inside the volume: relative, no ``..`` (kube's ``validateLocalDescendingPath``
and ``ValidateLocalNonReservedPath``); file modes are 0..0777.  The agent checks
again when it writes or mounts (symlinks can only be seen there).
"""

from __future__ import annotations

from typing import Any

from atoll.api import errors

MODE_MSG = "must be a number between 0 and 0777 (octal), both inclusive"


def _descending(value: str, field: str) -> list[errors.Cause]:
    causes = []
    if value.startswith("/"):
        causes.append(errors.invalid_value(field, value, "must be a relative path"))
    if ".." in value.split("/"):
        causes.append(errors.invalid_value(field, value, "must not contain '..'"))
    return causes


def _non_reserved(value: Any, field: str) -> list[errors.Cause]:
    if not isinstance(value, str) or not value:
        return [errors.required(field)]
    causes = _descending(value, field)
    if value.startswith("..") and not value.startswith("../"):
        causes.append(errors.invalid_value(field, value, "must not start with '..'"))
    return causes


def _mode(value: Any, field: str) -> list[errors.Cause]:
    if value is None:
        return []
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0o777:
        return [errors.invalid_value(field, value, MODE_MSG)]
    return []


def _items(items: Any, field: str) -> list[errors.Cause]:
    causes: list[errors.Cause] = []
    for i, item in enumerate(items if isinstance(items, list) else []):
        if isinstance(item, dict):
            causes += _non_reserved(item.get("path"), f"{field}[{i}].path")
            causes += _mode(item.get("mode"), f"{field}[{i}].mode")
    return causes


def _source(src: dict[str, Any], field: str) -> list[errors.Cause]:
    causes: list[errors.Cause] = []
    for kind in ("configMap", "secret", "downwardAPI"):
        spec = src.get(kind)
        if isinstance(spec, dict):
            causes += _items(spec.get("items"), f"{field}.{kind}.items")
            causes += _mode(spec.get("defaultMode"), f"{field}.{kind}.defaultMode")
    token = src.get("serviceAccountToken")
    if isinstance(token, dict):
        causes += _non_reserved(token.get("path"), f"{field}.serviceAccountToken.path")
    return causes


def validate(spec: dict[str, Any]) -> list[errors.Cause]:
    """Causes for every volume file path and subPath of a pod spec that could leave its volume."""
    causes: list[errors.Cause] = []
    for i, vol in enumerate(spec.get("volumes") or []):
        if not isinstance(vol, dict):
            continue
        field = f"spec.volumes[{i}]"
        causes += _source(vol, field)
        projected = vol.get("projected")
        if isinstance(projected, dict):
            causes += _mode(projected.get("defaultMode"), f"{field}.projected.defaultMode")
            for j, src in enumerate(projected.get("sources") or []):
                if isinstance(src, dict):
                    causes += _source(src, f"{field}.projected.sources[{j}]")
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for i, c in enumerate(spec.get(key) or []):
            if not isinstance(c, dict):
                continue
            for j, vm in enumerate(c.get("volumeMounts") or []):
                if not isinstance(vm, dict):
                    continue
                field = f"spec.{key}[{i}].volumeMounts[{j}]"
                sub, expr = vm.get("subPath"), vm.get("subPathExpr")
                if isinstance(sub, str) and sub:
                    causes += _descending(sub, f"{field}.subPath")
                if isinstance(expr, str) and expr:
                    if isinstance(sub, str) and sub:
                        causes.append(errors.invalid_value(
                            f"{field}.subPathExpr", expr,
                            "subPathExpr and subPath are mutually exclusive"))
                    causes += _descending(expr, f"{field}.subPathExpr")
    return causes
