"""The target end of a live migration: an identical QEMU waiting for the VM's state.

On ``Scheduled`` the agent prepares the VM as for a power-on (class, image, a fresh
copy-on-write boot disk over the same image, the seed, a tap) but with the source's address,
accelerator and size, starts QEMU with ``-incoming defer``, exports each writable drive over
NBD and listens for the memory stream, then says ``TargetReady`` with where.  The run directory
has the layout a VM's worker adopts, so when the VM's host label moves here the worker finds
its QEMU running (``state.json`` says the guest had booted, so it is not taken for a silent
boot).  ``Failed`` before the guest runs here removes everything this side made.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
from pathlib import Path
from typing import Any, Awaitable, Callable

from atoll.agent.runtime.qemu import Disk, QemuError, QemuProcess, pid_of
from atoll.agent.vms import bootstrap as vmbootstrap
from atoll.agent.vms import migration as mg
from atoll.agent.vms.launch import FetchBlob, LaunchPreparer, VMSetupError, launch_config
from atoll.agent.vms.network import AddressUnavailable, VMNetwork
from atoll.agent.vms.worker import VMWorkerSettings
from atoll.api import errors
from atoll.api.migration import names as m
from atoll.api.vmoperator import names as n
from atoll.client.rest import ApiClient

log = logging.getLogger(__name__)
POLL = 0.2

#: whether this host's worker already owns the VM of this uid (then nothing here may touch it)
OwnedHere = Callable[[str], bool]


class IncomingMigration:
    def __init__(self, client: ApiClient, mig: dict[str, Any], *, settings: VMWorkerSettings,
                 network: VMNetwork, fetch_blob: FetchBlob,
                 accelerator: Callable[[Path | None], Awaitable[str]],
                 owned_here: OwnedHere) -> None:
        self.client = client
        self.mig = mig
        self.settings = settings
        self.network = network
        self.fetch_blob = fetch_blob
        self.accelerator = accelerator
        self.owned_here = owned_here
        self.name = f"{mig['metadata']['namespace']}/{mig['metadata']['name']}"
        self.uid = ""
        self.qemu: QemuProcess | None = None
        self._changed = asyncio.Event()
        self._changed.set()
        self.task: asyncio.Task[None] | None = None
        self.finished = asyncio.Event()
        self._prepared = False
        self.prep: LaunchPreparer | None = None
        self.made_volumes: list[str] = []

    def start(self, *, adopted: bool = False) -> None:
        """``adopted``: the migration was already past Scheduled when this agent started."""
        self.task = asyncio.get_running_loop().create_task(self._run(adopted),
                                                           name=f"mig-in-{self.name}")

    def update(self, mig: dict[str, Any]) -> None:
        self.mig = mig
        self._changed.set()

    async def _run(self, adopted: bool) -> None:
        try:
            if adopted:
                await self._after_restart()
            while True:
                await self._changed.wait()
                self._changed.clear()
                phase = m.phase(self.mig)
                status = self.mig.get("status") or {}
                if phase == m.SCHEDULED and not self._prepared:
                    self._prepared = True
                    await self._prepare()
                elif phase == m.FAILED:
                    await self._clean_up()
                    return
                elif phase == m.SUCCEEDED or status.get("completed"):
                    await self._let_go()
                    if phase == m.SUCCEEDED:
                        return
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("migration %s: target side failed", self.name)
            await mg.fail(self.client, self.mig, "TargetError", str(e))
            await self._clean_up()
        finally:
            if self.qemu is not None:
                await self.qemu.close()
            self.finished.set()

    # -- preparing -------------------------------------------------------------------------------
    async def _prepare(self) -> None:
        mig = await mg.advance(self.client, self.mig, (m.SCHEDULED,), {}, m.PREPARING)
        if mig is None:
            return
        self.mig = mig
        source = (mig.get("status") or {}).get("source") or {}
        ns, vm_name = mig["metadata"]["namespace"], mig["spec"]["vmName"]
        try:
            vm = await self.client.get(n.vm_path(ns, vm_name))
        except errors.NotFound:
            await mg.fail(self.client, mig, "VirtualMachineNotFound", f"{vm_name} is gone")
            return
        self.uid = vm["metadata"]["uid"]
        if self.owned_here(self.uid):
            await mg.fail(self.client, mig, "AlreadyHere", "the VM already runs on this host")
            return
        try:
            await self._start_qemu(vm, source)
            target = await self._listen()
        except (VMSetupError, AddressUnavailable, QemuError, OSError) as e:
            reason = e.reason if isinstance(e, VMSetupError) else "TargetNotReady"
            await mg.fail(self.client, mig, reason, str(e))
            await self._clean_up()
            return
        written = await mg.advance(self.client, self.mig, (m.PREPARING,), {"target": target},
                                   m.TARGET_READY)
        if written is None:
            await self._clean_up()
            return
        self.mig = written
        asyncio.get_running_loop().create_task(self._watch_qemu())

    @property
    def run_dir(self) -> Path:
        return self.settings.run_dir / self.uid

    @property
    def disks_dir(self) -> Path:
        return self.settings.data_dir / self.uid

    async def _start_qemu(self, vm: dict[str, Any], source: dict[str, Any]) -> None:
        if pid_of(self.run_dir, self.uid) is not None:
            # a QEMU of an earlier attempt (this host does not own the VM): it must go first
            stale = QemuProcess(self.run_dir, self.uid)
            if await stale.adopt():
                await stale.stop()
            await stale.close()
        for d in (self.run_dir, self.disks_dir):
            shutil.rmtree(d, ignore_errors=True)
        self.prep = prep = LaunchPreparer(
            self.client, self.fetch_blob, disks_dir=self.disks_dir, run_dir=self.run_dir,
            volumes_dir=self.settings.data_dir.parent / "volumes",
            node=self.settings.node_name, qemu_img=self.settings.qemu_img,
            moving_from=(self.mig.get("status") or {}).get("sourceNode", ""))
        before = set(prep.store.handles())
        try:
            res = await prep.resources(vm)
        finally:  # the volumes made here for the VM's claims go if the migration fails
            self.made_volumes = sorted(set(prep.store.handles()) - before)
        if source.get("cpus") and (int(source["cpus"]), int(source.get("memoryMiB") or 0)) != \
                (res.cpus, res.memory_mib):
            raise VMSetupError(n.CLASS_READY, "HardwareMismatch",
                               f"the source runs {source['cpus']} vCPU / {source['memoryMiB']} MiB,"
                               f" the class now says {res.cpus} / {res.memory_mib}")
        accel = str(source.get("accelerator") or "tcg")
        if accel != await self.accelerator(res.kernel):
            raise VMSetupError(n.CREATED, "AcceleratorMismatch",
                               f"the source runs the guest with {accel}, this host cannot")
        if not source.get("ip"):
            raise VMSetupError(n.NETWORK_READY, "NoAddress", "the source published no address")
        address = await self.network.attach_moved(
            self.uid, source["ip"], int(source.get("prefixLength") or 24),
            str(source.get("gateway") or ""), bool(source.get("defaultRoute", True)))
        host = vmbootstrap.hostname(vm)
        seed = await prep.seed(vm, host, address)
        res.disks.append(Disk(seed, format="raw", readonly=True, serial="cidata"))
        _match_sizes(res.disks, source.get("diskSizes") or [])
        cfg = launch_config(vm, self.uid, res, accelerator=accel, address=address, host=host)
        cfg.vmstate = await prep.vmstate_disk()
        cfg.incoming = True
        self.qemu = QemuProcess(self.run_dir, self.uid)
        await self.qemu.launch(cfg)
        _write_state(self.run_dir, {
            "running": True, "accel": accel, "address": address.__dict__,
            "hardware": {"cpus": res.cpus, "memoryMiB": res.memory_mib},
            "migratedFrom": (self.mig.get("status") or {}).get("sourceNode", ""),
            "migration": self.mig["metadata"]["uid"],
            "bootResult": source.get("bootResult") or ""})

    async def _listen(self) -> dict[str, Any]:
        """NBD exports of the writable drives and the migration listener, on this host's
        address, at ports free now."""
        assert self.qemu is not None
        ip = self.settings.host_ip
        nbd_port, mig_port = _free_port(ip), _free_port(ip)
        policy = (self.mig.get("status") or {}).get("policy") or {}
        await self.qemu.execute("migrate-set-capabilities", {"capabilities": [
            {"capability": "events", "state": True},
            {"capability": "postcopy-ram", "state": bool(policy.get("allowPostCopy"))}]})
        drives = await mg.writable_drives(self.qemu)
        await self.qemu.execute("nbd-server-start", {"addr": {
            "type": "inet", "data": {"host": ip, "port": str(nbd_port)}}})
        for device, info in drives.items():
            await self.qemu.execute("block-export-add", {
                "type": "nbd", "id": f"mig-{device}", "node-name": info["node-name"],
                "writable": True, "name": device})
        await self.qemu.execute("migrate-incoming", {"uri": f"tcp:{ip}:{mig_port}"})
        return {"address": ip, "nbdPort": nbd_port, "migrationPort": mig_port,
                "disks": sorted(drives)}

    async def _watch_qemu(self) -> None:
        """The guest starts running here when the copy completes: stop serving NBD then; a
        QEMU that dies before that fails the migration."""
        qemu = self.qemu
        while qemu is not None and qemu.running and not self.finished.is_set():
            with contextlib.suppress(QemuError):
                if (await qemu.execute("query-migrate")).get("status") == "completed":
                    with contextlib.suppress(QemuError):
                        await qemu.execute("nbd-server-stop")
                    return
            await asyncio.sleep(POLL)
        if qemu is not None and not qemu.running and m.phase(self.mig) not in m.TERMINAL:
            await mg.fail(self.client, self.mig, "TargetExited",
                          "the target's QEMU exited during the migration")
            self._changed.set()

    # -- endings ---------------------------------------------------------------------------------
    async def _after_restart(self) -> None:
        """This agent started during the migration: the QEMU this side started may run on,
        but nobody follows its copy any more; unless the guest already runs here, give up."""
        status = self.mig.get("status") or {}
        self.uid = str((status.get("source") or {}).get("uid") or "")
        if status.get("completed") or m.phase(self.mig) in m.TERMINAL:
            return  # completed: the worker adopts the QEMU once the label moves here
        await mg.fail(self.client, self.mig, "TargetAgentRestarted",
                      "the target host's agent restarted during the migration")

    async def _let_go(self) -> None:
        """The VM is this host's now: its worker adopts the QEMU (same run directory)."""
        if self.qemu is not None:
            with contextlib.suppress(QemuError):
                await self.qemu.execute("nbd-server-stop")

    async def _clean_up(self) -> None:
        """Failed before the guest ran here: remove the QEMU, disks, tap of this attempt."""
        if not self.uid or self.owned_here(self.uid) or \
                (self.mig.get("status") or {}).get("completed"):
            return
        qemu = self.qemu or QemuProcess(self.run_dir, self.uid)
        if qemu.running or await qemu.adopt():
            await qemu.stop()
        await qemu.close()
        self.qemu = None
        shutil.rmtree(self.run_dir, ignore_errors=True)
        shutil.rmtree(self.disks_dir, ignore_errors=True)
        await self.network.detach(self.uid, keep_lease=True)  # the VM still uses it elsewhere
        if self.prep is not None:
            await self.prep.release_claims(self.uid)
            for handle in self.made_volumes:  # half-filled copies of the VM's volumes
                await self.prep.store.remove(handle)
        log.info("migration %s: removed the target side", self.name)


def _match_sizes(disks: list[Disk], sizes: list[int]) -> None:
    """Give the fresh raw copies (a claim's disk image made here) the source's exact sizes,
    which a mirror needs; a qcow2 over the image, and read-only drives, already match."""
    for disk, size in zip(disks, sizes):
        if disk.format == "raw" and not disk.readonly and disk.path.stat().st_size != size:
            os.truncate(disk.path, size)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _write_state(run: Path, state: dict[str, Any]) -> None:
    run.mkdir(parents=True, exist_ok=True)
    tmp = run / "state.json.tmp"
    tmp.write_text(json.dumps(state))
    tmp.rename(run / "state.json")
