"""A pod whose RuntimeClass names a handler this host has no runtime for fails its sandbox
with the kubelet's and the CRI's words (never runs under another runtime), and the Node
reports the handlers it has in ``status.runtimeHandlers``."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from atoll.agent.host.node import RUNC_HANDLERS, runtime_handlers
from atoll.agent.pods.worker import PodWorker, WorkerSettings
from atoll.api import errors
from tests.agent.fake_runtime import FakeClient, FakeCNI, FakeEvents, FakeImages, FakeRuntime

CLASSES = {"atoll-vm": "atoll-vm", "plain": "runc"}


class Client(FakeClient):
    """Serves the RuntimeClasses above."""

    async def get(self, path: str, **_: Any) -> dict[str, Any]:
        name = path.rsplit("/", 1)[-1]
        if path.startswith("/apis/node.k8s.io/v1/runtimeclasses/") and name in CLASSES:
            return {"metadata": {"name": name}, "handler": CLASSES[name]}
        raise errors.NotFound(f"{path} not found")


@pytest.fixture
def parts(tmp_path: Path) -> dict[str, Any]:
    return {"client": Client(), "runtime": FakeRuntime(), "cni": FakeCNI(),
            "events": FakeEvents(),
            "settings": WorkerSettings(node_name="node-1", host_ip="192.0.2.10",
                                       pods_dir=tmp_path / "pods", backoff_base=5.0)}


def pod(runtime_class: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"nodeName": "node-1", "restartPolicy": "Always",
                            "containers": [{"name": "c", "image": "busybox"}]}
    if runtime_class is not None:
        spec["runtimeClassName"] = runtime_class
    return {"metadata": {"name": "p", "namespace": "n", "uid": "uid-1"}, "spec": spec,
            "status": {"phase": "Pending"}}


async def first_status(parts: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    worker = PodWorker(p, client=parts["client"], runtime=parts["runtime"], images=FakeImages(),
                       cni=parts["cni"], settings=parts["settings"], events=parts["events"])
    worker.start()
    client = parts["client"]
    try:
        while not client.statuses:
            client.changed.clear()
            await asyncio.wait_for(client.changed.wait(), 5)
        return client.statuses[-1]
    finally:
        worker.update(None)
        await asyncio.wait_for(worker.finished.wait(), 5)


@pytest.mark.parametrize("klass, why", [
    ("atoll-vm", 'rpc error: code = Unknown desc = failed to get sandbox runtime: '
                 'no runtime for "atoll-vm" is configured'),
    ("gone", 'runtimeclass.node.k8s.io "gone" not found'),
])
async def test_no_runtime_for_the_handler_fails_the_sandbox(parts: dict[str, Any], klass: str,
                                                            why: str) -> None:
    status = await first_status(parts, pod(klass))
    waiting = status["containerStatuses"][0]["state"]["waiting"]
    assert waiting == {"reason": "CreatePodSandboxError",
                       "message": f"Failed to create pod sandbox: {why}"}
    assert status["phase"] == "Pending"
    assert ("Warning", "FailedCreatePodSandBox",
            f"Failed to create pod sandbox: {why}") in parts["events"].events
    assert parts["runtime"].metas == {}  # nothing started under runc instead


@pytest.mark.parametrize("klass", [None, "plain"])
async def test_runc_handlers_run(parts: dict[str, Any], klass: str | None) -> None:
    status = await first_status(parts, pod(klass))
    assert "running" in status["containerStatuses"][0]["state"]


async def test_a_registered_handler_runs(parts: dict[str, Any]) -> None:
    parts["settings"] = dataclasses.replace(parts["settings"],
                                            runtime_handlers=RUNC_HANDLERS + ("atoll-vm",))
    status = await first_status(parts, pod("atoll-vm"))
    assert "running" in status["containerStatuses"][0]["state"]


def test_node_reports_its_handlers() -> None:
    assert runtime_handlers(RUNC_HANDLERS) == [
        {"name": "", "features": {"recursiveReadOnlyMounts": False, "userNamespaces": False}},
        {"name": "runc", "features": {"recursiveReadOnlyMounts": False,
                                      "userNamespaces": False}}]
