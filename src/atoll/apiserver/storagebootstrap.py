"""The StorageClass every cluster starts with, as k3s ships ``local-path``: ``atoll-local``,
the default class (so a claim that names no class binds on a fresh ``atoll up``), served by
Atoll's node-local provisioner and bound only once a consumer is placed, so the volume is
made on the host that uses it.  Written only when absent: an administrator's changes (another
default, other annotations) are kept; a deleted class comes back at the next start, as
k3s's packaged manifests do."""

from __future__ import annotations

from atoll.api.resources.volumes import STORAGECLASSES
from atoll.apiserver.servicebootstrap import create_if_absent

DEFAULT_CLASS = "atoll-local"
LOCAL_PROVISIONER = "storage.atoll.dev/local"
IS_DEFAULT = "storageclass.kubernetes.io/is-default-class"


def default_class() -> dict:  # type: ignore[type-arg]
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": DEFAULT_CLASS, "annotations": {IS_DEFAULT: "true"}},
            "provisioner": LOCAL_PROVISIONER, "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer", "allowVolumeExpansion": True}


async def ensure(svc) -> None:  # type: ignore[no-untyped-def]
    """Create ``atoll-local`` unless a class of that name exists."""
    await create_if_absent(svc, STORAGECLASSES, "", default_class())
