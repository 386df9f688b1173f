"""This host's storage duties, started by the agent: the janitor and the capacity report,
over one PersistentVolume informer and the host's one datastore."""

from __future__ import annotations

import asyncio
from pathlib import Path

from atoll.agent.storage import localvolumes
from atoll.agent.storage.capacity import CapacityPublisher
from atoll.agent.storage.janitor import VolumeJanitor
from atoll.client.factory import InformerFactory
from atoll.client.rest import ApiClient


class NodeStorage:
    def __init__(self, client: ApiClient, informers: InformerFactory, data_dir: Path,
                 node: str) -> None:
        self.store = localvolumes.shared(data_dir / "volumes")
        pvs = informers.informer("", "v1", "persistentvolumes")
        self.janitor = VolumeJanitor(client, pvs, self.store)
        self.capacity = CapacityPublisher(client, self.store, pvs, node)

    async def run(self) -> None:
        await asyncio.gather(self.janitor.run(), self.capacity.run())
