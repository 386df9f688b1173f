"""VirtualMachineImage and ClusterVirtualMachineImage: v1alpha1 kept what the image is in
``spec`` (type, productInfo, osInfo, hwVersion, imageID, ovfEnv) and named it in
``status.imageName``; from v1alpha2 all of it is status (``status.name``,
``providerItemID``, ``providerContentVersion``, ``ovfProperties``), as vm-operator maps it."""

from __future__ import annotations

from typing import Any

from atoll.api.vmoperator.conversion.common import d, pop_empty
from atoll.api.vmoperator.conversion.engine import Shape

#: v1alpha1 spec field -> v1alpha2+ status field (same value)
SPEC_TO_STATUS = {"type": "type", "productInfo": "productInfo", "osInfo": "osInfo",
                  "hwVersion": "hardwareVersion", "imageID": "providerItemID"}
#: v1alpha1 status field -> v1alpha2+ status field
STATUS_RENAMES = {"imageName": "name", "contentVersion": "providerContentVersion"}


def up(obj: dict[str, Any]) -> None:
    spec, status = d(obj, "spec"), d(obj, "status")
    moved: dict[str, Any] = {}
    for old, new in SPEC_TO_STATUS.items():
        if old in spec:
            moved[new] = spec.pop(old)
    ovf = spec.pop("ovfEnv", None)
    if isinstance(ovf, dict) and ovf:
        moved["ovfProperties"] = [
            {k: v for k, v in {"key": p.get("key") or key, "type": p.get("type"),
                               "default": p.get("default")}.items() if v is not None}
            for key, p in ovf.items() if isinstance(p, dict)]
    for old, new in STATUS_RENAMES.items():
        if old in status:
            moved[new] = status.pop(old)
    if moved:
        obj.setdefault("status", {}).update(moved)
    pop_empty(obj, "spec")


def down(obj: dict[str, Any]) -> None:
    status = d(obj, "status")
    spec: dict[str, Any] = {}
    for old, new in SPEC_TO_STATUS.items():
        if new in status:
            spec[old] = status[new]
    if isinstance(spec.get("osInfo"), dict):
        spec["osInfo"] = {k: v for k, v in spec["osInfo"].items() if k in ("type", "version")}
    props = status.get("ovfProperties")
    if isinstance(props, list) and props:
        spec["ovfEnv"] = {p["key"]: dict(p) for p in props if isinstance(p, dict) and p.get("key")}
    for old, new in STATUS_RENAMES.items():
        if new in status:
            status[old] = status[new]
    if spec:
        obj.setdefault("spec", {}).update(spec)


V1ALPHA1 = Shape(up=up, down=down,
                 hub_paths=tuple(f"status.{n}" for n in (*SPEC_TO_STATUS.values(),
                                                          *STATUS_RENAMES.values(),
                                                          "ovfProperties")),
                 spoke_paths=(*(f"spec.{n}" for n in SPEC_TO_STATUS), "spec.ovfEnv",
                              *(f"status.{n}" for n in STATUS_RENAMES)))
SHAPES = {"v1alpha1": V1ALPHA1}
