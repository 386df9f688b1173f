"""One VM as one QEMU process, controlled over QMP.

QEMU is started with ``-daemonize``: it detaches into its own session before the
agent sees it, so it belongs to nobody and outlives agent restarts and crashes.
Everything needed to find it again lives in the VM's run directory (pid file,
QMP socket, serial console socket and log); a new agent adopts a running VM by
checking the pid still names a QEMU of that VM and reconnecting to its QMP
socket.  Exits are noticed through a pidfd (QEMU is not our child), and the
QMP ``SHUTDOWN`` event tells a guest's own power-off from a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient
from qemu.qmp.error import QMPError

log = logging.getLogger(__name__)

QEMU_BINARY = "qemu-system-x86_64"


class QemuError(Exception):
    """QEMU refused to start or to do what it was asked."""


@dataclass(frozen=True)
class Disk:
    path: Path
    format: str = "qcow2"
    readonly: bool = False
    serial: str = ""


@dataclass(frozen=True)
class Nic:
    tap: str
    mac: str


@dataclass
class LaunchConfig:
    """What a VM is started with; kept in ``spec.json`` so an adopted VM is known."""

    name: str                  # namespace/name, shown by ps and in QEMU's -name
    uuid: str                  # SMBIOS/firmware UUID (status.biosUUID)
    cpus: int
    memory_mib: int
    accel: str                 # "kvm" | "tcg"
    kernel: Path | None = None
    initrd: Path | None = None
    cmdline: str = ""
    disks: list[Disk] = field(default_factory=list)
    nics: list[Nic] = field(default_factory=list)
    #: a qcow2 the guest never sees, for memory snapshots' vmstate (a kernel-only VM has
    #: no qcow2 of its own to hold it)
    vmstate: Path | None = None
    binary: str = QEMU_BINARY
    #: start paused, waiting for a live migration's state (``migrate-incoming`` says from where)
    incoming: bool = False


def command_line(cfg: LaunchConfig, run: Path) -> list[str]:
    """The QEMU argv for ``cfg`` with its sockets and logs in ``run``.

    Direct kernel boot uses ``microvm`` (no firmware, virtio-mmio devices: the
    guest reaches init in about a second even under TCG); a disk-only image
    needs a firmware that boots from disk, so it gets ``q35`` with PCI devices.
    """
    micro = cfg.kernel is not None
    accel = "kvm" if cfg.accel == "kvm" else "tcg"
    cpu = "host" if accel == "kvm" else "max"
    machine = f"microvm,accel={accel},acpi=on" if micro else f"q35,accel={accel}"
    blk, net = ("virtio-blk-device", "virtio-net-device") if micro else \
        ("virtio-blk-pci", "virtio-net-pci")
    argv = [cfg.binary, "-name", f"{cfg.name},debug-threads=on", "-uuid", cfg.uuid,
            "-machine", machine, "-cpu", cpu, "-smp", str(cfg.cpus), "-m", f"{cfg.memory_mib}M",
            "-nodefaults", "-no-user-config", "-nographic",
            "-chardev", f"socket,id=console,path={run / 'console.sock'},server=on,wait=off,"
                        f"logfile={run / 'console.log'},logappend=on",
            "-serial", "chardev:console",
            "-qmp", f"unix:{run / 'qmp.sock'},server=on,wait=off",
            "-pidfile", str(run / "qemu.pid"), "-daemonize"]
    if micro:
        argv += ["-kernel", str(cfg.kernel), "-append", cfg.cmdline]
        if cfg.initrd is not None:
            argv += ["-initrd", str(cfg.initrd)]
    for i, disk in enumerate(cfg.disks):
        opts = f"id=disk{i},file={disk.path},format={disk.format},if=none"
        if disk.readonly:
            opts += ",readonly=on"
        device = f"{blk},drive=disk{i}"
        if disk.serial:
            device += f",serial={disk.serial}"
        if i == 0 and not micro:
            device += ",bootindex=0"
        argv += ["-drive", opts, "-device", device]
    if cfg.vmstate is not None:  # a drive with no device: QEMU's, not the guest's
        argv += ["-drive", f"id=vmstate,file={cfg.vmstate},format=qcow2,if=none"]
    for i, nic in enumerate(cfg.nics):
        argv += ["-netdev", f"tap,id=net{i},ifname={nic.tap},script=no,downscript=no",
                 "-device", f"{net},netdev=net{i},mac={nic.mac}"]
    if cfg.incoming:
        argv += ["-incoming", "defer"]
    return argv


def pid_of(run: Path, uuid: str) -> int | None:
    """The pid of the VM's QEMU if it still runs (and is still that VM's QEMU)."""
    try:
        pid = int((run / "qemu.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if uuid.encode() in cmdline else None


class QemuProcess:
    """A running (or adoptable) QEMU: QMP commands, exit notification, forced stop."""

    def __init__(self, run: Path, uuid: str) -> None:
        self.run = run
        self.uuid = uuid
        self.pid: int | None = None
        self.qmp: QMPClient | None = None
        #: set once QEMU has exited; ``guest_shutdown`` says whether the guest asked for it
        self.exited = asyncio.Event()
        self.guest_shutdown = False
        self._pidfd: int | None = None
        self._events_task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.pid is not None and not self.exited.is_set()

    async def launch(self, cfg: LaunchConfig) -> None:
        self.run.mkdir(parents=True, exist_ok=True)
        for stale in ("qmp.sock", "console.sock", "qemu.pid"):
            with contextlib.suppress(FileNotFoundError):
                (self.run / stale).unlink()
        argv = command_line(cfg, self.run)
        log.info("starting %s: %s", cfg.name, shlex.join(argv))
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
        out, err = await proc.communicate()
        if proc.returncode != 0:
            detail = (err or out).decode(errors="replace").strip().splitlines()
            raise QemuError(detail[-1] if detail else f"exit code {proc.returncode}")
        if not await self.adopt():
            raise QemuError("QEMU started but exited at once (see the console log)")

    async def adopt(self) -> bool:
        """Attach to the QEMU of this run dir, if it runs; False if there is none."""
        pid = pid_of(self.run, self.uuid)
        if pid is None:
            return False
        try:
            self._pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        self.pid = pid
        self.exited.clear()
        self.guest_shutdown = False
        asyncio.get_running_loop().add_reader(self._pidfd, self._on_exit)
        qmp = QMPClient(f"vm-{self.uuid[:8]}")
        try:
            await asyncio.wait_for(qmp.connect(str(self.run / "qmp.sock")), 10)
        except (QMPError, OSError, asyncio.TimeoutError) as e:
            log.warning("QMP of %s (pid %d) does not answer: %s", self.run, pid, e)
            return True  # still ours: it can be killed, and its exit is watched
        self.qmp = qmp
        self._events_task = asyncio.get_running_loop().create_task(self._watch_events(qmp))
        return True

    def _on_exit(self) -> None:
        loop = asyncio.get_running_loop()
        if self._pidfd is not None:
            loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        self.exited.set()
        loop.create_task(self._disconnect())

    async def _disconnect(self) -> None:
        """Drop the QMP session (QEMU has gone, or we let go of it)."""
        qmp, self.qmp = self.qmp, None
        if qmp is not None:
            with contextlib.suppress(Exception):
                await qmp.disconnect()

    async def _watch_events(self, qmp: QMPClient) -> None:
        with contextlib.suppress(QMPError, asyncio.CancelledError, EOFError, OSError):
            async for event in qmp.events:
                if event["event"] == "SHUTDOWN":
                    data = event.get("data") or {}
                    self.guest_shutdown = bool(data.get("guest"))

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        if self.qmp is None:
            raise QemuError("no QMP connection to this VM")
        try:
            return await asyncio.wait_for(self.qmp.execute(command, arguments), 10)
        except (QMPError, OSError, asyncio.TimeoutError) as e:
            raise QemuError(f"QMP {command}: {e}") from None

    async def status(self) -> str:
        """QEMU's run state: running, paused, shutdown, ..."""
        return str((await self.execute("query-status")).get("status", "unknown"))

    async def powerdown(self) -> None:
        """ACPI power button: the guest shuts down by itself, if it listens."""
        await self.execute("system_powerdown")

    async def pause(self) -> None:
        await self.execute("stop")

    async def resume(self) -> None:
        await self.execute("cont")

    async def reset(self) -> None:
        await self.execute("system_reset")

    async def stop(self, timeout: float = 5.0) -> None:
        """Hard power-off: QMP quit, SIGKILL if QEMU does not go in time."""
        if not self.running:
            return
        with contextlib.suppress(QemuError):
            await self.execute("quit")
        if not await self.wait_exit(timeout) and self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            await self.wait_exit(timeout)

    async def wait_exit(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self.exited.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def close(self) -> None:
        """Let go of QEMU without stopping it (the agent is going away)."""
        if self._events_task is not None:
            self._events_task.cancel()
        await self._disconnect()
        if self._pidfd is not None:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
