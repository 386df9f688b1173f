"""The agent's VMs: a worker per VirtualMachine placed on this host.

It list+watches the VirtualMachines labelled with this host
(``vmoperator.atoll.dev/host``), runs a ``VMWorker`` for each, and after the
first list stops and removes the VMs left in the run directory that no longer
belong here (deleted, or placed elsewhere while the agent was down).  It also
decides, once per host, which accelerator guests get (runtime/accel.py) and
says so on the Node.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from atoll.agent.host.network import CNI
from atoll.agent.runtime import accel
from atoll.agent.storage import localvolumes
from atoll.agent.vms import migration
from atoll.agent.vms.images import BlobCache
from atoll.agent.vms.incoming import IncomingMigration
from atoll.agent.vms.network import VMNetwork
from atoll.agent.vms.snapshots import VMSnapshots
from atoll.agent.vms.worker import VMWorker, VMWorkerSettings
from atoll.api.migration import names as m
from atoll.api.vmoperator import names as n
from atoll.client.events import EventRecorder
from atoll.client.factory import InformerFactory
from atoll.client.rest import ApiClient

log = logging.getLogger(__name__)


class VMManager:
    def __init__(self, client: ApiClient, factory: InformerFactory, settings: VMWorkerSettings,
                 cni: CNI, blob_dir: Path) -> None:
        self.client = client
        self.settings = settings
        self.network = VMNetwork(cni.ipam, cni.settings.bridge)
        self.blobs = BlobCache(client, blob_dir)
        self.events = EventRecorder(client, f"atoll-agent/{settings.node_name}")
        self.factory = factory
        self.informer = factory.informer(n.GROUP, n.VERSION, "virtualmachines",
                                         label_selector=f"{n.HOST_LABEL}={settings.node_name}")
        self.informer.add_handler(self._on_vm)
        self.workers: dict[str, VMWorker] = {}
        # live migrations: from here (the VM's worker drives them) and to here
        self.outgoing = factory.informer(m.GROUP, m.VERSION, m.PLURAL,
                                         label_selector=f"{m.SOURCE_LABEL}={settings.node_name}")
        self.outgoing.add_handler(self._on_outgoing)
        self.incoming_informer = factory.informer(
            m.GROUP, m.VERSION, m.PLURAL, label_selector=f"{m.TARGET_LABEL}={settings.node_name}")
        self.incoming_informer.add_handler(self._on_incoming)
        self.incoming: dict[str, IncomingMigration] = {}
        self.snapshots = VMSnapshots(client, factory, settings.node_name, self.workers)
        self._synced = False
        self._accel_file = settings.data_dir / "accelerator.json"
        self._accel: str = self._load_accel()
        self._accel_lock = asyncio.Lock()
        # a claim's Block volume grown on this host: running VMs using it see the new size
        localvolumes.shared(settings.data_dir.parent / "volumes").on_grown.append(
            self._volume_grown)

    async def _volume_grown(self, handle: str, disk: Path, size: int) -> None:
        for worker in list(self.workers.values()):
            await worker.resize_disk(disk, size)

    async def run(self) -> None:
        if self._accel:
            await self._label_node(self._accel)
        events = asyncio.create_task(self.events.run(), name="vm-events")
        try:
            self.factory.start()  # the agent's factory: starting it again is a no-op
            await self.factory.wait_for_sync([self.informer, self.outgoing,
                                              self.incoming_informer, *self.snapshots.informers])
            self._synced = True
            for mig in self.incoming_informer.list():
                self._on_incoming("ADDED", mig, None)
            for mig in self.outgoing.list():
                self._on_outgoing("ADDED", mig, None)
            await self._collect_orphans()
            await events
        finally:
            events.cancel()

    async def fence(self) -> None:
        """The host is cut off from the API: power off the VMs HA may restart elsewhere."""
        fenced = [w.key for w in list(self.workers.values()) if await w.fence()]
        if fenced:
            log.warning("fenced %d VM(s): %s", len(fenced), ", ".join(fenced))

    async def unfence(self) -> None:
        for worker in list(self.workers.values()):
            worker.unfence()

    async def close(self) -> None:
        """Leave every VM running: the next agent adopts them."""
        for incoming in self.incoming.values():
            if incoming.task is not None:
                incoming.task.cancel()
        await asyncio.gather(*(w.detach() for w in self.workers.values()))

    def _on_vm(self, kind: str, vm: dict[str, Any], old: dict[str, Any] | None) -> None:
        uid = vm["metadata"].get("uid", "")
        worker = self.workers.get(uid)
        if kind == "DELETED":
            if worker is not None:
                worker.update(None)
            return
        if worker is None:
            worker = self._worker(vm)
            self.workers[uid] = worker
            worker.start()
            asyncio.get_running_loop().create_task(self._forget_when_done(uid, worker))
        else:
            worker.update(vm)

    # -- live migrations ------------------------------------------------------------------------
    def _on_outgoing(self, kind: str, mig: dict[str, Any], old: dict[str, Any] | None) -> None:
        if kind == "DELETED" or not self._synced:
            return
        key = f"{mig['metadata']['namespace']}/{(mig.get('spec') or {}).get('vmName', '')}"
        worker = next((w for w in self.workers.values() if w.key == key), None)
        if worker is not None:
            worker.migrate(mig)
        elif m.phase(mig) in (m.SCHEDULING, m.SCHEDULED, m.PREPARING, m.TARGET_READY):
            asyncio.get_running_loop().create_task(migration.fail(
                self.client, mig, "NotOnSource",
                f"the VM does not run on {self.settings.node_name}"))

    def _on_incoming(self, kind: str, mig: dict[str, Any], old: dict[str, Any] | None) -> None:
        if not self._synced:
            return
        uid = mig["metadata"]["uid"]
        current = self.incoming.get(uid)
        if current is not None:
            current.update(mig)
            return
        if kind == "DELETED" or m.phase(mig) == m.SUCCEEDED or \
                (m.phase(mig) == m.FAILED and not self._left_behind(mig)):
            return
        incoming = IncomingMigration(self.client, mig, settings=self.settings,
                                     network=self.network, fetch_blob=self.blobs.ensure,
                                     accelerator=self.accelerator, owned_here=self._owns)
        self.incoming[uid] = incoming
        incoming.start(adopted=m.phase(mig) not in (m.PENDING, m.SCHEDULING, m.SCHEDULED))
        asyncio.get_running_loop().create_task(self._forget_incoming(uid, incoming))

    def _left_behind(self, mig: dict[str, Any]) -> bool:
        """A failed migration to here whose QEMU may still run (this agent was away)."""
        uid = str(((mig.get("status") or {}).get("source") or {}).get("uid") or "")
        return bool(uid) and not self._owns(uid) and (self.settings.run_dir / uid).is_dir()

    def _owns(self, vm_uid: str) -> bool:
        return vm_uid in self.workers

    async def _forget_incoming(self, uid: str, incoming: IncomingMigration) -> None:
        await incoming.finished.wait()
        if self.incoming.get(uid) is incoming:
            del self.incoming[uid]

    def _arriving(self) -> set[str]:
        """VM uids a live migration is bringing here (their run directories are not orphans)."""
        out = set()
        for mig in self.incoming_informer.list():
            status = mig.get("status") or {}
            if m.phase(mig) in m.ACTIVE or status.get("completed"):
                out.add(str((status.get("source") or {}).get("uid") or ""))
        return out

    def _worker(self, vm: dict[str, Any]) -> VMWorker:
        worker = VMWorker(vm, client=self.client, settings=self.settings, network=self.network,
                          fetch_blob=self.blobs.ensure, accelerator=self.accelerator,
                          events=self.events)
        worker.snapshots = self.snapshots
        return worker

    async def _forget_when_done(self, uid: str, worker: VMWorker) -> None:
        await worker.finished.wait()
        if self.workers.get(uid) is worker:
            del self.workers[uid]

    async def _collect_orphans(self) -> None:
        """Stop and remove VMs on this host that the API no longer places here."""
        live = {vm["metadata"].get("uid") for vm in self.informer.list()}
        found = set()
        for base in (self.settings.run_dir, self.settings.data_dir):
            if base.is_dir():
                found |= {d.name for d in base.iterdir() if d.is_dir()}
        for uid in found - live - self._arriving():
            log.info("removing VM %s, which no longer belongs to this host", uid)
            stub = {"metadata": {"uid": uid, "name": uid, "namespace": ""}}
            worker = self._worker(stub)
            worker.gone = True
            self.workers[uid] = worker
            worker.start()
            asyncio.get_running_loop().create_task(self._forget_when_done(uid, worker))

    # -- accelerator -----------------------------------------------------------------------------
    async def accelerator(self, kernel: Path | None) -> str:
        """KVM if a probe boot of ``kernel`` under KVM works (probed once per host), else TCG."""
        async with self._accel_lock:
            if self._accel:
                return self._accel
            if kernel is None:
                return "tcg"  # nothing to probe KVM with: the safe choice
            self._accel = await accel.probe(kernel)
            self._accel_file.parent.mkdir(parents=True, exist_ok=True)
            self._accel_file.write_text(json.dumps({"accelerator": self._accel}))
            await self._label_node(self._accel)
            return self._accel

    def _load_accel(self) -> str:
        try:
            return str(json.loads(self._accel_file.read_text())["accelerator"])
        except (OSError, ValueError, KeyError):
            return ""

    async def _label_node(self, value: str) -> None:
        try:
            await self.client.patch(f"/api/v1/nodes/{self.settings.node_name}",
                                    {"metadata": {"labels": {n.ACCELERATOR_LABEL: value}}})
        except Exception as e:  # the Node may not be registered yet; the next probe result retries
            log.warning("cannot label node with its accelerator: %s", e)

