"""One ``PodRuntime`` for the pod workers that hands each container to its handler's runtime.

A pod's RuntimeClass handler is looked up by its worker before any container starts
(``PodWorker.runtime_handler``); ``run`` asks for it and never falls back: a container whose
pod has no known handler, or one without a runtime here, is refused, so a pod meant for a VM
never runs in a runc container.  The other calls name only a container id, so the runtime that
started it is remembered (and, after an agent restart, recognised by its record on disk).
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from atoll.agent.podvm.runtime import PodVMRuntime
from atoll.agent.runtime.containers import ContainerError, ContainerMeta, Layered
from atoll.agent.runtime.interface import PodRuntime


class HandlerRuntimes:
    def __init__(self, runtimes: dict[str, PodRuntime],
                 handler_of: Callable[[str], str | None]) -> None:
        """``runtimes`` by handler name ("" for pods that name no RuntimeClass);
        ``handler_of(pod uid)`` is the handler the pod's worker resolved (None: not yet)."""
        self.runtimes = runtimes
        self.handler_of = handler_of
        self._by_container: dict[str, PodRuntime] = {}

    @property
    def handlers(self) -> tuple[str, ...]:
        return tuple(self.runtimes)

    def _for(self, cid: str) -> PodRuntime:
        runtime = self._by_container.get(cid)
        if runtime is not None:
            return runtime
        for candidate in self.runtimes.values():
            if isinstance(candidate, PodVMRuntime) and candidate.dir(cid).is_dir():
                return candidate
        return self.runtimes[""]

    def started(self, cid: str) -> dict[str, Any] | None:
        return self._for(cid).started(cid)

    def exit_info(self, cid: str) -> dict[str, Any] | None:
        return self._for(cid).exit_info(cid)

    async def run(self, meta: ContainerMeta, image: Layered, spec: dict[str, Any],
                  stdin: bool = False) -> int:
        handler = self.handler_of(meta.pod_uid)
        runtime = self.runtimes.get(handler) if handler is not None else None
        if runtime is None:
            raise ContainerError("CreateContainerError",
                                 f'no runtime for RuntimeClass handler "{handler}" on this host')
        self._by_container[meta.id] = runtime
        return await runtime.run(meta, image, spec, stdin=stdin)

    def wait(self, cid: str) -> asyncio.Future[dict[str, Any]]:
        return self._for(cid).wait(cid)

    def signal(self, cid: str, sig: int) -> bool:
        return self._for(cid).signal(cid, sig)

    async def stop(self, cid: str, grace: float) -> dict[str, Any]:
        return await self._for(cid).stop(cid, grace)

    async def remove(self, cid: str) -> None:
        runtime = self._for(cid)
        self._by_container.pop(cid, None)
        await runtime.remove(cid)

    async def exec(self, cid: str, args: list[str], *, timeout: float) -> tuple[int, bytes]:
        return await self._for(cid).exec(cid, args, timeout=timeout)

    def pod_vm_of(self, cid: str) -> PodVMRuntime | None:
        """The pod-VM runtime running ``cid``, None for a runc container."""
        runtime = self._for(cid)
        return runtime if isinstance(runtime, PodVMRuntime) else None
