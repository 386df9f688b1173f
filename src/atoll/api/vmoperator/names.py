"""Names the VM operator's parts agree on: API group, labels, finalizer, condition types."""

from __future__ import annotations

GROUP = "vmoperator.vmware.com"
VERSION = "v1alpha3"
API_VERSION = f"{GROUP}/{VERSION}"

#: the host a VM is placed on (agents list+watch their VMs by it)
HOST_LABEL = "vmoperator.atoll.dev/host"
#: the accelerator a host's VMs get, on its Node: "kvm" | "tcg"
ACCELERATOR_LABEL = "vm.atoll.dev/accelerator"
FINALIZER = "vmoperator.vmware.com/virtualmachine"

CLASS_READY = "VirtualMachineClassReady"
IMAGE_READY = "VirtualMachineImageReady"
STORAGE_READY = "VirtualMachineStorageReady"
BOOTSTRAP_READY = "VirtualMachineBootstrapReady"
NETWORK_READY = "VirtualMachineNetworkReady"
PLACEMENT_READY = "VirtualMachineConditionPlacementReady"
CREATED = "VirtualMachineCreated"
GUEST_BOOTSTRAP = "GuestBootstrap"
READY = "Ready"

POWERED_ON, POWERED_OFF, SUSPENDED = "PoweredOn", "PoweredOff", "Suspended"
HARD, SOFT, TRY_SOFT = "Hard", "Soft", "TrySoft"


def vm_path(namespace: str, name: str = "") -> str:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/virtualmachines"
    return f"{base}/{name}" if name else base


def class_path(namespace: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/virtualmachineclasses/{name}"


def image_path(kind: str, name: str, namespace: str = "") -> str:
    if kind == "ClusterVirtualMachineImage":
        return f"/apis/{GROUP}/{VERSION}/clustervirtualmachineimages/{name}"
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/virtualmachineimages/{name}"
