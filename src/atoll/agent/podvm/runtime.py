"""Pod-VMs as a ``PodRuntime``: the pod worker drives them exactly as it drives runc.

The first container a pod starts boots the pod's VM (sized from the pod's admitted spec, which
the worker keeps in ``admitted.json`` beside the container's logs); every container then runs
in that VM through the guest agent: its root file system is the image's layers overlaid on the
host, like a runc container's, but mounted under the VM's virtio-fs share; its output is written
to the same CRI log file the runc shim writes, so ``kubectl logs`` reads it unchanged.  The VM is
powered off when the pod's last container record is removed.

Each container's record is ``<root>/containers/<id>/`` (``meta.json``, ``spec.json``,
``started.json``, ``exit.json``, ``upper/``, ``work/``); each VM's is ``<root>/vms/<pod uid>/``.

The pod's network moves into the guest (``network``); the spec's bind mounts (volumes,
``/etc/hosts`` and the like) are bound into the share and mounted by the guest agent.
``open_port`` is port-forwarding's connection: the guest agent dials ``127.0.0.1:<port>``
inside the guest (whose network namespace the pod's containers share), so loopback-only
listeners are reached as kubelet reaches them for runc pods.
A pod-VM outlives its agent, as a runc container outlives it with its shim: ``detach`` (an
agent stopping) lets go of every VM, and a next agent's workers find the containers' records
(``started.json`` names each one's process in the guest) and ``wait`` on them, which takes the
pod's VM over (``vm.json``, see ``vm``): the guest agent, asked again, lists its containers'
states, so the running ones are watched on (their output, kept in the guest meanwhile, goes on
into the same log files) and those that exited meanwhile report their real exits.  A VM whose
QEMU died while no agent watched is a crashed sandbox: its containers end with an error (exit
code 255 and the console's last lines) and the worker restarts them per ``restartPolicy``
in a new VM, as kubelet does after a sandbox dies.  ``close`` (tests, teardown) powers them off.
Not yet: stdin and terminals, cgroups inside the guest.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import math
import os
import shutil
import signal
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Awaitable, Callable

from atoll.agent.podvm import image as guest_image
from atoll.agent.podvm import network as podnet
from atoll.agent.podvm.channel import Channel, ChannelClosed, OutputSink, Process
from atoll.agent.podvm.tcp import GuestWriter
from atoll.agent.podvm.vm import STATE, PodVM, PodVMError, VMConfig, stop_recorded
from atoll.agent.runtime import accel as accel_probe
from atoll.agent.runtime import mounts
from atoll.agent.runtime.containers import ContainerError, ContainerMeta, Layered
from atoll.agent.runtime.shim import LogWriter
from atoll.api import quantity
from atoll.api.resources.node_v1 import POD_VM_HANDLER

log = logging.getLogger(__name__)

HANDLER = POD_VM_HANDLER  # the built-in RuntimeClass atoll-vm names it
#: guest RAM beyond what the pod's containers ask for: kernel, initramfs, agent, page cache
MEMORY_FLOOR_MIB = 128
#: a pod that states no memory gets this much in total
DEFAULT_MEMORY_MIB = 256
START_TIMEOUT = 30.0
EXEC_OUTPUT_LIMIT = 1 << 20


class PodVMRuntime:
    def __init__(self, root: Path, *, cache_dir: Path | None = None,
                 accel: str | Callable[[Path], Awaitable[str]] | None = None,
                 vm_options: dict[str, Any] | None = None) -> None:
        """``accel``: "kvm"/"tcg", or a function deciding it for the guest kernel (the VM
        manager's once-per-host probe); None probes here (``runtime.accel.probe``)."""
        self.root = root
        self.cache_dir = cache_dir
        self.accel = accel
        self.vm_options = vm_options or {}
        (root / "containers").mkdir(parents=True, exist_ok=True)
        (root / "vms").mkdir(parents=True, exist_ok=True)
        self.vms: dict[str, PodVM] = {}
        self._image: guest_image.GuestImage | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._procs: dict[str, tuple[PodVM, Process]] = {}
        self._exits: dict[str, asyncio.Future[dict[str, Any]]] = {}
        #: pods whose VM an earlier agent started, being taken over
        self._takeovers: dict[str, asyncio.Task[None]] = {}
        self._detaching = False

    def dir(self, cid: str) -> Path:
        return self.root / "containers" / cid

    def list(self) -> list[ContainerMeta]:
        out = []
        for d in (self.root / "containers").iterdir():
            try:
                out.append(ContainerMeta.load(d / "meta.json"))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return out

    def started(self, cid: str) -> dict[str, Any] | None:
        return _read_json(self.dir(cid) / "started.json")

    def exit_info(self, cid: str) -> dict[str, Any] | None:
        return _read_json(self.dir(cid) / "exit.json")

    # -- the pod's VM ---------------------------------------------------------------------------
    async def vm_for(self, meta: ContainerMeta, netns: str = "") -> PodVM:
        """The pod's running VM, booted now if it has none (or its last one died)."""
        if meta.pod_uid not in self.vms and (self.root / "vms" / meta.pod_uid / STATE).exists():
            await self._taken_over(meta.pod_uid, start=True)  # one an earlier agent started
        lock = self._locks.setdefault(meta.pod_uid, asyncio.Lock())
        async with lock:
            vm = self.vms.get(meta.pod_uid)
            if vm is not None and vm.alive:
                return vm
            if vm is not None:
                await self._discard(meta.pod_uid, vm)
            if self._image is None:
                self._image = await asyncio.to_thread(guest_image.build, self.cache_dir)
            if isinstance(self.accel, str):
                accel = self.accel
            elif self.accel is not None:
                accel = await self.accel(self._image.kernel)
            else:
                accel = self.accel = await accel_probe.probe(self._image.kernel)
            cpus, memory = size(_admitted_spec(meta))
            network = await podnet.attach(netns) if netns else None
            cfg = VMConfig(uid=meta.pod_uid, cpus=cpus, memory_mib=memory, accel=accel,
                           image=self._image, network=network, **self.vm_options)
            vm = PodVM(cfg, self.root / "vms" / meta.pod_uid)
            try:
                await vm.start()
            except BaseException:
                vm.remove_files()
                raise
            self.vms[meta.pod_uid] = vm
            return vm

    async def _discard(self, uid: str, vm: PodVM) -> None:
        """A dead VM's processes and mounts, before a new VM replaces it."""
        await vm.kill()
        for entry in list(vm.share.iterdir()) if vm.share.exists() else []:
            if entry.name.endswith(".m"):
                unshare_mounts(entry)
            elif os.path.ismount(entry):
                mounts.unmount(str(entry))
        vm.remove_files()
        if self.vms.get(uid) is vm:
            del self.vms[uid]

    # -- taking over an earlier agent's VM -------------------------------------------------------
    def _take_over(self, uid: str) -> asyncio.Task[None]:
        task = self._takeovers.get(uid)
        if task is None:
            task = self._takeovers[uid] = asyncio.get_running_loop().create_task(
                self._take_over_guarded(uid), name=f"podvm-takeover-{uid[:8]}")
        return task

    async def _take_over_guarded(self, uid: str) -> None:
        try:
            await self._take_over_vm(uid)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # never leave a container's wait unanswered
            log.exception("pod-vm %s: taking it over failed", uid[:8])
            for meta in self.list():
                fut = self._exits.get(meta.id)
                if meta.pod_uid == uid and meta.id not in self._procs and fut is not None \
                        and not fut.done():
                    self._finish(meta.id, {"exitCode": 255, "reason": "Error",
                                           "message": f"taking the pod VM over failed: {e}",
                                           "finishedAt": time.time()})

    async def _taken_over(self, uid: str, start: bool = False) -> None:
        """Wait for a take-over of the pod's VM under way (or, with ``start``, begun now if
        none was yet); it never raises."""
        task = self._take_over(uid) if start else self._takeovers.get(uid)
        if task is not None:
            await asyncio.gather(asyncio.shield(task), return_exceptions=True)

    async def _take_over_vm(self, uid: str) -> None:
        """Re-attach the pod's VM and its containers that have no exit on record yet."""
        lock = self._locks.setdefault(uid, asyncio.Lock())
        async with lock:
            if uid in self.vms:
                return
            waiting = [m for m in self.list() if m.pod_uid == uid and m.id not in self._procs
                       and self.exit_info(m.id) is None and self.started(m.id)]
            vm = PodVM.recorded(self.root / "vms" / uid)
            if vm is None:
                for meta in waiting:
                    self._finish(meta.id, _lost())
                return
            try:
                await vm.reattach()
            except PodVMError as e:  # QEMU died (or the guest is lost) while no agent watched
                log.warning("pod-vm %s: cannot take it over: %s", uid[:8], e)
                for meta in waiting:
                    self._finish(meta.id, {
                        "exitCode": 255, "reason": "Error",
                        "startedAt": (self.started(meta.id) or {}).get("startedAt"),
                        "message": f"the pod VM stopped while no agent watched it: {e}"[:2000],
                        "finishedAt": time.time()})
                await self._discard(uid, vm)
                return
            assert vm.channel is not None
            self.vms[uid] = vm
            try:
                self._adopt_containers(vm, vm.channel, waiting)
            finally:
                vm.channel.resume()

    def _adopt_containers(self, vm: PodVM, channel: Channel,
                          waiting: list[ContainerMeta]) -> None:
        """Watch on the containers the guest still knows; the rest are lost, and what the
        guest runs that no record claims is killed."""
        in_guest = {p.id: p for p in channel.guest_procs}
        for meta in waiting:
            started = self.started(meta.id) or {}
            found = in_guest.pop(int(started.get("proc") or 0), None)
            if found is None:
                self._finish(meta.id, _lost())
                continue
            logs = LogWriter(meta.log_path)
            proc = channel.adopt(found, logs.feed)
            started_at = float(started.get("startedAt") or time.time())
            self._procs[meta.id] = (vm, proc)
            fut = self._exits.setdefault(meta.id, asyncio.get_running_loop().create_future())
            asyncio.create_task(self._record_exit(meta.id, proc, logs, started_at, fut, vm))
        for stranger in in_guest.values():
            if stranger.exit is None:
                _kill_process(channel, Process(stranger.id))
            channel.forget(stranger.id)

    def _finish(self, cid: str, result: dict[str, Any]) -> None:
        """Record a container's end found on taking over (not by watching it end)."""
        if self.dir(cid).exists():
            _write_json(self.dir(cid) / "exit.json", result)
        fut = self._exits.setdefault(cid, asyncio.get_running_loop().create_future())
        if not fut.done():
            fut.set_result(result)

    # -- lifecycle ------------------------------------------------------------------------------
    async def run(self, meta: ContainerMeta, image: Layered, spec: dict[str, Any],
                  stdin: bool = False) -> int:
        d = self.dir(meta.id)
        if d.exists():
            await self.remove(meta.id)
        for sub in ("upper", "work"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "meta.json").write_text(json.dumps(meta.__dict__))
        (d / "spec.json").write_text(json.dumps(spec))
        Path(meta.log_path).parent.mkdir(parents=True, exist_ok=True)
        try:
            vm = await self.vm_for(meta, netns_of(spec))
        except (PodVMError, guest_image.GuestImageError, podnet.NetworkError) as e:
            raise self._failed(meta.id, "CreateContainerError", str(e))
        rootfs = vm.share / meta.id
        rootfs.mkdir(exist_ok=True)
        lower = ":".join(str(p) for p in reversed(image.layers))
        try:
            mounts.mount("overlay", str(rootfs), "overlay",
                         f"lowerdir={lower},upperdir={d / 'upper'},workdir={d / 'work'}")
            shared = share_mounts(spec, vm.share / f"{meta.id}.m", f"/mnt/pod/{meta.id}.m")
        except (mounts.MountError, OSError) as e:
            raise self._failed(meta.id, "CreateContainerError", str(e))
        logs = LogWriter(meta.log_path)
        assert vm.channel is not None
        proc: Process | None = None
        try:
            proc = vm.channel.process(logs.feed)
            await vm.channel.send(b"R", proc.id, run_request(f"/mnt/pod/{meta.id}", spec, shared))
            pid = await asyncio.wait_for(asyncio.shield(proc.started), START_TIMEOUT)
        except (ChannelClosed, asyncio.TimeoutError, ValueError) as e:
            logs.close()
            message = (proc.failure if proc is not None else "") or str(e) or \
                "the guest agent did not start the container"
            raise self._failed(meta.id, "StartError", message)
        started_at = time.time()
        _write_json(d / "started.json", {"pid": pid, "startedAt": started_at, "proc": proc.id})
        self._procs[meta.id] = (vm, proc)
        fut = self._exits.setdefault(meta.id, asyncio.get_running_loop().create_future())
        asyncio.create_task(self._record_exit(meta.id, proc, logs, started_at, fut, vm))
        return pid

    def _failed(self, cid: str, reason: str, message: str) -> ContainerError:
        _write_json(self.dir(cid) / "exit.json", {"exitCode": 128, "reason": reason,
                                                  "message": message,
                                                  "finishedAt": time.time()})
        return ContainerError(reason, message)

    async def _record_exit(self, cid: str, proc: Process, logs: LogWriter, started_at: float,
                           fut: asyncio.Future[dict[str, Any]], vm: PodVM) -> None:
        result: dict[str, Any] = {"startedAt": started_at}
        try:
            code, sig = await proc.exited
            result["exitCode"] = code
            if sig:
                result["signal"] = sig
        except ChannelClosed as e:  # the VM died (or the guest broke the channel)
            if self._detaching:  # the agent lets go: the container runs on, no exit
                logs.file.close()
                self._procs.pop(cid, None)
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(vm.exited.wait(), 2.0)
            why = "the pod VM stopped" if vm.exited.is_set() else str(e)
            result.update(exitCode=255, reason="Error",
                          message=f"{why}; console: {vm.console_tail()}"[:2000])
        logs.close()
        result["finishedAt"] = time.time()
        if self.dir(cid).exists():
            _write_json(self.dir(cid) / "exit.json", result)
        self._procs.pop(cid, None)
        if not fut.done():
            fut.set_result(result)

    def wait(self, cid: str) -> asyncio.Future[dict[str, Any]]:
        fut = self._exits.get(cid)
        if fut is None:
            fut = self._exits[cid] = asyncio.get_running_loop().create_future()
            if cid in self._procs:
                return fut
            info, started = self.exit_info(cid), self.started(cid)
            meta = _read_json(self.dir(cid) / "meta.json") or {}
            if info is None and started and meta.get("pod_uid"):
                self._take_over(str(meta["pod_uid"]))  # started by an agent before this one
            else:
                fut.set_result(info or _lost())
        return fut

    def signal(self, cid: str, sig: int) -> bool:
        entry = self._procs.get(cid)
        if entry is None or entry[1].exited.done() or entry[0].channel is None:
            return False
        channel: Channel = entry[0].channel
        task = asyncio.create_task(channel.send(b"K", entry[1].id, str(int(sig)).encode()))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return True

    async def stop(self, cid: str, grace: float) -> dict[str, Any]:
        fut = self.wait(cid)
        uid = str((_read_json(self.dir(cid) / "meta.json") or {}).get("pod_uid") or "")
        await self._taken_over(uid)
        if fut.done():
            return fut.result()
        if grace > 0 and self.signal(cid, signal.SIGTERM):
            try:
                return await asyncio.wait_for(asyncio.shield(fut), grace)
            except asyncio.TimeoutError:
                pass
        self.signal(cid, signal.SIGKILL)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), 10)
        except asyncio.TimeoutError:  # the guest does not answer: the VM goes
            entry = self._procs.get(cid)
            if entry is not None:
                await entry[0].kill()
            return await fut

    async def remove(self, cid: str) -> None:
        d = self.dir(cid)
        meta = _read_json(d / "meta.json") or {}
        uid = str(meta.get("pod_uid") or "")
        await self._taken_over(uid)
        if uid:  # the share of this agent's VM, or of one an earlier agent started
            share = self.root / "vms" / uid / "share"
            unshare_mounts(share / f"{cid}.m")
            rootfs = share / cid
            if os.path.ismount(rootfs):
                mounts.unmount(str(rootfs))
            if rootfs.exists():
                os.rmdir(rootfs)
        await asyncio.to_thread(shutil.rmtree, d, True)
        self._exits.pop(cid, None)
        if uid and not any(m.pod_uid == uid for m in self.list()):
            await self.remove_vm(uid)

    async def remove_vm(self, uid: str, timeout: float = 10.0) -> None:
        """Power the pod's VM off (killed after ``timeout``) and delete its files."""
        lock = self._locks.setdefault(uid, asyncio.Lock())
        async with lock:
            vm = self.vms.get(uid)
            if vm is None:  # a VM an earlier agent started, not taken over, may still run
                run = self.root / "vms" / uid
                if run.exists():
                    await stop_recorded(run)
                    if not mounts.mount_points_under(str(run)):
                        await asyncio.to_thread(shutil.rmtree, run, True)
                return
            await vm.shutdown(timeout)
            await self._discard(uid, vm)
        self._locks.pop(uid, None)

    async def detach(self) -> None:
        """Let go of every VM, leaving them and their containers running: the agent is
        stopping, and the next one takes them over."""
        self._detaching = True
        for task in self._takeovers.values():
            task.cancel()
        for vm in list(self.vms.values()):
            vm.detach()
        await asyncio.sleep(0)  # the exit watchers see their channels close
        self.vms.clear()

    async def close(self) -> None:
        """Power off every VM and forget their containers (tests, tearing a host down)."""
        for task in self._takeovers.values():
            task.cancel()
        for uid in list(self.vms):
            await self.remove_vm(uid, timeout=2.0)
        for meta in self.list():
            await asyncio.to_thread(shutil.rmtree, self.dir(meta.id), True)

    async def open_port(self, pod_uid: str, port: int
                        ) -> tuple[asyncio.StreamReader, GuestWriter]:
        """A TCP connection to ``127.0.0.1:port`` in the pod's VM, dialled by the guest agent
        (OSError, as a refused connection, when it cannot be made)."""
        await self._taken_over(pod_uid)
        vm = self.vms.get(pod_uid)
        if vm is None or not vm.alive or vm.channel is None:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "the pod's VM is not running")
        return await vm.channel.open_tcp(port)

    async def exec(self, cid: str, args: list[str], *, timeout: float) -> tuple[int, bytes]:
        """Run ``args`` in the container (probes): exit code and output (capped)."""
        out = bytearray()

        def collect(_stream: str, data: bytes) -> None:
            if len(out) < EXEC_OUTPUT_LIMIT:
                out.extend(data[:EXEC_OUTPUT_LIMIT - len(out)])
        code, failure = await self.exec_stream(cid, args, collect, timeout=timeout)
        return (code, failure.encode()) if failure else (code, bytes(out))

    async def exec_stream(self, cid: str, args: list[str], sink: OutputSink, *,
                          timeout: float | None = None) -> tuple[int, str]:
        """Run ``args`` in the container, its output to ``sink`` as it comes: (exit code, why
        it could not run or "")."""
        meta = _read_json(self.dir(cid) / "meta.json") or {}
        await self._taken_over(str(meta.get("pod_uid") or ""))
        entry = self._procs.get(cid)
        if entry is None or entry[0].channel is None or not args:
            return -1, "container is not running"
        vm, target = entry
        channel = vm.channel
        assert channel is not None
        spec = _read_json(self.dir(cid) / "spec.json") or {}
        proc: Process | None = None
        try:
            proc = channel.process(sink)
            await channel.send(b"X", proc.id, exec_request(target.id, spec, args))
            code, _ = await asyncio.wait_for(asyncio.shield(proc.exited), timeout)
        except asyncio.CancelledError:  # the client went away: the command goes too
            if proc is not None:
                _kill_process(channel, proc)
            raise
        except asyncio.TimeoutError:
            assert proc is not None
            _kill_process(channel, proc)
            return -1, "timeout"
        except (ChannelClosed, ValueError) as e:
            return -1, (proc.failure if proc is not None else "") or str(e)
        if proc.failure:
            return 126, proc.failure
        return code, ""


def _kill_process(channel: Channel, proc: Process) -> None:
    """SIGKILL a guest process, in the background (callers may be being cancelled)."""
    task = asyncio.get_running_loop().create_task(channel.send(b"K", proc.id, b"9"))
    task.add_done_callback(lambda t: t.cancelled() or t.exception())


# -- requests and sizing ----------------------------------------------------------------------
def share_mounts(spec: dict[str, Any], host_dir: Path, guest_dir: str
                 ) -> list[tuple[str, str, bool]]:
    """The spec's bind mounts (volumes, /etc/hosts and friends) bound into the VM's share
    under ``host_dir``: (path in the guest, destination, read-only) for the guest agent.
    Kernel file systems (/proc, /dev, ...) are the agent's own; tmpfs mounts are skipped."""
    out = []
    host_dir.mkdir(exist_ok=True)
    binds = [m for m in spec.get("mounts") or [] if isinstance(m, dict)
             and m.get("type") == "bind" and m.get("source") and m.get("destination")]
    for i, m in enumerate(binds):
        source, target = Path(str(m["source"])), host_dir / str(i)
        if source.is_dir():
            target.mkdir(exist_ok=True)
        elif source.exists():
            target.touch()
        else:
            continue
        mounts.bind(str(source), str(target))
        out.append((f"{guest_dir}/{i}", str(m["destination"]),
                    "ro" in (m.get("options") or [])))
    return out


def unshare_mounts(host_dir: Path) -> None:
    """Undo ``share_mounts``; the directory is deleted only once nothing is mounted in it
    (deleting through a bind mount would delete the volume's files)."""
    if not host_dir.exists():
        return
    if mounts.unmount_all_under(str(host_dir)):
        log.error("pod-vm: %s still has mounts, kept", host_dir)
        return
    shutil.rmtree(host_dir, ignore_errors=True)


def run_request(root: str, spec: dict[str, Any],
                shared: list[tuple[str, str, bool]] | None = None) -> bytes:
    """The guest agent's 'R' request for an OCI spec's process, in ``root``."""
    process = spec.get("process") or {}
    fields = [f"r{root}", f"c{process.get('cwd') or '/'}"]
    for source, dest, readonly in shared or []:
        fields += [f"m{source}", f"d{dest}", "oro" if readonly else "orw"]
    fields += _user_fields(process)
    if spec.get("hostname"):
        fields.append(f"h{spec['hostname']}")
    fields += [f"e{e}" for e in process.get("env") or []]
    fields += [f"a{a}" for a in process.get("args") or []]
    return _encode(fields)


def exec_request(target: int, spec: dict[str, Any], args: list[str]) -> bytes:
    process = spec.get("process") or {}
    fields = [f"t{target}", f"c{process.get('cwd') or '/'}", *_user_fields(process)]
    fields += [f"e{e}" for e in process.get("env") or []]
    fields += [f"a{a}" for a in args]
    return _encode(fields)


def _user_fields(process: dict[str, Any]) -> list[str]:
    user = process.get("user") or {}
    return [f"u{int(user.get('uid') or 0)}", f"g{int(user.get('gid') or 0)}"]


def _encode(fields: list[str]) -> bytes:
    for f in fields:
        if "\0" in f:
            raise ValueError("arguments and environment may not contain NUL bytes")
    return b"".join(f.encode() + b"\0" for f in fields)


def size(pod_spec: dict[str, Any]) -> tuple[int, int]:
    """(vCPUs, MiB) for a pod: its containers' limits (requests where no limit) plus a floor."""
    cpu, memory = Decimal(0), Decimal(0)
    for c in pod_spec.get("containers") or []:
        res = c.get("resources") or {} if isinstance(c, dict) else {}
        for key, total in (("cpu", "cpu"), ("memory", "memory")):
            value = (res.get("limits") or {}).get(key) or (res.get("requests") or {}).get(key)
            try:
                amount = quantity.parse(value) if value is not None else Decimal(0)
            except ValueError:
                amount = Decimal(0)
            if total == "cpu":
                cpu += amount
            else:
                memory += amount
    cpus = max(1, min(os.cpu_count() or 1, math.ceil(cpu)))
    mib = math.ceil(memory / (1 << 20)) + MEMORY_FLOOR_MIB if memory else DEFAULT_MEMORY_MIB
    return cpus, max(mib, MEMORY_FLOOR_MIB)


def netns_of(spec: dict[str, Any]) -> str:
    """The pod's network namespace an OCI spec joins ("" for none)."""
    for ns in (spec.get("linux") or {}).get("namespaces") or []:
        if isinstance(ns, dict) and ns.get("type") == "network" and ns.get("path"):
            return str(ns["path"])
    return ""


def _admitted_spec(meta: ContainerMeta) -> dict[str, Any]:
    """The pod's spec as its worker admitted it: ``<pod dir>/admitted.json``, the pod dir
    being the one its logs are in (``<pod dir>/logs/<container>/<n>.log``)."""
    data = _read_json(Path(meta.log_path).parents[2] / "admitted.json") or {}
    spec = data.get("spec")
    return spec if isinstance(spec, dict) else {}


def _lost() -> dict[str, Any]:
    return {"exitCode": 137, "reason": "ContainerStatusUnknown",
            "message": "The container could not be located when the pod was terminated",
            "finishedAt": time.time()}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def unavailable() -> str:
    """Why this host cannot run pod-VMs ("" when it can): the handler is offered only then."""
    from atoll.agent.podvm.vm import VIRTIOFSD
    from atoll.agent.runtime.qemu import QEMU_BINARY
    for what, present in ((QEMU_BINARY, shutil.which(QEMU_BINARY)),
                          (VIRTIOFSD, os.access(VIRTIOFSD, os.X_OK)),
                          ("gcc", shutil.which("gcc")),
                          (str(guest_image.BUSYBOX), guest_image.BUSYBOX.exists())):
        if not present:
            return f"{what} is not installed"
    return ""
