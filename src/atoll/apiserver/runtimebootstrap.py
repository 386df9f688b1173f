"""The RuntimeClass every cluster starts with: ``atoll-vm``, handler ``atoll-vm``, pods in
their own QEMU microvm (issue 14).  Its ``overhead.podFixed`` is what one pod-VM costs the host
beyond its containers' requests: QEMU and virtiofsd (the issue's target: at most 40 MiB PSS)
plus the guest kernel and the small static guest agent, so 64Mi, and 100m of CPU for the
VMM's own threads and the virtio queues (Kata's kata-qemu declares 160Mi/250m for a full
q35 QEMU).  No ``scheduling``: agents do not label hosts by runtime, and a pod-VM placed on a
host whose agent has no pod-VM runtime fails there with the kubelet's reason.  Written
only when absent, as ``storagebootstrap``: an administrator's edits are kept, a deleted class
comes back at the next start."""

from __future__ import annotations

from typing import Any

from atoll.api.resources.node_v1 import POD_VM_CLASS, POD_VM_HANDLER, RUNTIMECLASSES
from atoll.apiserver.servicebootstrap import create_if_absent

OVERHEAD = {"cpu": "100m", "memory": "64Mi"}


def pod_vm_class() -> dict[str, Any]:
    return {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
            "metadata": {"name": POD_VM_CLASS}, "handler": POD_VM_HANDLER,
            "overhead": {"podFixed": dict(OVERHEAD)}}


async def ensure(svc) -> None:  # type: ignore[no-untyped-def]
    """Create ``atoll-vm`` unless a class of that name exists."""
    await create_if_absent(svc, RUNTIMECLASSES, "", pod_vm_class())
