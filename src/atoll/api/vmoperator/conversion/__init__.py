"""Conversion between the VM Operator API's versions (v1alpha1 … v1alpha6), in process.

vm-operator converts in a webhook (each version's ``*_conversion.go``, v1alpha6 the hub);
Atoll's API server calls these converters instead (``atoll.api.crdconversion``).  The
schemas come from the served CRDs themselves; what differs in form between versions is
each kind's ``Shape`` hooks (one module per kind); the lossless part is ``engine``'s.
"""

from __future__ import annotations

import functools
from typing import Any

from atoll.api import crdconversion
from atoll.api.vmoperator import definitions
from atoll.api.vmoperator.names import GROUP
from atoll.api.vmoperator.conversion import (
    virtualmachine,
    virtualmachineimage,
    virtualmachinereplicaset,
    virtualmachinesnapshot,
)
from atoll.api.vmoperator.conversion.engine import ANNOTATION, KindConverter, Shape

HUB = "v1alpha6"
SHAPES: dict[str, dict[str, Shape]] = {
    "VirtualMachine": virtualmachine.SHAPES,
    "VirtualMachineImage": virtualmachineimage.SHAPES,
    "ClusterVirtualMachineImage": virtualmachineimage.SHAPES,
    "VirtualMachineSnapshot": virtualmachinesnapshot.SHAPES,
    "VirtualMachineReplicaSet": virtualmachinereplicaset.SHAPES,
}


@functools.cache
def converters() -> dict[str, KindConverter]:
    """One converter per kind, built from the CRDs' per-version schemas."""
    out = {}
    for crd in definitions():
        spec = crd["spec"]
        kind = spec["names"]["kind"]
        schemas = {v["name"]: v["schema"]["openAPIV3Schema"] for v in spec["versions"]}
        out[kind] = KindConverter(spec["group"], kind, schemas, HUB, SHAPES.get(kind))
    return out


class _Lazy:
    """Registered at import; builds the converters on first use."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def convert(self, obj, api_version):  # type: ignore[no-untyped-def]
        return converters()[self.kind].convert(obj, api_version)


def in_version(obj: dict[str, Any], kind: str, have: str, want: str) -> dict[str, Any]:
    """An informer's object (read in ``have``) as ``want`` has it: a part that needs a newer
    version's fields shares the watch the other parts hold in an older one (the newer fields
    come back whole from the conversion annotation the server wrote)."""
    return converters()[kind].convert({**obj, "apiVersion": f"{GROUP}/{have}", "kind": kind},
                                      f"{GROUP}/{want}")


for _crd in definitions():
    crdconversion.register(_crd["spec"]["group"], _crd["spec"]["names"]["kind"],
                           _Lazy(_crd["spec"]["names"]["kind"]))

__all__ = ["ANNOTATION", "HUB", "KindConverter", "converters", "in_version"]
