"""A pod worker's state machine against the in-memory runtime: no runc, no root, no network.

start → Running → the container exits → restarted (at once the first time, then after a
growing back-off, CrashLoopBackOff meanwhile); with ``restartPolicy: Never`` an exit 0 makes
the pod Succeeded and releases it; deletion stops and removes everything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from atoll.agent.pods.worker import PodWorker, WorkerSettings
from atoll.agent.runtime.containers import ContainerRuntime
from atoll.agent.runtime.interface import PodRuntime
from tests.agent.fake_runtime import (
    FakeClient,
    FakeCNI,
    FakeEvents,
    FakeImages,
    FakeRuntime,
)

BACKOFF = 0.4


def test_the_fake_and_the_real_runtime_have_the_interface() -> None:
    wanted = {m for m in vars(PodRuntime) if not m.startswith("_")}
    assert wanted <= set(dir(FakeRuntime)) and wanted <= set(dir(ContainerRuntime))


def _pod(policy: str) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "n", "uid": "uid-1"},
            "spec": {"nodeName": "node-1", "restartPolicy": policy,
                     "containers": [{"name": "c", "image": "busybox",
                                     "command": ["sh", "-c", "exit 1"]}]},
            "status": {"phase": "Pending"}}


@pytest.fixture
def parts(tmp_path: Path) -> dict[str, Any]:
    return {"client": FakeClient(), "runtime": FakeRuntime(), "cni": FakeCNI(),
            "events": FakeEvents(),
            "settings": WorkerSettings(node_name="node-1", host_ip="192.0.2.10",
                                       pods_dir=tmp_path / "pods", backoff_base=BACKOFF,
                                       backoff_max=10 * BACKOFF)}


def _worker(pod: dict[str, Any], parts: dict[str, Any]) -> PodWorker:
    worker = PodWorker(pod, client=parts["client"], runtime=parts["runtime"],
                       images=FakeImages(), cni=parts["cni"], settings=parts["settings"],
                       events=parts["events"])
    # the informer: the stored pod, with the status just written, comes back to the worker
    parts["client"].echo = lambda status: worker.update(dict(worker.pod, status=status))
    return worker


def _container(status: dict[str, Any]) -> dict[str, Any]:
    return status["containerStatuses"][0]


async def _reported(client: FakeClient, ok: Callable[[dict[str, Any]], bool],
                    timeout: float = 5.0) -> dict[str, Any]:
    """The first status reported (from now on, or already last) that satisfies ``ok``."""
    async def wait() -> dict[str, Any]:
        while True:
            if client.statuses and ok(client.statuses[-1]):
                return client.statuses[-1]
            client.changed.clear()
            await client.changed.wait()
    return await asyncio.wait_for(wait(), timeout)


def _running(restarts: int) -> Callable[[dict[str, Any]], bool]:
    return lambda s: s["phase"] == "Running" and "running" in _container(s)["state"] \
        and _container(s)["restartCount"] == restarts


async def test_restart_always_backs_off(parts: dict[str, Any]) -> None:
    client, runtime = parts["client"], parts["runtime"]
    worker = _worker(_pod("Always"), parts)
    worker.start()
    try:
        status = await _reported(client, _running(0))
        assert status["podIP"] == "10.88.0.2" and status["qosClass"] == "BestEffort"
        assert _container(status)["ready"] is True

        runtime.exit("c", 1)  # the first failure restarts at once
        status = await _reported(client, _running(1))
        assert _container(status)["lastState"]["terminated"]["exitCode"] == 1
        assert _container(status)["lastState"]["terminated"]["reason"] == "Error"

        loop = asyncio.get_running_loop()
        failed_at = loop.time()
        runtime.exit("c", 1)  # the second waits: CrashLoopBackOff
        status = await _reported(client, lambda s: "waiting" in _container(s)["state"])
        waiting = _container(status)["state"]["waiting"]
        assert waiting["reason"] == "CrashLoopBackOff"
        assert "restarting failed container=c" in waiting["message"]
        assert status["phase"] == "Running"
        assert runtime.running("c") is None

        status = await _reported(client, _running(2))
        assert loop.time() - failed_at >= 2 * BACKOFF * 0.9  # base * 2: the delay doubled
    finally:
        worker.update(None)
        await asyncio.wait_for(worker.finished.wait(), 5)


async def test_restart_never_succeeds_and_releases(parts: dict[str, Any]) -> None:
    client, runtime, cni = parts["client"], parts["runtime"], parts["cni"]
    worker = _worker(_pod("Never"), parts)
    worker.start()
    try:
        await _reported(client, _running(0))
        runtime.exit("c", 0)
        status = await _reported(client, lambda s: s["phase"] == "Succeeded")
        terminated = _container(status)["state"]["terminated"]
        assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"
        assert _container(status)["restartCount"] == 0
        for _ in range(100):  # released once the phase is reported: network gone
            if not cni.pods:
                break
            await asyncio.sleep(0.02)
        assert not cni.pods
        assert runtime.running("c") is None and len(runtime.metas) == 1
    finally:
        worker.update(None)
        await asyncio.wait_for(worker.finished.wait(), 5)


async def test_failed_start_and_deletion(parts: dict[str, Any]) -> None:
    client, runtime = parts["client"], parts["runtime"]
    runtime.fail_next = ("StartError", "exec: no such file")
    pod = _pod("OnFailure")
    worker = _worker(pod, parts)
    worker.start()
    await _reported(client, _running(1))  # the failed attempt 0, then attempt 1 runs
    assert [m.attempt for m in runtime.metas.values()] == [1]

    deleting = dict(pod["metadata"], deletionTimestamp="2026-01-01T00:00:00Z",
                    deletionGracePeriodSeconds=1)
    worker.update(dict(pod, metadata=deleting))
    await asyncio.wait_for(worker.finished.wait(), 5)
    assert runtime.running("c") is None
    assert len(runtime.removed) == 2  # both attempts' records
    assert client.deleted == ["/api/v1/namespaces/n/pods/p"]
    assert not (parts["settings"].pods_dir / "uid-1").exists()
