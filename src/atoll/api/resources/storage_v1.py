"""storage.k8s.io/v1 CSIStorageCapacity: what a CSI driver reports it can still provision, per
storage class and topology segment (the scheduler's capacity tracking reads it)."""

from __future__ import annotations

from typing import Any

from atoll.api import errors, quantity, validation
from atoll.api.labelselector import validate_label_selector
from atoll.api.printing import Cells, _name, _name_col, _str, column, printer
from atoll.api.resources.base import Kind
from atoll.api.resourcetype import builtin
from atoll.api.strategy import Strategy

CSISTORAGECAPACITIES = builtin("storage.k8s.io", "v1", "CSIStorageCapacity",
                               "csistoragecapacities", True, generation=False)


def _quantity_causes(value: Any, path: str) -> list[errors.Cause]:
    if value is None:
        return []
    try:
        if quantity.parse(value) < 0:
            return [errors.invalid_value(path, value, "must be greater than or equal to 0")]
    except ValueError:
        return [errors.invalid_value(path, value, "must be a quantity")]
    return []


class CSIStorageCapacityStrategy(Strategy):
    """upstream's ValidateCSIStorageCapacity(+Update): the GetCapacity inputs never change."""

    def validate(self, rt, obj):  # type: ignore[no-untyped-def]
        causes: list[errors.Cause] = []
        name = obj.get("storageClassName")
        if not name:
            causes.append(errors.required("storageClassName"))
        elif not isinstance(name, str) or validation.is_dns1123_subdomain(name):
            causes.append(errors.invalid_value("storageClassName", name,
                                               "a lowercase RFC 1123 subdomain must consist of "
                                               "lower case alphanumeric characters, '-' or '.', "
                                               "and must start and end with an alphanumeric "
                                               "character"))
        causes += validate_label_selector(obj.get("nodeTopology"), "nodeTopology")
        causes += _quantity_causes(obj.get("capacity"), "capacity")
        causes += _quantity_causes(obj.get("maximumVolumeSize"), "maximumVolumeSize")
        return causes

    def validate_transition(self, rt, old, new):  # type: ignore[no-untyped-def]
        causes = []
        for f in ("nodeTopology", "storageClassName"):
            if old.get(f) != new.get(f):
                causes.append(errors.invalid_value(f, new.get(f), validation.FIELD_IMMUTABLE))
        return causes


@printer(columns=[
    _name_col(),
    column("StorageClassName", description="storageClassName represents the name of the "
                                           "StorageClass that the reported capacity applies to."),
    column("Capacity", description="capacity is the value reported by the CSI driver in its "
                                   "GetCapacityResponse for a GetCapacityRequest with topology "
                                   "and parameters that match the previous fields."),
])
def _csi_storage_capacity_row(obj: dict[str, Any], now: float) -> Cells:
    capacity = obj.get("capacity")
    return [_name(obj), _str(obj.get("storageClassName")),
            _str(capacity) if capacity is not None else "<unset>"]


CSISTORAGECAPACITY = Kind(CSISTORAGECAPACITIES, CSIStorageCapacityStrategy(),
                          printer=_csi_storage_capacity_row)
