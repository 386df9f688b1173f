"""coordination.k8s.io/v1: leases."""

from __future__ import annotations

from typing import Any

from atoll.api.printing import Cells, _age, _age_col, _get, _name, _name_col, _str, column, printer
from atoll.api.resources.base import Kind
from atoll.api.resourcetype import builtin

LEASES = builtin("coordination.k8s.io", "v1", "Lease", "leases", True, generation=False)


@printer(columns=[
    _name_col(), column("Holder", description="holderIdentity contains the identity of the holder "
                                              "of a current lease."), _age_col()])
def _lease(obj: dict[str, Any], now: float) -> Cells:
    return [_name(obj), _str(_get(obj, "spec", "holderIdentity")), _age(obj, now)]


LEASE = Kind(LEASES, printer=_lease)
