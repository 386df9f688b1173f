"""A VirtualMachine's claims as its controller sees them: what pins its placement, and
``status.volumes`` (vm-operator's ``VirtualMachineVolumeStatus``).

Each ``spec.volumes[].persistentVolumeClaim`` is one entry: ``name`` (the volume's name in
the spec), ``type: Managed`` (a disk that is a claim, not one of the image's), ``attached``
(the VM's host runs it with its disks: ``VirtualMachineStorageReady`` True), ``limit`` (the
claim's capacity; its request while unbound) and ``error`` when the claim cannot be used
(missing, not bound, being deleted).  ``used`` is not reported: only the host knows it.
Pure functions over informer objects.
"""

from __future__ import annotations

from typing import Any, Callable

from atoll.api import conditions as cond
from atoll.api.vmoperator import names as n
from atoll.controllers.volume import binder

Lookup = Callable[[str], "dict[str, Any] | None"]


def claim_volumes(vm: dict[str, Any]) -> list[tuple[str, str]]:
    """(volume name, claim name) for each claim volume of the VM's spec."""
    out = []
    for vol in (vm.get("spec") or {}).get("volumes") or []:
        if not isinstance(vol, dict):
            continue
        claim = (vol.get("persistentVolumeClaim") or {}).get("claimName")
        if isinstance(claim, str) and claim:
            out.append((str(vol.get("name") or claim), claim))
    return out


def bound_volumes(vm: dict[str, Any], claims: Lookup, volumes: Lookup
                  ) -> list[tuple[str, dict[str, Any]]]:
    """(claim name, PV) for each claim of the VM bound to a volume that exists."""
    ns = (vm.get("metadata") or {}).get("namespace") or ""
    out = []
    for _, name in claim_volumes(vm):
        claim = claims(f"{ns}/{name}")
        pv_name = (claim.get("spec") or {}).get("volumeName") if claim else None
        pv = volumes(pv_name) if pv_name else None
        if claim is not None and pv is not None and binder.is_bound_to(pv, claim):
            out.append((name, pv))
    return out


def volume_status(vm: dict[str, Any], claims: Lookup) -> list[dict[str, Any]]:
    ns = (vm.get("metadata") or {}).get("namespace") or ""
    attached = cond.is_true((vm.get("status") or {}).get("conditions"), n.STORAGE_READY) and \
        (vm.get("status") or {}).get("powerState") == n.POWERED_ON
    out = []
    for vol_name, claim_name in claim_volumes(vm):
        entry: dict[str, Any] = {"name": vol_name, "type": "Managed"}
        claim = claims(f"{ns}/{claim_name}")
        status = (claim or {}).get("status") or {}
        if claim is None:
            entry["error"] = f'persistentvolumeclaim "{claim_name}" not found'
        elif (claim.get("metadata") or {}).get("deletionTimestamp"):
            entry["error"] = f'persistentvolumeclaim "{claim_name}" is being deleted'
        elif status.get("phase") != "Bound":
            entry["error"] = (f'persistentvolumeclaim "{claim_name}" is not bound '
                              f"(phase {status.get('phase') or 'Pending'})")
        requests = ((((claim or {}).get("spec") or {}).get("resources") or {})
                    .get("requests") or {})
        limit = (status.get("capacity") or {}).get("storage") or requests.get("storage")
        if limit is not None:
            entry["limit"] = str(limit)
        entry["attached"] = bool(attached and "error" not in entry)
        out.append(entry)
    return out
