"""Names the VirtualMachineSnapshot's parts agree on (controller, agent, migration check).

Snapshots are read in v1alpha6 (the first version with ``spec.vmName`` and every status
field), as are the VM fields they touch (``spec.currentSnapshotName``, ``status.currentSnapshot``,
``status.rootSnapshots``), which v1alpha3 lacks.
"""

from __future__ import annotations

from typing import Any, Iterable

from atoll.api.vmoperator.names import GROUP

VERSION = "v1alpha6"
API_VERSION = f"{GROUP}/{VERSION}"
PLURAL = "virtualmachinesnapshots"
KIND = "VirtualMachineSnapshot"

#: upstream's label: the VM a snapshot is of
VM_NAME_LABEL = f"snapshot.{GROUP}/vm-name"
#: Atoll: the snapshot taken before this one of the same VM (the tree's edge), "" for a root
PARENT_ANNOTATION = "vmoperator.atoll.dev/parent-snapshot"
FINALIZER = f"{GROUP}/virtualmachinesnapshot"

CREATED = "VirtualMachineSnapshotCreated"
READY = "VirtualMachineSnapshotReady"
#: on the VM: how the last revert (spec.currentSnapshotName) went
REVERT_SUCCEEDED = "VirtualMachineSnapshotRevertSucceeded"

WAITING_FOR_CREATION = "VirtualMachineSnapshotWaitingForCreation"
IN_PROGRESS = "VirtualMachineSnapshotCreationInProgress"
FAILED = "VirtualMachineSnapshotCreationFailed"


def path(namespace: str, name: str = "") -> str:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    return f"{base}/{name}" if name else base


def vm_path(namespace: str, name: str) -> str:
    """The VM in v1alpha6 (its snapshot fields)."""
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/virtualmachines/{name}"


def vm_name(snap: dict[str, Any]) -> str:
    return str((snap.get("spec") or {}).get("vmName") or "")


def names_of_vm(snaps: Iterable[dict[str, Any]], vm: str) -> list[str]:
    """The snapshots (of one namespace) taken of the VM named ``vm``, by name."""
    return sorted(str(s["metadata"].get("name")) for s in snaps if vm_name(s) == vm)


def tag(snap: dict[str, Any]) -> str:
    """The snapshot's name inside the qcow2 disks: its uid, short (status.uniqueID)."""
    return "atoll-" + str(snap["metadata"].get("uid", ""))[:8]


def ref(name: str) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, "name": name}
