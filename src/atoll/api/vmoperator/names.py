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
#: "true" on a VM or its class: restart it on another host when its host fails (vSphere HA)
HA_ANNOTATION = "vmoperator.atoll.dev/restart-on-host-failure"
#: set on a VM that HA restarted elsewhere: the host it left
HA_FROM_ANNOTATION = "vmoperator.atoll.dev/restarted-from"

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


def ha_protected(vm: dict, klass: dict | None) -> bool:
    """The VM's own annotation wins; else its class's; else not protected."""
    for obj in (vm, klass or {}):
        value = ((obj.get("metadata") or {}).get("annotations") or {}).get(HA_ANNOTATION)
        if value is not None:
            return str(value).lower() == "true"
    return False
