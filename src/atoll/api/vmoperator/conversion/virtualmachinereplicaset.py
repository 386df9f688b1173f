"""VirtualMachineReplicaSet: its template is a VirtualMachine, so what moved in a VM's spec
between versions moves in the template too (v1alpha3 and v1alpha4's ``spec.cdrom``, which
v1alpha5 put under ``spec.hardware``).  The set's own fields are the same in every version.
"""

from __future__ import annotations

from typing import Any

from atoll.api.vmoperator.conversion.common import d
from atoll.api.vmoperator.conversion.engine import Shape
from atoll.api.vmoperator.conversion.virtualmachine import cdrom_down, cdrom_up


def template_up(obj: dict[str, Any]) -> None:
    cdrom_up(d(d(obj, "spec"), "template"))


def template_down(obj: dict[str, Any]) -> None:
    cdrom_down(d(d(obj, "spec"), "template"))


CDROM = Shape(up=template_up, down=template_down,
              hub_paths=("spec.template.spec.hardware.cdrom",),
              spoke_paths=("spec.template.spec.cdrom",))
SHAPES = {"v1alpha3": CDROM, "v1alpha4": CDROM}
