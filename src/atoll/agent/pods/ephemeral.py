"""Ephemeral (debug) containers of a running pod: what the pod worker adds for them.

``kubectl debug`` appends them through ``pods/ephemeralcontainers``; they are immutable once
added, so the worker takes them from the stored spec whatever it admitted first
(``carry``).  Each is started once, when the pod's init containers are done, and never
restarted (upstream's rule).  It shares the pod's network and volumes like any container,
and the IPC namespace of its target (or of the pod's first running container); with
``targetContainerName`` it also joins that container's PID namespace, so ``ps`` shows the
target's processes.  Its status goes to ``status.ephemeralContainerStatuses``.
"""

from __future__ import annotations

import copy
from typing import Any

from atoll.agent.pods import report
from atoll.agent.pods import status as podstatus
from atoll.agent.pods.attempts import Attempt
from atoll.agent.pods.probes import ProbeRunner
from atoll.agent.runtime.interface import PodRuntime

KEY = "ephemeralContainers"


def carry(spec: dict[str, Any], stored: dict[str, Any]) -> None:
    """Add to ``spec`` (the admitted one) the ephemeral containers of the stored spec it
    does not have yet, in their order."""
    have = {c.get("name") for c in spec.get(KEY) or [] if isinstance(c, dict)}
    added = [copy.deepcopy(c) for c in stored.get(KEY) or []
             if isinstance(c, dict) and isinstance(c.get("name"), str) and c["name"] not in have]
    if added:
        spec[KEY] = list(spec.get(KEY) or []) + added


def is_ephemeral(spec: dict[str, Any], container: dict[str, Any]) -> bool:
    return any(c is container or (isinstance(c, dict) and c.get("name") == container.get("name"))
               for c in spec.get(KEY) or [])


def pending(spec: dict[str, Any], attempts: dict[str, list[Attempt]]) -> list[dict[str, Any]]:
    """Ephemeral containers never started (an attempt, even a failed one, is final)."""
    return [c for c in spec.get(KEY) or [] if isinstance(c, dict) and not attempts.get(c["name"])]


def namespaces(spec: dict[str, Any], container: dict[str, Any],
               attempts: dict[str, list[Attempt]]) -> dict[str, str]:
    """Namespaces (by type) an ephemeral container joins: its target's PID and IPC
    namespaces, or the IPC namespace of the first running container; {} for any other."""
    if not is_ephemeral(spec, container):
        return {}
    target = container.get("targetContainerName")
    names = [target] if target else [c.get("name") for c in spec.get("containers") or []]
    for name in names:
        current = (attempts.get(str(name)) or [None])[-1]
        if current is None or current.exit is not None or not current.pid:
            continue
        joined = {"ipc": f"/proc/{current.pid}/ns/ipc"}
        if target:
            joined["pid"] = f"/proc/{current.pid}/ns/pid"
        return joined
    return {}


def statuses(spec: dict[str, Any], attempts: dict[str, list[Attempt]],
             waiting: dict[str, tuple[str, str]], *, runtime: PodRuntime,
             probes: ProbeRunner) -> list[dict[str, Any]]:
    """``status.ephemeralContainerStatuses``: as containers' statuses, never ready, never
    restarted."""
    out = []
    for c in spec.get(KEY) or []:
        if not isinstance(c, dict):
            continue
        view = report.container_view(c, "Never", attempts.get(c["name"]) or [], waiting,
                                     runtime=runtime, probes=probes, terminal=False)
        view.ready = False
        out.append(podstatus.container_status(view))
    return out
