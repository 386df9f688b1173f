"""In-memory stand-ins for what a pod worker talks to, so its state machine runs without a host.

``FakeRuntime`` implements ``atoll.agent.runtime.interface.PodRuntime``: a container "runs"
from ``run`` until the test ends it (``exit``) or the worker stops it; nothing is forked,
mounted or networked.  ``FakeImages``, ``FakeCNI``, ``FakeClient`` and ``FakeEvents`` are the
smallest image store, pod network, API client and event recorder the worker needs.
"""

from __future__ import annotations

import asyncio
import copy
import signal
import time
from collections.abc import Callable
from typing import Any

from atoll.agent.host.network import PodNetwork
from atoll.agent.images.store import Image
from atoll.agent.runtime.containers import ContainerError, ContainerMeta, Layered
from atoll.api import errors


class FakeRuntime:
    def __init__(self) -> None:
        self.metas: dict[str, ContainerMeta] = {}
        self._started: dict[str, dict[str, Any]] = {}
        self._exits: dict[str, dict[str, Any]] = {}
        self._futures: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.removed: list[str] = []
        #: the next ``run`` fails with this (reason, message), as a failed runc create would
        self.fail_next: tuple[str, str] | None = None
        self._pid = 1000

    # -- PodRuntime ------------------------------------------------------------------------
    def started(self, cid: str) -> dict[str, Any] | None:
        return self._started.get(cid)

    def exit_info(self, cid: str) -> dict[str, Any] | None:
        return self._exits.get(cid)

    async def run(self, meta: ContainerMeta, image: Layered, spec: dict[str, Any],
                  stdin: bool = False) -> int:
        if self.fail_next is not None:
            reason, message = self.fail_next
            self.fail_next = None
            raise ContainerError(reason, message)
        self._pid += 1
        self.metas[meta.id] = meta
        self._started[meta.id] = {"pid": self._pid, "startedAt": time.time()}
        self.wait(meta.id)
        return self._pid

    def wait(self, cid: str) -> asyncio.Future[dict[str, Any]]:
        fut = self._futures.get(cid)
        if fut is None:
            fut = self._futures[cid] = asyncio.get_running_loop().create_future()
            if cid in self._exits:
                fut.set_result(self._exits[cid])
        return fut

    def signal(self, cid: str, sig: int) -> bool:
        if cid not in self._started or cid in self._exits:
            return False
        if sig in (signal.SIGTERM, signal.SIGKILL):
            self._finish(cid, 128 + int(sig), signal=int(sig))
        return True

    async def stop(self, cid: str, grace: float) -> dict[str, Any]:
        self.signal(cid, signal.SIGTERM)
        return await self.wait(cid)

    async def remove(self, cid: str) -> None:
        self.removed.append(cid)
        self._futures.pop(cid, None)

    async def exec(self, cid: str, args: list[str], *, timeout: float) -> tuple[int, bytes]:
        return (0, b"") if cid in self._started and cid not in self._exits else (1, b"")

    # -- for tests -------------------------------------------------------------------------
    def running(self, name: str) -> ContainerMeta | None:
        """The running container called ``name`` (the newest attempt), if any."""
        for cid, meta in reversed(list(self.metas.items())):
            if meta.name == name and cid not in self._exits:
                return meta
        return None

    def exit(self, name: str, code: int) -> None:
        """The running container ``name`` exits with ``code``."""
        meta = self.running(name)
        assert meta is not None, f"no running container {name}"
        self._finish(meta.id, code)

    def _finish(self, cid: str, code: int, **extra: Any) -> None:
        record = {"exitCode": code, "startedAt": self._started[cid]["startedAt"],
                  "finishedAt": time.time(), **extra}
        self._exits[cid] = record
        fut = self.wait(cid)
        if not fut.done():
            fut.set_result(record)


class FakeImages:
    """An image store that has every image, with no layers."""

    def get(self, ref: str) -> Image | None:
        return Image(ref=ref, id=f"sha256:{len(ref):064x}", layers=[],
                     config={"Env": ["PATH=/bin"], "Cmd": ["sh"]})


class FakeClient:
    """Status patches and deletes are recorded; nothing else exists.

    ``echo`` gets each written status soon after, as the agent's pod informer delivers the
    pod it just patched (a worker relies on that wake-up, e.g. after a failed start)."""

    def __init__(self) -> None:
        self.statuses: list[dict[str, Any]] = []
        self.deleted: list[str] = []
        self.changed = asyncio.Event()
        self.echo: Callable[[dict[str, Any]], None] | None = None

    async def patch(self, path: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        assert path.endswith("/status"), path
        self.statuses.append(copy.deepcopy(body["status"]))
        self.changed.set()
        if self.echo is not None:
            asyncio.get_running_loop().call_soon(self.echo, copy.deepcopy(body["status"]))
        return {"status": body["status"]}

    async def get(self, path: str, **_: Any) -> dict[str, Any]:
        raise errors.NotFound(f"{path} not found")

    async def create(self, path: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        raise errors.Forbidden("the fake API creates nothing")

    async def delete(self, path: str, body: dict[str, Any] | None = None,
                     **_: Any) -> dict[str, Any]:
        self.deleted.append(path)
        return {}


class FakeEvents:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def record(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))


class FakeCNI:
    """Hands out one address per pod; no namespace or interface is made."""

    def __init__(self) -> None:
        self.pods: dict[str, PodNetwork] = {}

    async def setup(self, pod_uid: str, namespace: str, name: str,
                    port_mappings: list[dict[str, Any]]) -> PodNetwork:
        net = self.pods.setdefault(pod_uid, PodNetwork(f"fake-{pod_uid}",
                                                       f"10.88.0.{len(self.pods) + 2}"))
        return net

    async def teardown(self, pod_uid: str, port_mappings: list[dict[str, Any]]) -> None:
        self.pods.pop(pod_uid, None)
