"""The controller framework against a fake client and a fake clock: no server, no host."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from atoll.api import errors
from atoll.client import indexers as ix
from atoll.client.controller import (
    DONE,
    Builder,
    Controller,
    PermanentError,
    TemporaryError,
    register_metrics,
    requeue_after,
)
from atoll.client.factory import InformerFactory
from atoll.client.metrics import Registry
from atoll.client.ratelimit import RateLimiter
from atoll.controllers.csrcleaner import DECIDED_TTL, PENDING_TTL, CSRCleaner
from tests.client.fakes import FakeClient, FakeClock, feed

CSR_PATH = "/apis/certificates.k8s.io/v1/certificatesigningrequests"


def csr(name: str, **status: Any) -> dict[str, Any]:
    return {"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
            "metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z",
                         "resourceVersion": "1"}, "status": status}


def pod(name: str, owner: str | None = None, node: str = "", rv: str = "1") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "uid": f"uid-{name}",
                            "resourceVersion": rv}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner,
                                    "uid": f"uid-{owner}", "controller": True}]
    return {"metadata": meta, "spec": {"nodeName": node}}


async def test_csr_cleaner_requeues_until_due_then_deletes() -> None:
    client, clock = FakeClient(), FakeClock()
    factory = InformerFactory(client)  # type: ignore[arg-type]
    cleaner = CSRCleaner(client, factory, clock=clock)  # type: ignore[arg-type]
    feed(cleaner.csrs, csr("pending"))
    client.objects[f"{CSR_PATH}/pending"] = csr("pending")
    clock.advance(100)
    result = await cleaner.reconcile("pending")
    assert result == requeue_after(PENDING_TTL - 100)
    assert ("DELETE", f"{CSR_PATH}/pending") not in client.calls
    clock.advance(PENDING_TTL)
    assert await cleaner.reconcile("pending") == DONE
    assert ("DELETE", f"{CSR_PATH}/pending") in client.calls
    # issued an hour ago: due now; already gone on the server is fine
    feed(cleaner.csrs, csr("issued", certificate="Y2VydA=="))
    clock.advance(DECIDED_TTL)
    assert await cleaner.reconcile("issued") == DONE


class Recorder(Controller):
    """Reconciles ReplicaSet keys; pods are owned; behaviour per key set by the test."""

    name = "recorder"
    default_workers = 2
    backoff = (0.01, 0.05)

    def declare(self, b: Builder) -> None:
        self.sets = b.primary("apps", "v1", "replicasets")
        self.pods = b.owns("", "v1", "pods", owner_kind="ReplicaSet",
                           indexers={ix.NODE_NAME: ix.by_node_name})
        self.seen: list[str] = []
        self.behaviour: dict[str, Any] = {}
        self.reconciled = asyncio.Event()

    async def reconcile(self, key: str) -> Any:
        self.seen.append(key)
        self.reconciled.set()
        action = self.behaviour.get(key)
        if isinstance(action, Exception):
            raise action
        return action


async def test_owned_changes_enqueue_the_owner_and_indexes_follow() -> None:
    ctrl = Recorder(FakeClient(), InformerFactory(FakeClient()))  # type: ignore[arg-type]
    feed(ctrl.pods, pod("p1", owner="web", node="n1"))
    feed(ctrl.pods, pod("p2", node="n1"))
    assert len(ctrl.queue) == 1 and await ctrl.queue.get() == "ns/web"
    assert {p["metadata"]["name"] for p in ctrl.pods.by_index(ix.NODE_NAME, "n1")} == {"p1", "p2"}
    assert [p["metadata"]["name"] for p in ctrl.pods.by_index(ix.CONTROLLER_UID, "uid-web")] == \
        ["p1"]
    feed(ctrl.pods, pod("p1", node="n2", rv="2"), kind="MODIFIED")  # released, moved
    assert [p["metadata"]["name"] for p in ctrl.pods.by_index(ix.NODE_NAME, "n1")] == ["p2"]
    assert ctrl.pods.by_index(ix.CONTROLLER_UID, "uid-web") == []
    feed(ctrl.pods, pod("p2", node="n1"), kind="DELETED")
    assert ctrl.pods.by_index(ix.NODE_NAME, "n1") == []


async def test_one_failing_key_never_blocks_the_others() -> None:
    client = FakeClient()
    ctrl = Recorder(client, InformerFactory(client))  # type: ignore[arg-type]
    ctrl.behaviour = {"ns/bad": RuntimeError("boom"), "ns/gone": errors.NotFound("gone"),
                      "ns/perm": PermanentError("spec cannot work"),
                      "ns/later": TemporaryError("not yet", delay=0.01)}
    for key in ("ns/bad", "ns/good", "ns/gone", "ns/perm", "ns/later"):
        await ctrl.process(key)
    assert ctrl.queue.retries("ns/bad") == 1
    assert ctrl.queue.retries("ns/perm") == 0 and ctrl.queue.retries("ns/gone") == 0
    assert ctrl.outcomes == {"success": 2, "requeue_after": 0, "error": 3}
    # the failing key and the temporary one come back by themselves; the permanent one does not
    back = set()
    async with asyncio.timeout(5):
        while back != {"ns/bad", "ns/later"}:
            back.add(await ctrl.queue.get())
    await asyncio.sleep(0)
    assert len(ctrl.queue) == 0


async def test_workers_start_only_after_every_cache_synced() -> None:
    client = FakeClient()
    factory = InformerFactory(client)  # type: ignore[arg-type]
    ctrl = Recorder(client, factory)  # type: ignore[arg-type]

    async def never_run() -> None:  # the fake client cannot list: the test syncs by hand
        await asyncio.Event().wait()
    for inf in factory.informers:
        inf.run = never_run  # type: ignore[method-assign]
    ctrl.queue.add("ns/early")
    task = asyncio.create_task(ctrl.run())
    ctrl.sets.synced.set()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await ctrl.reconciled.wait()
    assert ctrl.seen == []  # pods not synced yet: nobody reconciled
    ctrl.pods.synced.set()
    async with asyncio.timeout(5):
        await ctrl.reconciled.wait()
    assert ctrl.seen == ["ns/early"]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await factory.stop()


async def test_factory_shares_one_informer_per_resource() -> None:
    client = FakeClient()
    factory = InformerFactory(client)  # type: ignore[arg-type]
    a = Recorder(client, factory)  # type: ignore[arg-type]
    b = Recorder(client, factory)  # type: ignore[arg-type]
    assert a.pods is b.pods and a.sets is b.sets
    assert len(factory.informers) == 2
    assert factory.informer("", "v1", "pods", field_selector="spec.nodeName=x") is not a.pods


def test_rate_limiter_per_key_and_global() -> None:
    clock = FakeClock(0.0)
    limiter = RateLimiter(base_delay=0.1, max_delay=1.0, qps=10.0, burst=2, clock=clock)
    assert [limiter.when("a") for _ in range(5)] == [0.1, 0.2, 0.4, 0.8, 1.0]
    limiter.forget("a")
    # the bucket ran dry after two: a new key now waits for the bucket, not its own back-off
    assert limiter.when("b") == pytest.approx(0.4)
    clock.advance(60)
    assert limiter.when("c") == 0.1


async def test_metrics_render_per_controller() -> None:
    client = FakeClient()
    ctrl = Recorder(client, InformerFactory(client))  # type: ignore[arg-type]
    ctrl.behaviour = {"ns/bad": RuntimeError("boom")}
    await ctrl.process("ns/bad")
    registry = Registry()
    register_metrics(registry, [ctrl])
    text = registry.render()
    assert 'workqueue_retries_total{name="recorder"} 1' in text
    assert 'workqueue_work_duration_seconds_count{name="recorder"} 1' in text
    assert 'controller_reconcile_total{name="recorder",result="error"} 1' in text


def test_metadata_only_and_full_requests_share_one_informer() -> None:
    factory = InformerFactory(FakeClient())  # type: ignore[arg-type]
    meta = factory.informer("", "v1", "pods", metadata_only=True)
    full = factory.informer("", "v1", "pods")
    assert full is meta and full.headers is None  # upgraded before it started
    assert factory.informer("", "v1", "pods", metadata_only=True) is full
    assert len(factory.informers) == 1
