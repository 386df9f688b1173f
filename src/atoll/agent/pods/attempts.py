"""One run of a container: what the pod worker, its probes and the streams share about it.

An ``Attempt`` is one container record (``ContainerMeta``) plus what is learnt while it runs:
the init pid once started, the exit record once it ended.  Kept apart from the worker so the
probes and the HTTPS server can use it without importing the worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from atoll.agent.runtime.containers import ContainerMeta


@dataclass
class Attempt:
    meta: ContainerMeta
    exit: dict[str, Any] | None = None
    pid: int | None = None


def should_restart(policy: str, exit_info: dict[str, Any]) -> bool:
    """Whether ``restartPolicy`` starts a container again after this exit."""
    if policy == "Always":
        return True
    if policy == "OnFailure":
        return int(exit_info.get("exitCode", 1)) != 0
    return False
