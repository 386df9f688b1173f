"""The scheduler's watch side: the factory's shared informers, and nothing scheduled before
they synced.  A fake client and hand-fed informers: no server."""

from __future__ import annotations

import asyncio
from typing import Any

from atoll.api.vmoperator import names as n
from atoll.client.factory import InformerFactory
from atoll.client.kubeconfig import ClientConfig
from atoll.controllers.scheduler import Scheduler
from tests.client.fakes import FakeClient, feed


def node(name: str) -> dict[str, Any]:
    res = {"cpu": "4", "memory": "8Gi", "pods": "110"}
    return {"metadata": {"name": name, "resourceVersion": "1"},
            "status": {"allocatable": res, "capacity": res,
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def pod(name: str, node_name: str = "", memory: str = "1Gi") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}",
                         "resourceVersion": "1"},
            "spec": {"nodeName": node_name, "containers": [
                {"name": "c", "resources": {"requests": {"memory": memory}}}]}}


def scheduler() -> tuple[Scheduler, FakeClient, InformerFactory]:
    client = FakeClient()
    client.config = ClientConfig("https://127.0.0.1:9", False)  # type: ignore[attr-defined]
    factory = InformerFactory(client)  # type: ignore[arg-type]
    sched = Scheduler(client, factory)  # type: ignore[arg-type]
    sched.client = sched.events.client = client  # type: ignore[assignment]

    async def never_run() -> None:  # the fake client cannot list: the test syncs by hand
        await asyncio.Event().wait()
    for inf in factory.informers:
        inf.run = never_run  # type: ignore[method-assign]
    for inf in (sched.claims, sched.volumes, sched.storage_classes, sched.capacities):
        inf.synced.set()  # no storage objects in these tests
    return sched, client, factory


def bindings(client: FakeClient) -> list[str]:
    return [p for v, p in client.calls if v == "POST" and p.endswith("/binding")]


async def test_the_scheduler_shares_the_factorys_informers() -> None:
    sched, _, factory = scheduler()
    assert sched.pods is factory.informer("", "v1", "pods")
    assert sched.nodes is factory.informer("", "v1", "nodes")
    assert sched.vms is factory.informer(n.GROUP, n.VERSION, "virtualmachines")
    # pods, nodes, namespaces, VMs, VM classes; claims, volumes, classes, capacities
    assert len(factory.informers) == 9


async def test_nothing_is_scheduled_before_the_informers_synced() -> None:
    sched, client, factory = scheduler()
    feed(sched.nodes, node("a"))
    feed(sched.pods, pod("bound", "a", memory="6Gi"))
    feed(sched.pods, pod("pending"))
    for inf in (sched.nodes, sched.pods):
        inf.synced.clear()
    task = asyncio.create_task(sched.run())
    try:
        sched.nodes.synced.set()
        sched.namespaces.synced.set()
        await asyncio.sleep(0.2)
        assert bindings(client) == []  # pods not synced: nothing decided yet
        sched.pods.synced.set()
        async with asyncio.timeout(5):
            while not bindings(client):
                await asyncio.sleep(0.01)
        assert bindings(client) == ["/api/v1/namespaces/ns/pods/pending/binding"]
        # the bound pod's 6Gi counted: a 4Gi one does not fit on the 8Gi node
        feed(sched.pods, pod("big", memory="4Gi"))
        async with asyncio.timeout(5):
            while "ns/big" not in sched.queue._unschedulable:
                await asyncio.sleep(0.01)
        assert len(bindings(client)) == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await factory.stop()


async def test_a_restarted_scheduler_rebuilds_from_the_shared_caches() -> None:
    sched, client, factory = scheduler()
    feed(sched.nodes, node("a"))
    feed(sched.pods, pod("bound", "a", memory="6Gi"))
    sched.namespaces.synced.set()
    caches = []
    for _ in range(2):
        task = asyncio.create_task(sched.run())
        await asyncio.sleep(0.05)
        caches.append(sched.cache)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert caches[0] is not caches[1]  # a fresh cache, filled from the informers' contents
    assert set(sched.cache.pods) == {"ns/bound"}
    assert sched.cache.nodes["a"].requested.memory == 6 << 30
    await factory.stop()
