"""Pod phase, conditions and container states from what the worker knows."""

from __future__ import annotations

from atoll.agent.pods.status import (
    ContainerView,
    PodView,
    container_status,
    phase,
    pod_status,
)
from atoll.api.qos import qos_class


def c(name: str = "c", **kw) -> ContainerView:
    return ContainerView(name=name, image="busybox", **kw)


def test_phases() -> None:
    assert phase(PodView("Always", containers=[c()])) == "Pending"
    assert phase(PodView("Always", containers=[c(running_since=1.0)])) == "Running"
    done = {"exitCode": 0}
    failed = {"exitCode": 2}
    assert phase(PodView("Never", containers=[c(terminated=done)])) == "Succeeded"
    assert phase(PodView("Never", containers=[c(terminated=done), c("d", terminated=failed)])) \
        == "Failed"
    assert phase(PodView("Always", containers=[c(terminated=failed, will_restart=True)])) \
        == "Running"
    # an init container that failed for good fails the pod; one still running keeps it pending
    assert phase(PodView("Never", init=[c("i", terminated=failed, init=True)],
                         containers=[c()])) == "Failed"
    assert phase(PodView("Always", init=[c("i", running_since=1.0, init=True)],
                         containers=[c()])) == "Pending"
    assert phase(PodView("Always", containers=[c(running_since=1.0)],
                         deadline_exceeded=True)) == "Failed"


def test_container_states() -> None:
    oom = container_status(c(terminated={"exitCode": 137, "signal": 9, "oomKilled": True,
                                         "startedAt": 1.0, "finishedAt": 2.0}))
    assert oom["state"]["terminated"]["reason"] == "OOMKilled"
    crash = container_status(c(terminated={"exitCode": 3, "finishedAt": 2.0}, will_restart=True,
                               waiting_reason="CrashLoopBackOff", restart_count=2))
    assert crash["state"] == {"waiting": {"reason": "CrashLoopBackOff"}}
    assert crash["lastState"]["terminated"]["reason"] == "Error"
    assert crash["restartCount"] == 2
    pull = container_status(c(waiting_reason="ErrImagePull", waiting_message="no image"))
    assert pull["state"]["waiting"] == {"reason": "ErrImagePull", "message": "no image"}


def test_conditions_keep_transition_times() -> None:
    view = PodView("Always", containers=[c(running_since=1.0, ready=True, started=True)],
                   network_ready=True)
    first = pod_status(view, {}, "BestEffort")
    ready = {x["type"]: x for x in first["conditions"]}["Ready"]
    assert ready["status"] == "True"
    again = pod_status(view, first, "BestEffort")
    assert {x["type"]: x for x in again["conditions"]}["Ready"]["lastTransitionTime"] == \
        ready["lastTransitionTime"]


def test_qos_classes() -> None:
    def pod(res: dict) -> dict:
        return {"spec": {"containers": [{"name": "c", "resources": res}]}}
    assert qos_class(pod({})) == "BestEffort"
    assert qos_class(pod({"requests": {"cpu": "1"}})) == "Burstable"
    assert qos_class(pod({"limits": {"cpu": "1", "memory": "1Gi"}})) == "Guaranteed"
    assert qos_class(pod({"requests": {"cpu": "1", "memory": "1Gi"},
                          "limits": {"cpu": "2", "memory": "1Gi"}})) == "Burstable"
