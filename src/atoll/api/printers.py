"""Server-side Table printing (``Accept: application/json;as=Table;g=meta.k8s.io;v=v1``).

kubectl asks the server for a ``meta.k8s.io/v1`` Table and prints its cells
as-is, so the columns and cell text mirror kube-apiserver's printers
(``pkg/printers/internalversion``) for the built-in kinds, and its CRD table
convertor for custom resources.  The server always fills every column,
including the ``priority: 1`` ones kubectl only shows with ``-o wide``.

Each built-in kind's printer is declared beside the kind (``atoll.api.resources``),
made of ``atoll.api.printing``'s pieces; this module builds the Table from them.

Cells must be JSON-serializable; ``None`` (printed by kubectl as ``<none>``)
marks a CRD column whose JSONPath found nothing.
"""

from __future__ import annotations

from typing import Any, Iterable

from atoll.api import jsonpath, resources
from atoll.api.printing import (CREATED_DESC, DEFAULT_PRINTER, Cells, CellsFn, _int, _list, _name,
                                _name_col, _str, column, created_at_cell, format_labels,
                                human_duration, since)
from atoll.api.resources.core_v1 import format_endpoints, service_ports
from atoll.api.resources.core_v1_pods import pod_summary
from atoll.api.resources.volumes import access_modes
from atoll.api.timestamps import parse_rfc3339


def column_definitions(kind_key: str) -> list[dict[str, Any]]:
    """Columns for a built-in kind (``<group>/<Kind>``); Name and Age for kinds without a printer."""
    printer = resources.printer_for(kind_key) or DEFAULT_PRINTER
    return [dict(c) for c in printer.columns]


def row_cells(kind_key: str, obj: dict[str, Any], now: float) -> Cells:
    return (resources.printer_for(kind_key) or DEFAULT_PRINTER).cells(obj, now)


def row_conditions(kind_key: str, obj: dict[str, Any]) -> list[dict[str, str]]:
    """Row conditions upstream attaches: finished pods are marked ``Completed``."""
    printer = resources.printer_for(kind_key)
    if printer is None or printer.conditions is None:
        return []
    return printer.conditions(obj)


# -- custom resources -----------------------------------------------------------------------------
_DEFAULT_CRD_COLUMNS = [{"name": "Age", "type": "date", "description": CREATED_DESC,
                         "jsonPath": ".metadata.creationTimestamp"}]


def _effective_crd_columns(printer_columns: Any) -> list[dict[str, Any]]:
    cols = [c for c in _list(printer_columns) if isinstance(c, dict)]
    return cols or _DEFAULT_CRD_COLUMNS


def crd_columns(printer_columns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Name, then the CRD's additionalPrinterColumns (or Age when it declares none)."""
    out = [_name_col()]
    for col in _effective_crd_columns(printer_columns):
        path = _str(col.get("jsonPath"))
        out.append(column(
            _str(col.get("name")), _str(col.get("type")) or "string",
            _str(col.get("description"))
            or f"Custom resource definition column (in JSONPath format): {path}",
            fmt=_str(col.get("format")), priority=_int(col.get("priority"))))
    return out


def crd_cells(printer_columns: list[dict[str, Any]], obj: dict[str, Any], now: float) -> Cells:
    """Evaluate each column's jsonPath; ``None`` when nothing (or nothing usable) is found."""
    cells: Cells = [_name(obj)]
    for col in _effective_crd_columns(printer_columns):
        try:
            found = jsonpath.find(obj, _str(col.get("jsonPath")))
        except jsonpath.JSONPathError:
            found = []
        cells.append(_crd_cell(_str(col.get("type")) or "string", found, now))
    return cells


def _crd_cell(type_: str, found: list[Any], now: float) -> Any:
    if not found or found[0] is None:
        return None
    value = found[0]
    if type_ == "string":
        return ",".join(jsonpath.to_text(v) for v in found if v is not None)
    if type_ == "integer":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return int(value)
    elif type_ == "number":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif type_ == "boolean":
        if isinstance(value, bool):
            return value
    elif type_ == "date":
        if isinstance(value, str):
            t = parse_rfc3339(value)
            return "<invalid>" if t is None else human_duration(now - t)
    return None


# -- the Table ------------------------------------------------------------------------------------
def _row_object(obj: dict[str, Any], include_object: str) -> dict[str, Any] | None:
    if include_object == "Object":
        return obj
    if include_object == "None":
        return None
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}}


def table(kind_key: str, objs: Iterable[dict[str, Any]], now: float, include_object: str = "Metadata",
          columns: list[dict[str, Any]] | None = None, cells_fn: CellsFn | None = None,
          resource_version: str = "", continue_token: str = "",
          remaining: int | None = None) -> dict[str, Any]:
    """A complete ``meta.k8s.io/v1`` Table for ``objs``.

    ``columns``/``cells_fn`` override the built-in printer (custom resources pass
    ``crd_columns``/``crd_cells``).  ``include_object`` is the request's
    ``includeObject``: ``Metadata`` (default), ``Object`` or ``None``.
    """
    cols = columns if columns is not None else column_definitions(kind_key)
    rows = []
    for obj in objs:
        cells = cells_fn(obj, now) if cells_fn is not None else row_cells(kind_key, obj, now)
        row: dict[str, Any] = {"cells": cells}
        conditions = row_conditions(kind_key, obj) if cells_fn is None else []
        if conditions:
            row["conditions"] = conditions
        row_obj = _row_object(obj, include_object)
        if row_obj is not None:
            row["object"] = row_obj
        rows.append(row)
    metadata: dict[str, Any] = {}
    if resource_version:
        metadata["resourceVersion"] = resource_version
    if continue_token:
        metadata["continue"] = continue_token
    if remaining is not None:
        metadata["remainingItemCount"] = remaining
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata,
            "columnDefinitions": cols, "rows": rows}


__all__ = [
    "access_modes",
    "column",
    "column_definitions",
    "crd_cells",
    "crd_columns",
    "created_at_cell",
    "format_endpoints",
    "format_labels",
    "human_duration",
    "pod_summary",
    "row_cells",
    "row_conditions",
    "service_ports",
    "since",
    "table",
]
