"""One VirtualMachine's life on its host: reconcile QEMU to ``spec.powerState``.

Level-triggered like the pod worker: every change of the object, every QEMU exit
and every timer wakes ``sync``, which compares what runs with what is asked
(power state, restart requests, deletion) and takes one step towards it, then
reports ``status``.  The VM's QEMU is its own process (see runtime/qemu.py): a
new worker adopts it from the run directory, so agent restarts stop nothing.

What a launch needs (class, image files, disks, seed) is prepared by ``launch``; what the
status says is computed by ``status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

from atoll.agent.runtime.qemu import Disk, LaunchConfig, QemuError, QemuProcess
from atoll.agent.vms import bootstrap as vmbootstrap
from atoll.agent.vms import status as vmstatus
from atoll.agent.vms.boot import BootWatch
from atoll.agent.vms.launch import (
    FetchBlob,
    LaunchPreparer,
    VMSetupError,
    launch_config,
)
from atoll.agent.vms.network import VMAddress, VMNetwork
from atoll.agent.vms.outgoing import OutgoingMigration
from atoll.api import errors
from atoll.api.migration import names as m
from atoll.api.vmoperator import names as n
from atoll.client.events import NORMAL, WARNING, EventRecorder
from atoll.client.rest import ApiClient
from atoll.client.status import patch_with_retry, without_finalizer

log = logging.getLogger(__name__)
POWER_BUTTON_REPEAT = 5.0  # seconds between presses of the ACPI power button


@dataclass(frozen=True)
class VMWorkerSettings:
    node_name: str
    data_dir: Path            # <agent data>/vms: disks
    run_dir: Path             # <run-dir>/vms: pid, sockets, console log, seed
    soft_timeout: float = 60.0  # TrySoft: seconds of waiting for the guest before Hard
    restart_backoff: float = 2.0
    restart_backoff_max: float = 60.0
    #: a guest silent on its serial console this long after start is reported as not booting
    silent_boot_timeout: float = 120.0
    qemu_img: str = "qemu-img"
    #: this host's address: where live migrations reach its QEMUs
    host_ip: str = "127.0.0.1"


#: the accelerator for a guest kernel (probed once per host)
ChooseAccel = Callable[[Path | None], Awaitable[str]]


class VMWorker:
    def __init__(self, vm: dict[str, Any], *, client: ApiClient, settings: VMWorkerSettings,
                 network: VMNetwork, fetch_blob: FetchBlob, accelerator: ChooseAccel,
                 events: EventRecorder) -> None:
        self.vm = vm
        self.uid: str = vm["metadata"]["uid"]
        self.client = client
        self.settings = settings
        self.network = network
        self.fetch_blob = fetch_blob
        self.accelerator = accelerator
        self.events = events
        self.run = settings.run_dir / self.uid
        self.disks = settings.data_dir / self.uid
        self.qemu = QemuProcess(self.run, self.uid)
        self.launch = LaunchPreparer(client, fetch_blob, disks_dir=self.disks, run_dir=self.run,
                                     volumes_dir=settings.data_dir.parent / "volumes",
                                     node=settings.node_name,
                                     qemu_img=settings.qemu_img)
        self.gone = False            # deleted from the API, or placed elsewhere
        self.address: VMAddress | None = None
        self.accel = ""
        self.setup_error: VMSetupError | None = None
        self.ready: bool | None = None
        self.crashes = 0
        self.not_before = 0.0
        self.stopping_since: float | None = None  # a soft power-off asked at this time
        self.pressed_at = 0.0
        self.expect_exit = False
        self.restarting = ""   # the restartMode of a soft restart under way
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None
        self._exit_watch: asyncio.Task[None] | None = None
        self.boot: BootWatch | None = None
        self.finished = asyncio.Event()
        #: set while the host is cut off from the API: a protected VM stays off, since HA
        #: may be starting it elsewhere
        self.fenced = False
        #: whether HA restarts this VM elsewhere (its or its class's annotation); None: unknown
        self.protected: bool | None = None
        #: a live migration away from this host under way, and the host it went to once the
        #: guest runs there (this paused copy must then never run again)
        self.outgoing: OutgoingMigration | None = None
        #: set once the worker has looked for (and adopted) a QEMU left by the previous agent:
        #: a migration this agent picks up mid-copy waits for its QMP connection
        self.adopted = asyncio.Event()
        self.migrated_to = ""
        #: the VM's snapshots and reverts (agent/vms/snapshots.py), taken inside ``sync``
        self.snapshots: Any = None

    # -- driving ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"vm-{self.uid[:8]}")
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    def update(self, vm: dict[str, Any] | None) -> None:
        if vm is None:
            self.gone = True
        else:
            if vm.get("metadata", {}).get("annotations") != \
                    self.vm.get("metadata", {}).get("annotations") or \
                    (vm.get("spec") or {}).get("className") != self.spec.get("className"):
                self.protected = None  # look again
            self.vm = vm
        self.wake()

    async def fence(self) -> bool:
        """The host lost the API: power a protected VM off (Hard) and keep it off until
        ``unfence``.  True if it was fenced."""
        if not (self.protected or n.ha_protected(self.vm, None)):
            return False
        self.fenced = True
        if self.qemu.running:
            await self._hard_stop()
            self.events.record(self.ref, WARNING, "Fenced",
                               "this host cannot reach the API server: powered off, as HA may "
                               "start the VM on another host")
        return True

    def unfence(self) -> None:
        """The API answers again: if the VM is still ours, it starts again."""
        if self.fenced:
            self.fenced = False
            self.wake()

    @property
    def ref(self) -> dict[str, Any]:
        """The VM as Events name it (list items may lack apiVersion and kind)."""
        return dict(self.vm, apiVersion=n.API_VERSION, kind="VirtualMachine")

    def migrate(self, mig: dict[str, Any]) -> None:
        """A migration of this VM away from here changed (the agent's informer saw it)."""
        if self.outgoing is not None and self.outgoing.mig["metadata"]["uid"] == \
                mig["metadata"]["uid"]:
            self.outgoing.update(mig)
            return
        if self.outgoing is not None and self.outgoing.active:
            return  # one at a time: the controller fails the other
        if m.phase(mig) in m.TERMINAL:
            return
        self.outgoing = OutgoingMigration(self.client, mig, lambda: self.qemu, self._identity,
                                          self._migrated, self.run / "migration-out",
                                          ready=self.adopted)
        self.outgoing.start()

    def _identity(self) -> dict[str, Any]:
        """What the target needs to start the same machine (migration.status.source)."""
        state = _read_json(self.run / "state.json")
        hardware = state.get("hardware") or {}
        out: dict[str, Any] = {"uid": self.uid, "accelerator": self.accel,
                               "bootResult": (self.boot.result if self.boot else None) or ""}
        if self.address is not None:
            out.update(ip=self.address.ip, prefixLength=self.address.prefixlen,
                       gateway=self.address.gateway, mac=self.address.mac,
                       defaultRoute=self.address.route)
        if hardware:
            out.update(cpus=int(hardware["cpus"]), memoryMiB=int(hardware["memoryMiB"]))
        return out

    def _migrated(self, target: str) -> None:
        self.migrated_to = target
        self._save_state(migratedTo=target)
        self.events.record(self.ref, NORMAL, "MigratedAway", f"now running on {target}")

    async def detach(self) -> None:
        """The agent stops: leave QEMU running for the next agent."""
        if self.outgoing is not None and self.outgoing.task is not None:
            self.outgoing.task.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.qemu.close()

    @property
    def key(self) -> str:
        return f"{self.vm['metadata'].get('namespace')}/{self.vm['metadata'].get('name')}"

    @property
    def spec(self) -> dict[str, Any]:
        return self.vm.get("spec") or {}

    async def _loop(self) -> None:
        try:
            try:
                await self._adopt()
            finally:
                self.adopted.set()
            while True:
                await self._wake.wait()
                self._wake.clear()
                try:
                    if await self.sync():
                        return
                except asyncio.CancelledError:
                    raise
                except errors.ApiError as e:
                    log.warning("vm %s: %s", self.key, e)
                    self._wake_later(2.0)
                except Exception:
                    log.exception("vm %s: sync failed", self.key)
                    self._wake_later(5.0)
        finally:
            if self._probe is not None:
                self._probe.cancel()
            if self._exit_watch is not None:
                self._exit_watch.cancel()
            if self.boot is not None:
                self.boot.stop()
            self.finished.set()

    def _wake_later(self, delay: float) -> None:
        asyncio.get_running_loop().call_later(max(0.0, delay), self.wake)

    async def _adopt(self) -> None:
        state = _read_json(self.run / "state.json")
        if await self.qemu.adopt():
            log.info("vm %s: adopted running QEMU pid %s", self.key, self.qemu.pid)
            self._watch_exit(known=str(state.get("bootResult") or ""))
        elif state.get("running") and not self.gone:
            # it ran under the previous agent and is gone now: it died while nobody watched
            self._save_state(running=False)
            self.events.record(self.ref, WARNING, "VirtualMachineCrashed",
                               "QEMU exited while the agent was away")
            self._back_off("QEMU exited while the agent was away")
        self.accel = str(state.get("accel") or "")
        self.migrated_to = str(state.get("migratedTo") or "")
        if state.get("address"):
            self.address = VMAddress(**state["address"])

    def _watch_exit(self, boot_offset: int = 0, known: str = "") -> None:
        """Wake on QEMU's exit, and follow this boot on the console from ``boot_offset``."""
        if self.boot is not None:
            self.boot.stop()
        self.boot = BootWatch(self.run / "console.log", self.settings.silent_boot_timeout)
        self.boot.start(boot_offset, known)
        boot = self.boot

        async def watch() -> None:
            exited = asyncio.ensure_future(self.qemu.exited.wait())
            booted = asyncio.ensure_future(boot.changed.wait())
            await asyncio.wait({exited, booted}, return_when=asyncio.FIRST_COMPLETED)
            self.wake()
            await exited
            booted.cancel()
            boot.stop()
            self.wake()
        self._exit_watch = asyncio.get_running_loop().create_task(watch())

    # -- reconcile -------------------------------------------------------------------------------
    async def sync(self) -> bool:
        """One step towards the desired state; True when this worker is done for good."""
        if self.gone or self.vm["metadata"].get("deletionTimestamp"):
            return await self._delete()
        if self.migrated_to:
            return False  # the guest runs on the target; this copy waits to be removed
        if self.outgoing is not None and self.outgoing.active:
            await self._report()  # power changes wait until the move is over
            return False
        if self.qemu.pid is not None and self.qemu.exited.is_set():
            self._on_exit()
        if self.fenced:
            return False
        if self.protected is None:
            await self._learn_protection()
        if self.snapshots is not None and await self.snapshots.step(self):
            await self._report()
            return False
        desired = self.spec.get("powerState") or n.POWERED_ON
        if desired == n.POWERED_ON:
            await self._power_on()
        elif desired == n.POWERED_OFF:
            await self._power_off(self.spec.get("powerOffMode") or n.TRY_SOFT)
        elif desired == n.SUSPENDED:
            await self._suspend()
        await self._report()
        return False

    def _on_exit(self) -> None:
        """QEMU is gone: was it asked to, did the guest power off, or did it crash?"""
        guest = self.qemu.guest_shutdown
        expected = self.expect_exit
        soft = self.stopping_since is not None
        self.qemu = QemuProcess(self.run, self.uid)
        self.expect_exit = False
        self.stopping_since = None
        self.restarting = ""
        self.ready = None
        self._save_state(running=False)
        self.wake()
        if soft and guest:
            self.events.record(self.ref, NORMAL, "PowerOff", "the guest powered off (Soft)")
            return
        if expected:
            return
        if guest:
            self.events.record(self.ref, NORMAL, "GuestPoweredOff", "the guest powered itself off")
            desired = self.spec.get("powerState") or n.POWERED_ON
            if desired == n.POWERED_ON:
                self._back_off("the guest powered off")
            return
        self.events.record(self.ref, WARNING, "VirtualMachineCrashed",
                           f"QEMU exited unexpectedly; see the console log ({self.run / 'console.log'})")
        self._back_off("QEMU exited unexpectedly")

    def _back_off(self, why: str) -> None:
        self.crashes += 1
        delay = min(self.settings.restart_backoff * 2 ** (self.crashes - 1),
                    self.settings.restart_backoff_max)
        self.not_before = time.monotonic() + delay
        log.warning("vm %s: %s; starting it again in %.0f s", self.key, why, delay)
        self._wake_later(delay)

    async def _power_on(self) -> None:
        if self.qemu.running and self.restarting:
            await self._power_off(self.restarting)  # soft restart: wait for the guest, or time out
            self.expect_exit = True
            return
        if self.qemu.running:
            with contextlib.suppress(QemuError):
                if await self.qemu.status() == "paused":
                    await self.qemu.resume()
                    self.events.record(self.ref, NORMAL, "PowerOn", "resumed from Suspended")
            await self._maybe_restart()
            self._ensure_probe()
            return
        wait = self.not_before - time.monotonic()
        if wait > 0:
            self._wake_later(wait)
            return
        try:
            cfg = await self._prepare()
            boot_offset = _size(self.run / "console.log")
            await self.qemu.launch(cfg)
        except VMSetupError as e:
            self.setup_error = e
            self.events.record(self.ref, WARNING, e.reason, e.message)
            self._back_off(e.message)
            return
        except QemuError as e:
            self.setup_error = VMSetupError(n.CREATED, "PowerOnFailed", str(e))
            self.events.record(self.ref, WARNING, "PowerOnFailed", str(e))
            self._back_off(str(e))
            return
        self.setup_error = None
        self._save_state(running=True, bootResult="")
        self._watch_exit(boot_offset)
        self._remember_restart_request()
        self.events.record(self.ref, NORMAL, "PowerOn",
                           f"QEMU started on {self.settings.node_name} ({self.accel.upper()})")
        asyncio.get_running_loop().call_later(self.settings.restart_backoff_max,
                                              self._forgive, self.qemu)
        self._ensure_probe()

    def _forgive(self, qemu: QemuProcess) -> None:
        """A VM that stayed up a while starts its crash back-off from scratch."""
        if qemu is self.qemu and qemu.running:
            self.crashes = 0

    async def _power_off(self, mode: str) -> None:
        if not self.qemu.running:
            self.stopping_since = None
            return
        paused = False
        with contextlib.suppress(QemuError):
            paused = await self.qemu.status() == "paused"
        unbooted = self.boot is not None and self.boot.result in ("failed", "silent")
        if self.migrated_to:
            await self._hard_stop()  # the paused copy of a guest that runs on elsewhere
            return
        if mode == n.HARD or paused or unbooted:
            # a suspended guest, or one that never booted, cannot hear the power button
            await self._hard_stop()
            self.events.record(self.ref, NORMAL, "PowerOff", "powered off (Hard)")
            return
        now = time.monotonic()
        if self.stopping_since is None or now - self.pressed_at >= POWER_BUTTON_REPEAT:
            # press the power button, and again every few seconds: a guest still booting
            # (no ACPI handler yet) misses the first press
            self.stopping_since = self.stopping_since or now
            self.pressed_at = now
            try:
                await self.qemu.powerdown()
            except QemuError as e:
                log.warning("vm %s: soft power-off: %s", self.key, e)
        left = self.stopping_since + self.settings.soft_timeout - now
        if mode == n.SOFT or left > POWER_BUTTON_REPEAT:
            self._wake_later(POWER_BUTTON_REPEAT)  # its exit wakes us sooner
            return
        if left > 0:
            self._wake_later(left)
            return
        await self._hard_stop()
        self.events.record(self.ref, NORMAL, "PowerOff",
                           f"the guest did not power off within {self.settings.soft_timeout:.0f} s:"
                           " powered off (Hard)")

    async def _hard_stop(self) -> None:
        self.expect_exit = True
        self.stopping_since = None
        await self.qemu.stop()
        if self.qemu.exited.is_set():
            self._on_exit()

    async def _suspend(self) -> None:
        """Suspended: the vCPUs stop and memory stays; PoweredOn resumes where it was."""
        if not self.qemu.running:
            return
        with contextlib.suppress(QemuError):
            if await self.qemu.status() != "paused":
                await self.qemu.pause()
                self.events.record(self.ref, NORMAL, "Suspend", "suspended")

    async def _maybe_restart(self) -> None:
        """``spec.nextRestartTime`` moved on: restart once per value."""
        wanted = str(self.spec.get("nextRestartTime") or "")
        done = _read_json(self.run / "state.json").get("restartedFor", "")
        if not wanted or wanted == done:
            return
        mode = self.spec.get("restartMode") or n.TRY_SOFT
        if mode == n.HARD:
            with contextlib.suppress(QemuError):
                await self.qemu.reset()
            self._remember_restart_request()
            self.events.record(self.ref, NORMAL, "Restart", "restarted (Hard)")
            return
        # Soft and TrySoft: shut the guest down; once QEMU is gone, the next sync powers it on
        self._remember_restart_request()
        self.restarting = mode
        self.events.record(self.ref, NORMAL, "Restart", f"restarting ({mode})")
        await self._power_off(mode)
        self.expect_exit = True

    def _remember_restart_request(self) -> None:
        self._save_state(restartedFor=str(self.spec.get("nextRestartTime") or ""))

    # -- start-up --------------------------------------------------------------------------------
    async def _prepare(self) -> LaunchConfig:
        """Everything QEMU needs: class, image files, disks, seed, NIC, accelerator."""
        res = await self.launch.resources(self.vm)
        self.address = await self.launch.attach(self.network, self.vm)
        host = vmbootstrap.hostname(self.vm)
        seed = await self.launch.seed(self.vm, host, self.address)
        res.disks.append(Disk(seed, format="raw", readonly=True, serial="cidata"))
        self.accel = await self.accelerator(res.kernel)
        self._save_state(accel=self.accel, address=self.address.__dict__,
                         hardware={"cpus": res.cpus, "memoryMiB": res.memory_mib})
        klass = self.spec.get("className", "")
        log.info("vm %s: class %s (%d vCPU, %d MiB), %s", self.key, klass, res.cpus,
                 res.memory_mib, self.accel)
        cfg = launch_config(self.vm, self.uid, res, accelerator=self.accel,
                            address=self.address, host=host)
        cfg.vmstate = await self.launch.vmstate_disk()
        return cfg

    async def _learn_protection(self) -> None:
        """Remember (while the API answers) whether HA protects this VM, for fencing."""
        ns, name = self.vm["metadata"].get("namespace", ""), self.spec.get("className", "")
        klass = None
        if name:
            with contextlib.suppress(errors.NotFound):
                klass = await self.client.get(n.class_path(ns, name))
        self.protected = n.ha_protected(self.vm, klass)

    # -- readiness -------------------------------------------------------------------------------
    def _ensure_probe(self) -> None:
        probe = self.spec.get("readinessProbe") or {}
        if not (probe.get("tcpSocket") or {}).get("port") or self._probe is not None:
            return
        self._probe = asyncio.get_running_loop().create_task(self._probe_loop())

    async def _probe_loop(self) -> None:
        try:
            while True:
                probe = self.spec.get("readinessProbe") or {}
                port = (probe.get("tcpSocket") or {}).get("port")
                period = float(probe.get("periodSeconds") or 10)
                timeout = float(probe.get("timeoutSeconds") or 10)
                ok = False
                if port and self.address is not None and self.qemu.running:
                    try:
                        _, w = await asyncio.wait_for(
                            asyncio.open_connection(self.address.ip, int(port)), timeout)
                        w.close()
                        ok = True
                    except (OSError, asyncio.TimeoutError, ValueError):
                        ok = False
                if ok != self.ready:
                    self.ready = ok
                    self.wake()
                await asyncio.sleep(period if ok else min(period, 1.0))
        finally:
            self._probe = None

    # -- claims that grow -----------------------------------------------------------------------
    async def resize_disk(self, path: Path, size: int) -> None:
        """A claim's raw file under one of this VM's drives grew to ``size`` bytes: tell QEMU
        (``block_resize``), so the guest's virtio disk reports the new capacity at once."""
        if not self.qemu.running:
            return  # the next start opens the file at its new size
        try:
            drives = await self.qemu.execute("query-block")
            for drive in drives or []:
                inserted = drive.get("inserted") or {}
                if os.path.realpath(str(inserted.get("file") or "")) != os.path.realpath(path):
                    continue
                await self.qemu.execute("block_resize", {"device": drive["device"],
                                                         "size": size})
                self.events.record(self.ref, NORMAL, "DiskResized",
                                   f"disk {drive['device']} ({path.parent.name}) grown to "
                                   f"{size} bytes")
        except QemuError as e:
            log.warning("vm %s: cannot grow disk %s: %s", self.key, path, e)
            self.events.record(self.ref, WARNING, "DiskResizeFailed",
                               f"{path.parent.name}: {e} (the guest sees the new size after "
                               "its next power-on)")

    # -- status ----------------------------------------------------------------------------------
    async def _report(self) -> None:
        running = self.qemu.running
        paused = False
        if running:
            with contextlib.suppress(QemuError):
                paused = await self.qemu.status() == "paused"
        status, updates, remove = vmstatus.report(self.spec, vmstatus.Observed(
            node_name=self.settings.node_name, uid=self.uid, accel=self.accel, running=running,
            paused=paused, address=self.address, boot=self.boot, ready=self.ready,
            setup_error=self.setup_error, created=(self.run / "state.json").exists(),
            silent_boot_timeout=self.settings.silent_boot_timeout))
        path = n.vm_path(self.vm["metadata"]["namespace"], self.vm["metadata"]["name"])
        try:
            self.vm = await patch_with_retry(self.client, path, self.vm,
                                             vmstatus.change(status, updates, remove),
                                             subresource="status")
        except errors.NotFound:
            self.gone = True
            self.wake()

    # -- deletion --------------------------------------------------------------------------------
    async def _delete(self) -> bool:
        """Stop the VM (TrySoft, then Hard), remove its disks and NIC, then our finalizer.

        A VM that is no longer ours (``gone``: placed elsewhere, or deleted while we were away)
        is stopped Hard at once, so one VM never runs on two hosts."""
        if self.qemu.running:
            await self._power_off(n.HARD if self.gone else n.TRY_SOFT)
            if self.qemu.running:
                return False  # woken when it exits or the soft timeout passes
        if self._probe is not None:
            self._probe.cancel()
        # a VM that moved on keeps this host's address, if it is one: nobody else may get it
        await self.network.detach(self.uid, keep_lease=bool(self.migrated_to))
        shutil.rmtree(self.disks, ignore_errors=True)
        await self.launch.release_claims(self.uid, remove=bool(self.migrated_to))
        shutil.rmtree(self.run, ignore_errors=True)
        if not self.gone:
            path = n.vm_path(self.vm["metadata"]["namespace"], self.vm["metadata"]["name"])
            with contextlib.suppress(errors.NotFound):
                await patch_with_retry(self.client, path, self.vm, without_finalizer(n.FINALIZER))
            self.events.record(self.ref, NORMAL, "Deleted",
                               f"stopped and removed from {self.settings.node_name}")
        return True

    def _save_state(self, **fields: Any) -> None:
        state = _read_json(self.run / "state.json")
        state.update(fields)
        self.run.mkdir(parents=True, exist_ok=True)
        tmp = self.run / "state.json.tmp"
        tmp.write_text(json.dumps(state))
        tmp.rename(self.run / "state.json")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}

