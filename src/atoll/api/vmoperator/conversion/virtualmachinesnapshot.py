"""VirtualMachineSnapshot: v1alpha5's ``spec.vmRef`` against v1alpha6's ``spec.vmName``.

Upstream's v1alpha5 first named the VM by a reference (``vmRef{apiVersion, kind, name}``) and
v1alpha6 by name; both are served in v1alpha5 here.  Going up, a ``vmRef`` without a
``vmName`` becomes the name (the ref's other fields say nothing a namespaced name does not).
Going down, ``vmName`` stays as it is; the engine keeps what else differs.
"""

from __future__ import annotations

from typing import Any

from atoll.api.vmoperator.conversion.common import d
from atoll.api.vmoperator.conversion.engine import Shape


def v1alpha5_up(obj: dict[str, Any]) -> None:
    spec = d(obj, "spec")
    ref = spec.pop("vmRef", None) if "vmRef" in spec else None
    if isinstance(ref, dict) and ref.get("name") and not spec.get("vmName"):
        spec["vmName"] = ref["name"]


V1ALPHA5 = Shape(up=v1alpha5_up, spoke_paths=("spec.vmRef",))
SHAPES = {"v1alpha5": V1ALPHA5}
