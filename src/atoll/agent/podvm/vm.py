"""One pod-VM: a virtiofsd sharing the pod's directory and a QEMU ``microvm`` booting the guest.

The guest boots the cloud kernel straight into the initramfs (no firmware, no disk); its only
devices are the agent's virtio-serial port (a unix socket QEMU serves, the host connects), a
virtio-fs share of ``share/`` (one virtiofsd per pod, ``sandbox=chroot``, so the guest sees
that directory and nothing else), and the serial console, written to ``console.log``.  Both
processes are named with ``atoll-podvm-<pod uid>`` on their command lines.

Both run in their own session and are not waited on by the agent (a pidfd tells their exits),
so they outlive it: ``vm.json`` in the run directory (written atomically once both run) holds
what a next agent needs to take the VM over (``recorded`` + ``reattach``): their pids with
their start times (a pid alone may be reused), the sockets (relative to the run directory),
the sizing and the network moved into the guest.  Re-attaching reconnects the agent channel
with a hello, which the guest agent answers with its containers' states.

Under TCG the kernel needs the host's TSC rate (``accel.tcg_kernel_args``) or it stalls.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atoll.agent.podvm.channel import Channel
from atoll.agent.podvm.image import GuestImage
from atoll.agent.podvm.network import GuestNetwork, in_namespace, qemu_args
from atoll.agent.runtime.accel import tcg_kernel_args
from atoll.agent.runtime.mounts import mount_points_under
from atoll.agent.runtime.qemu import QEMU_BINARY

log = logging.getLogger(__name__)

VIRTIOFSD = "/usr/lib/qemu/virtiofsd"
MARKER = "atoll-podvm-"
STATE = "vm.json"
#: how long a re-attached guest agent has to answer the hello (it may be busy under TCG)
REATTACH_TIMEOUT = 30.0


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
        #: (pid, start time) of QEMU and of virtiofsd
        self.pids: dict[str, tuple[int, int]] = {}
        self._qemu: asyncio.subprocess.Process | None = None  # this agent's child, if it is
        self._pidfds: dict[str, int] = {}

    @property
    def alive(self) -> bool:
        return (self.channel is not None and not self.channel.closed.is_set()
                and not self.exited.is_set())

    async def start(self) -> None:
        """Boot the VM and wait for its agent; ``PodVMError`` (with the console) on failure."""
        t0 = time.monotonic()
        self.run.mkdir(parents=True, exist_ok=True)
        self.share.mkdir(exist_ok=True)
        await stop_recorded(self.run)  # an earlier VM of this pod that died half-way
        for stale in ("agent.sock", "virtiofs.sock", "console.log", STATE):
            with contextlib.suppress(FileNotFoundError):
                (self.run / stale).unlink()
        try:
            # the listening socket is made here and handed over (--fd): with --socket-path,
            # virtiofsd locks a pid file named after the path, which must be relative here
            listener = _listen(self.run, "virtiofs.sock")
            try:
                virtiofsd = await _spawn(
                    self.run, "virtiofsd.log", self.cfg.virtiofsd, f"--fd={listener.fileno()}",
                    "-o", f"source={self.share}", "-o", "sandbox=chroot", "-o", "cache=auto",
                    "-o", "log_level=warn", pass_fds=(listener.fileno(),))
            finally:
                listener.close()
            self._track("virtiofsd", virtiofsd.pid)
            self._qemu = await _spawn(self.run, "qemu.log", *command_line(self.cfg, self.run))
            self._track("qemu", self._qemu.pid)
            self._save_state()
            await self._wait_for(self.run / "agent.sock", 10.0)
            reader, writer = await self._connect_agent(10.0)
            self.channel = Channel(reader, writer, name=f"pod-vm {self.cfg.uid[:8]}",
                                   hello=True)
            await self._await_ready(self.cfg.boot_timeout, "did not boot")
            self.channel.resume()  # nothing of earlier to adopt
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

    @classmethod
    def recorded(cls, run: Path) -> "PodVM | None":
        """The VM an earlier agent left in ``run`` (running or not), from its ``vm.json``;
        None when there is no readable record."""
        data = _read_state(run)
        if data is None:
            return None
        try:
            net = data.get("network")
            cfg = VMConfig(uid=str(data["uid"]), cpus=int(data["cpus"]),
                           memory_mib=int(data["memory_mib"]), accel=str(data["accel"]),
                           image=GuestImage(**{k: (Path(v) if k != "kernel_version" else v)
                                               for k, v in data["image"].items()}),
                           network=GuestNetwork(**net) if isinstance(net, dict) else None)
            pids = {name: (int(pid), int(start)) for name, (pid, start)
                    in dict(data["pids"]).items()}
        except (KeyError, TypeError, ValueError):
            log.warning("pod-vm: unreadable %s in %s", STATE, run)
            return None
        vm = cls(cfg, run)
        vm.pids = pids
        vm.guest = str(data.get("guest") or "")
        return vm

    async def reattach(self, timeout: float = REATTACH_TIMEOUT) -> None:
        """Take over a recorded VM: both processes must still be the recorded ones and the
        guest agent must answer; else what is left is stopped and ``PodVMError`` says why.
        The channel starts paused: the caller adopts ``channel.guest_procs``, then resumes
        it (output the guest kept for us follows the answer)."""
        for name in ("qemu", "virtiofsd"):
            pid, start = self.pids.get(name, (0, 0))
            fd = _open_if_same(pid, start, self.cfg.uid)
            if fd is None:
                await self.kill()
                raise PodVMError(f"the pod VM's {name} is gone; console: {self.console_tail()}")
            self._pidfds[name] = fd
            if name == "qemu":
                asyncio.get_running_loop().add_reader(fd, self._on_exit)
        try:
            reader, writer = await self._connect_agent(5.0)
            self.channel = Channel(reader, writer, name=f"pod-vm {self.cfg.uid[:8]}",
                                   hello=True)
            await self._await_ready(timeout, "did not answer again")
        except Exception as e:
            await self.kill()
            why = str(e) if isinstance(e, PodVMError) else f"cannot reach the pod VM: {e}"
            raise PodVMError(f"{why}; console: {self.console_tail()}") from None
        log.info("pod-vm %s: taken over (QEMU pid %d, %d containers in the guest)",
                 self.cfg.uid[:8], self.pids["qemu"][0], len(self.channel.guest_procs))

    async def _await_ready(self, timeout: float, what: str) -> None:
        assert self.channel is not None
        stopped = asyncio.ensure_future(self.exited.wait())
        await asyncio.wait([self.channel.ready, stopped], timeout=timeout,
                           return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not self.channel.ready.done() or self.channel.ready.exception() is not None:
            why = "QEMU exited" if self.exited.is_set() else \
                self.channel.close_reason or f"no answer from the guest agent in {timeout:.0f} s"
            raise PodVMError(f"the pod VM {what}: {why}")
        self.guest = self.channel.ready.result()

    def _track(self, name: str, pid: int) -> None:
        """Watch a process this agent started (its exit, through a pidfd)."""
        self.pids[name] = (pid, _start_time(pid))
        (self.run / f"{name}.pid").write_text(str(pid))  # for teardown_host
        with contextlib.suppress(ProcessLookupError):
            self._pidfds[name] = os.pidfd_open(pid)
            if name == "qemu":
                asyncio.get_running_loop().add_reader(self._pidfds[name], self._on_exit)

    def _save_state(self) -> None:
        data: dict[str, Any] = {
            "uid": self.cfg.uid, "cpus": self.cfg.cpus, "memory_mib": self.cfg.memory_mib,
            "accel": self.cfg.accel, "pids": {k: list(v) for k, v in self.pids.items()},
            "image": {k: str(v) for k, v in dataclasses.asdict(self.cfg.image).items()},
            "network": dataclasses.asdict(self.cfg.network) if self.cfg.network else None,
            "sockets": {"agent": "agent.sock", "virtiofs": "virtiofs.sock"},
            "guest": self.guest}
        tmp = self.run / f"{STATE}.tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.run / STATE)

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

    async def _wait_for(self, path: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not path.exists():  # a socket the child creates: nothing to watch but the path
            if self.exited.is_set() or time.monotonic() > deadline:
                raise PodVMError(f"{path.name} did not appear")
            await asyncio.sleep(0.01)

    def _on_exit(self) -> None:
        fd = self._pidfds.pop("qemu", None)
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)
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
        if "qemu" in self._pidfds:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.exited.wait(), timeout)
        await self.kill()

    async def kill(self) -> None:
        """Stop both processes at once (each only while it is still the recorded one) and
        wait for them to go: the kernel frees their tap and sockets as they exit.  The run
        directory stays (``remove_files``; ``share/`` mounts are the runtime's)."""
        for name in ("qemu", "virtiofsd"):
            if name not in self._pidfds:
                fd = _open_if_same(*self.pids.get(name, (0, 0)), self.cfg.uid)
                if fd is not None:
                    self._pidfds[name] = fd
        fds = dict(self._pidfds)
        for fd in fds.values():
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
        await asyncio.gather(*(_exited(fd) for fd in fds.values()))
        if self._pidfds.get("qemu") is not None:
            self._on_exit()
        for fd in self._pidfds.values():
            os.close(fd)
        self._pidfds.clear()
        if self._qemu is not None:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                await self._qemu.wait()
        if self.channel is not None:
            self.channel.close("the pod VM was stopped")
        self.exited.set()

    def detach(self) -> None:
        """Let go of the VM without stopping it: the agent is going away, a next one takes
        the VM over from ``vm.json``."""
        fd = self._pidfds.get("qemu")
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
        for fd in self._pidfds.values():
            os.close(fd)
        self._pidfds.clear()
        if self.channel is not None:
            self.channel.close("the host agent let go of the pod VM")

    def remove_files(self) -> None:
        """Delete the run directory unless something is still mounted in it (a container's
        root or a volume: deleting through it would delete the volume's files)."""
        if mount_points_under(str(self.run)):
            log.error("pod-vm %s: container roots still mounted, %s kept", self.cfg.uid[:8],
                      self.run)
            return
        shutil.rmtree(self.run, ignore_errors=True)


async def stop_recorded(run: Path) -> None:
    """Kill the processes ``run/vm.json`` names, those still running as recorded (a VM no
    agent took over: its pod is gone, or it is being replaced)."""
    vm = PodVM.recorded(run)
    if vm is not None:
        await vm.kill()


def _start_time(pid: int) -> int:
    """A process's start time (clock ticks after boot): with the pid, it names one process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return -1


def _open_if_same(pid: int, start: int, uid: str) -> int | None:
    """A pidfd of ``pid`` if it is still the process started at ``start`` for pod ``uid``."""
    if pid <= 0:
        return None
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        cmdline = b""
    same = _start_time(pid) == start and uid.encode() in cmdline
    if not same:  # checked after opening: the pidfd cannot name a later process
        os.close(fd)
        return None
    return fd


async def _exited(pidfd: int, timeout: float = 10.0) -> None:
    """Wait (bounded) until the process behind ``pidfd`` has exited."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def ready() -> None:
        if not done.done():
            done.set_result(None)
    try:
        loop.add_reader(pidfd, ready)
    except (OSError, ValueError):
        return
    try:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(done, timeout)
    finally:
        loop.remove_reader(pidfd)


def _read_state(run: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((run / STATE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


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
