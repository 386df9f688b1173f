"""One pod-VM: a virtiofsd sharing the pod's directory and a QEMU ``microvm`` booting the guest.

The guest boots the cloud kernel straight into the initramfs (no firmware, no disk); its only
devices are the agent's virtio-serial port (a unix socket QEMU serves, the host connects), a
virtio-fs share of ``share/`` (one virtiofsd per pod, ``sandbox=chroot``, so the guest sees
that directory and nothing else), and the serial console, written to ``console.log``.  Both
processes are named with ``atoll-podvm-<pod uid>`` on their command lines.

Under TCG the kernel needs the host's TSC rate (``accel.tcg_kernel_args``) or it stalls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from atoll.agent.podvm.channel import Channel
from atoll.agent.podvm.image import GuestImage
from atoll.agent.podvm.network import GuestNetwork, in_namespace, qemu_args
from atoll.agent.runtime.accel import tcg_kernel_args
from atoll.agent.runtime.mounts import mount_points_under
from atoll.agent.runtime.qemu import QEMU_BINARY

log = logging.getLogger(__name__)

VIRTIOFSD = "/usr/lib/qemu/virtiofsd"
MARKER = "atoll-podvm-"


class PodVMError(Exception):
    pass


@dataclass(frozen=True)
class VMConfig:
    uid: str
    cpus: int
    memory_mib: int
    accel: str            # "kvm" | "tcg"
    image: GuestImage
    #: the pod's network moved into the guest; None: loopback only (hostNetwork is refused
    #: at admission, so this is a pod without a namespace of its own, e.g. in tests)
    network: GuestNetwork | None = None
    boot_timeout: float = 120.0
    binary: str = QEMU_BINARY
    virtiofsd: str = VIRTIOFSD


def command_line(cfg: VMConfig, run: Path) -> list[str]:
    accel = "kvm" if cfg.accel == "kvm" else "tcg"
    cmdline = "console=ttyS0 reboot=t panic=-1 quiet loglevel=3"
    if accel == "tcg":
        cmdline += " " + tcg_kernel_args()
    if cfg.network is not None:
        cmdline += " " + cfg.network.kernel_arg()
    mem = f"{cfg.memory_mib}M"
    argv = [cfg.binary, "-name", f"{MARKER}{cfg.uid}",
            "-machine", f"microvm,accel={accel},acpi=on,memory-backend=mem",
            "-cpu", "host" if accel == "kvm" else "max", "-smp", str(cfg.cpus), "-m", mem,
            "-object", f"memory-backend-memfd,id=mem,size={mem},share=on",
            "-global", "virtio-mmio.force-legacy=false",
            "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
            "-chardev", f"file,id=console,path={run / 'console.log'}",
            "-serial", "chardev:console",
            "-device", "virtio-serial-device",
            "-chardev", "socket,id=agent,path=agent.sock,server=on,wait=off",
            "-device", "virtserialport,chardev=agent,name=atoll.agent",
            "-chardev", "socket,id=fs,path=virtiofs.sock",
            "-device", "vhost-user-fs-device,chardev=fs,tag=pod",
            "-kernel", str(cfg.image.kernel), "-initrd", str(cfg.image.initrd),
            "-append", cmdline]
    if cfg.network is None:
        return argv
    return in_namespace(cfg.network, argv + qemu_args(cfg.network))


class PodVM:
    """A pod-VM's processes and channel; ``share`` is where container root file systems go."""

    def __init__(self, cfg: VMConfig, run: Path) -> None:
        self.cfg = cfg
        self.run = run
        self.share = run / "share"
        self.channel: Channel | None = None
        self.guest: str = ""  # kernel release and boot id, from the agent's ready frame
        self.booted_in: float = 0.0
        self.exited = asyncio.Event()
        self._qemu: asyncio.subprocess.Process | None = None
        self._virtiofsd: asyncio.subprocess.Process | None = None
        self._watch: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return (self.channel is not None and not self.channel.closed.is_set()
                and not self.exited.is_set())

    async def start(self) -> None:
        """Boot the VM and wait for its agent; ``PodVMError`` (with the console) on failure."""
        t0 = time.monotonic()
        self.run.mkdir(parents=True, exist_ok=True)
        self.share.mkdir(exist_ok=True)
        await kill_stale(self.run)
        for stale in ("agent.sock", "virtiofs.sock", "console.log"):
            with contextlib.suppress(FileNotFoundError):
                (self.run / stale).unlink()
        try:
            # the listening socket is made here and handed over (--fd): with --socket-path,
            # virtiofsd locks a pid file named after the path, which must be relative here
            listener = _listen(self.run, "virtiofs.sock")
            try:
                self._virtiofsd = await _spawn(
                    self.run, "virtiofsd.log", self.cfg.virtiofsd, f"--fd={listener.fileno()}",
                    "-o", f"source={self.share}", "-o", "sandbox=chroot", "-o", "cache=auto",
                    "-o", "log_level=warn", pass_fds=(listener.fileno(),))
            finally:
                listener.close()
            (self.run / "virtiofsd.pid").write_text(str(self._virtiofsd.pid))
            self._qemu = await _spawn(self.run, "qemu.log", *command_line(self.cfg, self.run))
            (self.run / "qemu.pid").write_text(str(self._qemu.pid))
            self._watch = asyncio.create_task(self._watch_exit(), name=f"podvm-{self.cfg.uid}")
            await self._wait_for(self.run / "agent.sock", self._qemu, 10.0)
            reader, writer = await self._connect_agent(10.0)
            self.channel = Channel(reader, writer, name=f"pod-vm {self.cfg.uid[:8]}")
            done, _ = await asyncio.wait(
                [self.channel.ready, asyncio.ensure_future(self.exited.wait())],
                timeout=self.cfg.boot_timeout, return_when=asyncio.FIRST_COMPLETED)
            if not self.channel.ready.done():
                why = "QEMU exited" if self.exited.is_set() else \
                    f"no answer from the guest agent in {self.cfg.boot_timeout:.0f} s"
                raise PodVMError(f"the pod VM did not boot: {why}")
            self.guest = self.channel.ready.result()
        except asyncio.CancelledError:
            await self.kill()
            raise
        except Exception as e:
            message = str(e) if isinstance(e, PodVMError) else f"the pod VM did not start: {e}"
            await self.kill()
            raise PodVMError(f"{message}; console: {self.console_tail()}"
                             f"{self._stderr_tail()}") from None
        self.booted_in = time.monotonic() - t0
        log.info("pod-vm %s: booted in %.2f s (%s)", self.cfg.uid[:8], self.booted_in, self.guest)

    async def _connect_agent(self, timeout: float
                             ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """QEMU creates the socket's file before it listens on it: retry refusals a while."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return await _connect(self.run, "agent.sock")
            except ConnectionRefusedError:
                if self.exited.is_set() or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.02)

    async def _wait_for(self, path: Path, proc: asyncio.subprocess.Process,
                        timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not path.exists():  # a socket the child creates: nothing to watch but the path
            if proc.returncode is not None or time.monotonic() > deadline:
                raise PodVMError(f"{path.name} did not appear")
            await asyncio.sleep(0.01)

    async def _watch_exit(self) -> None:
        assert self._qemu is not None
        await self._qemu.wait()
        self.exited.set()
        if self.channel is not None:
            self.channel.close("the pod VM stopped")

    def console_tail(self, lines: int = 8) -> str:
        try:
            with open(self.run / "console.log", "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
                text = f.read().decode(errors="replace")
        except OSError:
            return "(no console output)"
        tail = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
        return " | ".join(tail) or "(no console output)"

    def _stderr_tail(self) -> str:
        out = ""
        for name in ("qemu.log", "virtiofsd.log"):
            try:
                text = (self.run / name).read_bytes()[-500:].decode(errors="replace").strip()
            except OSError:
                continue
            if text:
                out += f"; {name}: {text}"
        return out

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Ask the agent to power off; kill QEMU if it is still there after ``timeout``."""
        if self.channel is not None and not self.channel.closed.is_set():
            with contextlib.suppress(Exception):
                await self.channel.send(b"P", 0)
        if self._qemu is not None and self._qemu.returncode is None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.exited.wait(), timeout)
        await self.kill()

    async def kill(self) -> None:
        """Stop both processes at once and remove the VM's run directory (not ``share/``
        mounts: the runtime unmounts those first)."""
        for proc in (self._qemu, self._virtiofsd):
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGKILL)
                await proc.wait()
        if self._watch is not None:
            await asyncio.gather(self._watch, return_exceptions=True)
        if self.channel is not None:
            self.channel.close("the pod VM was stopped")
        self.exited.set()

    def remove_files(self) -> None:
        """Delete the run directory unless something is still mounted in it (a container's
        root or a volume: deleting through it would delete the volume's files)."""
        if mount_points_under(str(self.run)):
            log.error("pod-vm %s: container roots still mounted, %s kept", self.cfg.uid[:8],
                      self.run)
            return
        shutil.rmtree(self.run, ignore_errors=True)


async def kill_stale(run: Path) -> None:
    """A previous agent killed with -9 leaves this pod's QEMU and virtiofsd running (own
    session): they are not adopted yet, so they go before the pod's VM starts again.  A pid
    counts only while its process still works in ``run`` (pids are reused)."""
    for name in ("qemu.pid", "virtiofsd.pid"):
        try:
            pid = int((run / name).read_text())
            if os.readlink(f"/proc/{pid}/cwd") != str(run.resolve()):
                continue
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            continue
        log.warning("pod-vm: killed %s %d left by an earlier agent", name.split(".")[0], pid)
        deadline = time.monotonic() + 5
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # the kernel frees its tap and sockets as it exits


async def _spawn(run: Path, log_name: str, *argv: str,
                 pass_fds: tuple[int, ...] = ()) -> asyncio.subprocess.Process:
    """``argv`` in ``run`` and its own session (an agent's ^C does not reach it), stderr to
    ``log_name``.  Its sockets are named relative to ``run``: a unix socket's path is limited to
    107 bytes, and data directories can be deep."""
    with open(run / log_name, "ab") as err:
        return await asyncio.create_subprocess_exec(
            *argv, cwd=run, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=err, start_new_session=True, pass_fds=pass_fds)


def _listen(run: Path, name: str) -> socket.socket:
    """A listening unix socket at ``run/name`` (bound through a directory descriptor)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    fd = os.open(run, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        sock.bind(f"/proc/self/fd/{fd}/{name}")
        sock.listen(1)
    except OSError:
        sock.close()
        raise
    finally:
        os.close(fd)
    return sock


async def _connect(run: Path, name: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to ``run/name`` through a directory descriptor (the path may be too long)."""
    fd = os.open(run, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return await asyncio.open_unix_connection(f"/proc/self/fd/{fd}/{name}")
    finally:
        os.close(fd)
