"""This host's storage duties, started by the agent: the janitor, the capacity report,
volume expansion and snapshots (with restores and clones), over one PersistentVolume
informer and the host's one datastore."""

from __future__ import annotations

import asyncio
from pathlib import Path

from atoll.agent.storage import localvolumes
from atoll.agent.storage.capacity import CapacityPublisher
from atoll.agent.storage.expansion import VolumeExpansion
from atoll.agent.storage.janitor import VolumeJanitor
from atoll.agent.storage.snapshots import BY_VOLUME, Snapshotter, SnapshotStore, by_volume
from atoll.api import snapshots
from atoll.client.events import EventRecorder
from atoll.client.factory import InformerFactory
from atoll.client.rest import ApiClient


class NodeStorage:
    def __init__(self, client: ApiClient, informers: InformerFactory, data_dir: Path,
                 node: str) -> None:
        self.store = localvolumes.shared(data_dir / "volumes")
        pvs = informers.informer("", "v1", "persistentvolumes",
                                 indexers={localvolumes.HANDLE_INDEX: localvolumes.by_handle})
        self.janitor = VolumeJanitor(client, pvs, self.store)
        self.capacity = CapacityPublisher(client, self.store, pvs, node)
        self.events = EventRecorder(client, "kubelet")
        self.expansion = VolumeExpansion(client, pvs, self.store, node, self.events)
        contents = informers.informer(snapshots.GROUP, snapshots.VERSION,
                                      "volumesnapshotcontents", indexers={BY_VOLUME: by_volume})
        self.snapshotter = Snapshotter(client, contents, pvs,
                                       SnapshotStore(data_dir / "snapshots", self.store), node,
                                       self.events)

    async def run(self) -> None:
        await asyncio.gather(self.janitor.run(), self.capacity.run(), self.expansion.run(),
                             self.snapshotter.run(), self.events.run())
