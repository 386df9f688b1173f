"""The agent runs only what it first admitted: a changed stored spec never changes what runs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from atoll.agent.pods.worker import (
    ADMITTED_FILE,
    PodWorker,
    WorkerSettings,
    with_admitted_spec,
)


def _pod() -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "n", "uid": "u-1", "labels": {"a": "1"}},
            "spec": {"nodeName": "n1", "restartPolicy": "Always", "activeDeadlineSeconds": 100,
                     "terminationGracePeriodSeconds": 30,
                     "initContainers": [{"name": "i", "image": "busybox", "command": ["true"]}],
                     "containers": [{"name": "c", "image": "busybox:1", "command": ["sleep", "9"],
                                     "securityContext": {"runAsUser": 1000}}],
                     "volumes": [{"name": "v", "emptyDir": {}}]}}


def _hostile(pod: dict[str, Any]) -> dict[str, Any]:
    """Everything a tenant would like to change after admission, plus the allowed fields."""
    new = copy.deepcopy(pod)
    spec = new["spec"]
    c = spec["containers"][0]
    c.update(image="busybox:2", command=["sh", "-c", "cat /host/etc/shadow"],
             securityContext={"privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}})
    spec["containers"].append({"name": "extra", "image": "busybox"})
    spec["initContainers"][0]["image"] = "busybox:3"
    spec.update(hostPID=True, hostNetwork=True, activeDeadlineSeconds=50,
                terminationGracePeriodSeconds=5, tolerations=[{"operator": "Exists"}])
    spec["volumes"].append({"name": "h", "hostPath": {"path": "/"}})
    new["metadata"]["labels"] = {"a": "2"}
    new["status"] = {"phase": "Running"}
    return new


def test_only_fields_upstream_lets_change_are_taken() -> None:
    pod = _pod()
    merged = with_admitted_spec(_hostile(pod), pod["spec"])
    spec = merged["spec"]
    assert spec["containers"] == [{"name": "c", "image": "busybox:2", "command": ["sleep", "9"],
                                   "securityContext": {"runAsUser": 1000}}]
    assert spec["initContainers"][0]["image"] == "busybox:3"
    assert "hostPID" not in spec and "hostNetwork" not in spec
    assert [v["name"] for v in spec["volumes"]] == ["v"]
    assert spec["activeDeadlineSeconds"] == 50 and spec["terminationGracePeriodSeconds"] == 5
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert merged["metadata"]["labels"] == {"a": "2"} and merged["status"]["phase"] == "Running"
    # a longer deadline is not taken (upstream only lets it shrink)
    longer = copy.deepcopy(pod)
    longer["spec"]["activeDeadlineSeconds"] = 1000
    assert with_admitted_spec(longer, pod["spec"])["spec"]["activeDeadlineSeconds"] == 100
    assert pod == _pod()  # the admitted snapshot itself is never modified


def test_the_snapshot_survives_an_agent_restart(tmp_path: Path) -> None:
    settings = WorkerSettings(node_name="n1", host_ip="10.0.0.1", pods_dir=tmp_path)

    def worker(pod: dict[str, Any]) -> PodWorker:
        return PodWorker(pod, client=None, runtime=None, images=None, cni=None,  # type: ignore
                         settings=settings)

    first = worker(_pod())
    first.keep_admitted()
    assert (tmp_path / "u-1" / ADMITTED_FILE).is_file()
    first.update(_hostile(_pod()))
    assert first.spec["containers"][0]["command"] == ["sleep", "9"]
    assert not first.spec.get("hostPID")
    # a new agent first sees the changed spec: it still runs the admitted one
    second = worker(_hostile(_pod()))
    assert second.spec["containers"][0]["command"] == ["sleep", "9"]
    assert second.spec["containers"][0]["image"] == "busybox:2"
    assert len(second.spec["containers"]) == 1 and not second.spec.get("hostNetwork")
    assert [v["name"] for v in second.spec["volumes"]] == ["v"]
