"""What a pod worker knows, as the ``PodView`` its status is computed from.

The worker's state (attempts per container, waiting reasons, probe results, the network)
is turned into ``status.PodView``/``ContainerView`` here; ``status`` holds the rules that
turn those into the pod's ``status``.
"""

from __future__ import annotations

import time
from typing import Any

from atoll.agent.pods import status as podstatus
from atoll.agent.pods.attempts import Attempt, should_restart
from atoll.agent.pods.probes import ProbeRunner
from atoll.agent.runtime.interface import PodRuntime


def pod_view(spec: dict[str, Any], attempts: dict[str, list[Attempt]],
             waiting: dict[str, tuple[str, str]], *, runtime: PodRuntime, probes: ProbeRunner,
             network_ip: str | None, host_ip: str, start_time: float | None,
             terminal: bool, deadline_exceeded: bool = False) -> podstatus.PodView:
    """``network_ip``: the pod network's address, None while it has none; ``terminal``: the
    last reported phase was Succeeded or Failed (nothing restarts any more)."""
    policy = spec.get("restartPolicy") or "Always"
    view = podstatus.PodView(restart_policy=policy, network_ready=network_ip is not None
                             or bool(spec.get("hostNetwork")),
                             pod_ip=network_ip if network_ip is not None else
                             (host_ip if spec.get("hostNetwork") else ""),
                             host_ip=host_ip, start_time=start_time,
                             deadline_exceeded=deadline_exceeded)
    if deadline_exceeded:
        view.reason = "DeadlineExceeded"
        view.message = "Pod was active on the node longer than the specified deadline"
    has_init = bool(spec.get("initContainers"))
    for c in spec.get("initContainers") or []:
        view.init.append(container_view(c, "OnFailure" if policy != "Never" else "Never",
                                        attempts.get(c["name"]) or [], waiting,
                                        runtime=runtime, probes=probes, terminal=terminal,
                                        init=True, has_init=has_init))
    for c in spec.get("containers") or []:
        view.containers.append(container_view(c, policy, attempts.get(c["name"]) or [], waiting,
                                              runtime=runtime, probes=probes,
                                              terminal=terminal, has_init=has_init))
    return view


def container_view(c: dict[str, Any], policy: str, attempts: list[Attempt],
                   waiting: dict[str, tuple[str, str]], *, runtime: PodRuntime,
                   probes: ProbeRunner, terminal: bool, init: bool = False,
                   has_init: bool = False) -> podstatus.ContainerView:
    name = c["name"]
    view = podstatus.ContainerView(name=name, image=str(c.get("image") or ""), init=init)
    if attempts:
        current = attempts[-1]
        view.container_id = f"atoll://{current.meta.id}"
        view.image_id = current.meta.image_id
        view.restart_count = current.meta.attempt
        if current.exit is None:
            started = runtime.started(current.meta.id)
            view.running_since = float(started["startedAt"]) if started else time.time()
            view.started = probes.started(name)
            view.ready = probes.ready(name) and not init
        else:
            view.terminated = current.exit
            view.will_restart = should_restart(policy, current.exit) and not terminal
            view.ready = False
        if len(attempts) > 1 and attempts[-2].exit is not None:
            view.last_terminated = attempts[-2].exit
    reason, message = waiting.get(name, ("ContainerCreating", ""))
    if view.terminated is not None and view.will_restart and name in waiting:
        view.waiting_reason, view.waiting_message = reason, message
    elif not attempts:
        view.waiting_reason, view.waiting_message = reason, message
        if init is False and has_init and reason == "ContainerCreating":
            view.waiting_reason = "PodInitializing"
    return view
