"""Containers on this host: bundles, overlay root filesystems, shims, signals.

Each container lives in ``<data-dir>/containers/<id>/``::

    meta.json        who it belongs to (pod uid, container name, attempt, image)
    bundle/          config.json and rootfs/ (an overlay of the image's layers + upper/)
    upper/ work/     the container's writable layer
    state/           written by its shim: shim.json, started.json, exit.json, runc.log

The directory is the truth: a restarted agent lists it to find its
containers, learns from ``exit.json`` whether one has finished, and waits on
the shim's pid (a pidfd) for those still running.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from atoll.agent.runtime import mounts

log = logging.getLogger(__name__)
SHIM = Path(__file__).with_name("shim.py")


class Layered(Protocol):
    """An image as the runtime sees it: its unpacked layers, bottom to top (``images.Image``)."""

    layers: list[Path]


class ContainerError(Exception):
    """A container could not be created or started; ``reason`` is for the pod status."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class ContainerMeta:
    id: str
    pod_uid: str
    name: str
    attempt: int
    image: str
    image_id: str
    log_path: str
    created: float

    @classmethod
    def load(cls, path: Path) -> "ContainerMeta":
        data = json.loads(path.read_text())
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def container_id(pod_uid: str, name: str, attempt: int) -> str:
    return hashlib.sha256(f"{pod_uid}/{name}/{attempt}".encode()).hexdigest()


class ContainerRuntime:
    def __init__(self, root: Path, *, runc: str = "runc", runc_root: Path | None = None) -> None:
        self.root = root
        self.runc = runc
        self.runc_root = runc_root or root / "runc"
        self.root.mkdir(parents=True, exist_ok=True)
        self.runc_root.mkdir(parents=True, exist_ok=True)
        self._exits: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._zygote_lock = asyncio.Lock()

    def dir(self, cid: str) -> Path:
        return self.root / cid

    # -- inventory ------------------------------------------------------------------------------
    def list(self) -> list[ContainerMeta]:
        out = []
        for d in self.root.iterdir():
            meta = d / "meta.json"
            if meta.is_file():
                try:
                    out.append(ContainerMeta.load(meta))
                except (OSError, ValueError, KeyError, TypeError):
                    log.warning("unreadable container record %s", d)
        return out

    def started(self, cid: str) -> dict[str, Any] | None:
        return _read_json(self.dir(cid) / "state" / "started.json")

    def exit_info(self, cid: str) -> dict[str, Any] | None:
        return _read_json(self.dir(cid) / "state" / "exit.json")

    def stdin_fifos(self, cid: str) -> tuple[Path, Path] | None:
        """(data, close) FIFOs of a container started with stdin, else None."""
        state = self.dir(cid) / "state"
        if (state / "stdin").exists() and (state / "stdin.close").exists():
            return state / "stdin", state / "stdin.close"
        return None

    def resize_fifo(self, cid: str) -> Path | None:
        """The FIFO that sets the window size of a container with a terminal, else None."""
        path = self.dir(cid) / "state" / "resize"
        return path if path.exists() else None

    def shim_pid(self, cid: str) -> int | None:
        data = _read_json(self.dir(cid) / "state" / "shim.json")
        return int(data["pid"]) if data and isinstance(data.get("pid"), int) else None

    # -- lifecycle ------------------------------------------------------------------------------
    async def run(self, meta: ContainerMeta, image: Layered, spec: dict[str, Any],
                  stdin: bool = False) -> int:
        """Create and start a container; returns its init pid once it runs.  With ``stdin``
        its stdin stays open for attach sessions (the shim's ``stdin`` FIFO)."""
        d = self.dir(meta.id)
        if d.exists():
            await self.remove(meta.id)
        for sub in ("bundle/rootfs", "upper", "work", "state"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        Path(meta.log_path).parent.mkdir(parents=True, exist_ok=True)
        (d / "meta.json").write_text(json.dumps(meta.__dict__))
        (d / "bundle" / "config.json").write_text(json.dumps(spec))
        lower = ":".join(str(p) for p in reversed(image.layers))
        try:
            mounts.mount("overlay", str(d / "bundle" / "rootfs"), "overlay",
                         f"lowerdir={lower},upperdir={d / 'upper'},workdir={d / 'work'}")
        except mounts.MountError as e:
            raise ContainerError("CreateContainerError", str(e)) from None
        request = {"runc": self.runc, "root": str(self.runc_root), "id": meta.id,
                   "bundle": str(d / "bundle"), "state": str(d / "state"), "log": meta.log_path,
                   "stdin": stdin}
        reader, writer = await self._zygote()
        try:
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            first = (await reader.readline()).decode().split()
            line = (await reader.readline()).decode().split()
        finally:
            writer.close()
        if len(first) != 2 or first[0] != "shim":
            raise ContainerError("CreateContainerError", "the container shim did not start")
        if len(line) != 2 or line[0] != "started":
            info = self.exit_info(meta.id) or {}
            raise ContainerError("StartError" if info.get("reason") == "StartError"
                                 else "CreateContainerError",
                                 str(info.get("message") or "the container did not start"))
        self.wait(meta.id)
        return int(line[1])

    async def _zygote(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to the shim zygote, started (again) when it is not running."""
        sock = self.root / "shim.sock"
        try:
            return await asyncio.open_unix_connection(str(sock))
        except (FileNotFoundError, ConnectionRefusedError):
            pass
        async with self._zygote_lock:
            try:
                return await asyncio.open_unix_connection(str(sock))
            except (FileNotFoundError, ConnectionRefusedError):
                pass
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-S", str(SHIM), "--zygote", str(sock),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
            (self.root / "zygote.pid").write_text(str(proc.pid))
            deadline = time.monotonic() + 10
            while True:
                try:
                    return await asyncio.open_unix_connection(str(sock))
                except (FileNotFoundError, ConnectionRefusedError):
                    if time.monotonic() > deadline or proc.returncode is not None:
                        raise ContainerError("CreateContainerError",
                                             "the container shim zygote did not start") from None
                    await asyncio.sleep(0.01)

    def wait(self, cid: str) -> "asyncio.Future[dict[str, Any]]":
        """A future for the container's exit record (adopting it if another agent started it)."""
        fut = self._exits.get(cid)
        if fut is not None:
            return fut
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._exits[cid] = fut
        info = self.exit_info(cid)
        pid = self.shim_pid(cid)
        if info is not None or pid is None:
            fut.set_result(info or _lost())
            return fut
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            fut.set_result(self.exit_info(cid) or _lost())
            return fut

        def on_exit() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            if not fut.done():
                fut.set_result(self.exit_info(cid) or _lost())
        loop.add_reader(pidfd, on_exit)
        return fut

    def signal(self, cid: str, sig: int) -> bool:
        """Signal the container's init process; False when it is already gone."""
        if self.exit_info(cid) is not None:
            return False
        started = self.started(cid)
        if not started:
            return False
        try:
            os.kill(int(started["pid"]), sig)
            return True
        except (ProcessLookupError, PermissionError, ValueError, KeyError):
            return False

    async def stop(self, cid: str, grace: float) -> dict[str, Any]:
        """SIGTERM, then SIGKILL once ``grace`` seconds have passed: returns the exit record."""
        fut = self.wait(cid)
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
        except asyncio.TimeoutError:
            pid = self.shim_pid(cid)
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return await fut

    async def remove(self, cid: str) -> None:
        """Unmount and delete what is left of a finished container."""
        d = self.dir(cid)
        rootfs = d / "bundle" / "rootfs"
        if os.path.ismount(rootfs):
            mounts.unmount(str(rootfs))
        if (self.runc_root / cid).exists():  # the shim normally deleted it already
            await _run(self.runc, "--root", str(self.runc_root), "delete", "--force", cid,
                       reason="", check=False)
        await asyncio.to_thread(shutil.rmtree, d, True)
        self._exits.pop(cid, None)

    async def exec(self, cid: str, args: list[str], *, timeout: float) -> tuple[int, bytes]:
        """Run a command in a running container (probes): exit code and output."""
        proc = await asyncio.create_subprocess_exec(
            self.runc, "--root", str(self.runc_root), "exec", cid, *args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            return -1, b"timeout"
        return proc.returncode or 0, out


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


async def _run(*cmd: str, reason: str, check: bool = True) -> None:
    proc = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if check and proc.returncode != 0:
        raise ContainerError(reason, f"{cmd[0]}: {err.decode(errors='replace').strip()}")
