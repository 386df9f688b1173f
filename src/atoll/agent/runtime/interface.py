"""The container runtime as a pod worker and its probes use it.

``ContainerRuntime`` (runc through shims) is the real one; a worker is given any object with
these methods, so its state machine runs in tests against an in-memory fake.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from atoll.agent.runtime.containers import ContainerMeta, Layered


class PodRuntime(Protocol):
    def started(self, cid: str) -> dict[str, Any] | None:
        """The container's ``started.json`` (pid, startedAt), None before it started."""

    def exit_info(self, cid: str) -> dict[str, Any] | None:
        """The container's exit record, None while it runs (or never ran)."""

    async def run(self, meta: ContainerMeta, image: Layered, spec: dict[str, Any],
                  stdin: bool = False) -> int:
        """Create and start a container; its init pid.  Raises ``ContainerError``."""

    def wait(self, cid: str) -> asyncio.Future[dict[str, Any]]:
        """A future for the container's exit record."""

    def signal(self, cid: str, sig: int) -> bool:
        """Signal the container's init process; False when it is gone."""

    async def stop(self, cid: str, grace: float) -> dict[str, Any]:
        """SIGTERM, SIGKILL after ``grace`` seconds; the exit record."""

    async def remove(self, cid: str) -> None:
        """Delete what is left of a finished container."""

    async def exec(self, cid: str, args: list[str], *, timeout: float) -> tuple[int, bytes]:
        """Run a command in a running container (probes): exit code and output."""
