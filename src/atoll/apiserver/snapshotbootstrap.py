"""The VolumeSnapshotClass every cluster starts with: ``atoll-local-snapshots``, the default
class of the ``atoll-local`` provisioner's driver (so a VolumeSnapshot of such a claim that
names no class works on a fresh ``atoll up``), deletion policy Delete.  Written only when
absent and once its CRD is served, as ``storagebootstrap`` writes the StorageClass."""

from __future__ import annotations

from atoll.api import snapshots
from atoll.apiserver.servicebootstrap import create_if_absent
from atoll.apiserver.storagebootstrap import LOCAL_PROVISIONER


async def ensure(svc, registry) -> None:  # type: ignore[no-untyped-def]
    rt = registry.lookup(snapshots.GROUP, snapshots.VERSION, "volumesnapshotclasses")
    if rt is None:
        return  # not served (yet): the next start writes it
    await create_if_absent(svc, rt, "", snapshots.default_class_body(LOCAL_PROVISIONER))
