"""Pod status as kubelet reports it: phase, conditions, container statuses.

Pure functions over what the pod worker knows about each container, so the
rules (when a pod is Running, Succeeded or Failed; which reason a waiting or
terminated container shows) are in one place and testable without a host.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from atoll.api.timestamps import rfc3339


@dataclass
class ContainerView:
    """What the worker knows of one container (current attempt, and the one before)."""

    name: str
    image: str
    image_id: str = ""
    container_id: str = ""
    restart_count: int = 0
    running_since: float | None = None
    terminated: dict[str, Any] | None = None  # the current attempt's exit record
    last_terminated: dict[str, Any] | None = None
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""
    ready: bool = False
    started: bool = False
    will_restart: bool = False
    init: bool = False


def terminated_state(record: dict[str, Any], container_id: str) -> dict[str, Any]:
    code = int(record.get("exitCode", 0))
    if record.get("oomKilled"):
        reason = "OOMKilled"
    elif record.get("reason"):
        reason = str(record["reason"])
    else:
        reason = "Completed" if code == 0 else "Error"
    state: dict[str, Any] = {"exitCode": code, "reason": reason}
    if record.get("signal"):
        state["signal"] = int(record["signal"])
    if record.get("message"):
        state["message"] = str(record["message"])
    if record.get("startedAt"):
        state["startedAt"] = rfc3339(float(record["startedAt"]))
    state["finishedAt"] = rfc3339(float(record.get("finishedAt") or time.time()))
    if container_id:
        state["containerID"] = container_id
    return state


def container_status(view: ContainerView) -> dict[str, Any]:
    status: dict[str, Any] = {"name": view.name, "image": view.image,
                              "imageID": view.image_id, "restartCount": view.restart_count,
                              "ready": view.ready, "started": view.started}
    if view.container_id:
        status["containerID"] = view.container_id
    if view.running_since is not None and view.terminated is None:
        status["state"] = {"running": {"startedAt": rfc3339(view.running_since)}}
    elif view.terminated is not None and not view.will_restart:
        status["state"] = {"terminated": terminated_state(view.terminated, view.container_id)}
    else:
        waiting: dict[str, Any] = {"reason": view.waiting_reason}
        if view.waiting_message:
            waiting["message"] = view.waiting_message
        status["state"] = {"waiting": waiting}
    last = view.terminated if (view.terminated is not None and view.will_restart) \
        else view.last_terminated
    status["lastState"] = {"terminated": terminated_state(last, "")} if last else {}
    return status


@dataclass
class PodView:
    restart_policy: str
    init: list[ContainerView] = field(default_factory=list)
    containers: list[ContainerView] = field(default_factory=list)
    network_ready: bool = False
    pod_ip: str = ""
    host_ip: str = ""
    start_time: float | None = None
    message: str = ""
    reason: str = ""
    deadline_exceeded: bool = False


def phase(view: PodView) -> str:
    if view.deadline_exceeded:
        return "Failed"
    for c in view.init:
        if c.terminated is not None and c.terminated.get("exitCode", 0) != 0 \
                and not c.will_restart:
            return "Failed"
    if any(c.terminated is None or c.terminated.get("exitCode", 0) != 0 for c in view.init):
        return "Pending"
    containers = view.containers
    if not containers:
        return "Pending"
    running = sum(1 for c in containers if c.running_since is not None and c.terminated is None)
    restarting = sum(1 for c in containers if c.terminated is not None and c.will_restart)
    done = [c for c in containers if c.terminated is not None and not c.will_restart]
    if len(done) == len(containers):
        failed = any(int(c.terminated.get("exitCode", 0)) != 0 for c in done)  # type: ignore
        return "Failed" if failed else "Succeeded"
    if running or restarting or (done and len(done) + running + restarting == len(containers)):
        return "Running"
    return "Pending"


def conditions(view: PodView, previous: list[dict[str, Any]], pod_phase: str) -> list[dict[str, Any]]:
    initialized = all(c.terminated is not None and int(c.terminated.get("exitCode", 1)) == 0
                      for c in view.init)
    ready = pod_phase == "Running" and all(c.ready for c in view.containers)
    wanted = [
        ("PodReadyToStartContainers", view.network_ready, ""),
        ("Initialized", initialized, "" if initialized else "ContainersNotInitialized"),
        ("Ready", ready, "" if ready else ("PodCompleted" if pod_phase == "Succeeded"
                                           else "ContainersNotReady")),
        ("ContainersReady", ready, "" if ready else ("PodCompleted" if pod_phase == "Succeeded"
                                                     else "ContainersNotReady")),
        ("PodScheduled", True, ""),
    ]
    before = {c.get("type"): c for c in previous if isinstance(c, dict)}
    out = []
    now = rfc3339()
    for type_, ok, reason in wanted:
        status = "True" if ok else "False"
        old = before.get(type_)
        cond: dict[str, Any] = {"type": type_, "status": status,
                                "lastProbeTime": None,
                                "lastTransitionTime": old.get("lastTransitionTime", now)
                                if old and old.get("status") == status else now}
        if reason:
            cond["reason"] = reason
            names = [c.name for c in (view.init if type_ == "Initialized" else view.containers)
                     if not c.ready and not (type_ == "Initialized" and c.terminated)]
            if names and reason != "PodCompleted":
                kind = "containers with incomplete status" if type_ == "Initialized" else \
                    "containers with unready status"
                cond["message"] = f"{kind}: [{' '.join(names)}]"
        out.append(cond)
    return out


def pod_status(view: PodView, previous: dict[str, Any], qos: str) -> dict[str, Any]:
    pod_phase = phase(view)
    status: dict[str, Any] = {
        "phase": pod_phase,
        "conditions": conditions(view, previous.get("conditions") or [], pod_phase),
        "hostIP": view.host_ip,
        "hostIPs": [{"ip": view.host_ip}] if view.host_ip else [],
        "qosClass": qos,
        "containerStatuses": [container_status(c) for c in view.containers],
    }
    if view.init:
        status["initContainerStatuses"] = [container_status(c) for c in view.init]
    if view.pod_ip:
        status["podIP"] = view.pod_ip
        status["podIPs"] = [{"ip": view.pod_ip}]
    if view.start_time is not None:
        status["startTime"] = rfc3339(view.start_time)
    if view.reason:
        status["reason"] = view.reason
    if view.message:
        status["message"] = view.message
    return status

