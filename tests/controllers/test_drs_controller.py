"""The DRS controller (controllers/vmoperator/drs.py) against a fake client and clock."""

from __future__ import annotations

import json
from typing import Any

from atoll.api.migration import drs as d
from atoll.api.migration import names as m
from atoll.api.timestamps import rfc3339
from atoll.api.vmoperator import names as n
from atoll.client.controller import requeue_after
from atoll.client.factory import InformerFactory
from atoll.controllers.vmoperator.drs import DRSController
from tests.client.fakes import FakeClient, FakeClock, feed

RECS = d.recommendation_path("ns")


def node(name: str, clock: FakeClock, vms: dict[str, int], **spec: Any) -> dict[str, Any]:
    report = {"time": rfc3339(clock()), "cpu": {"host": 1000, "workloads": sum(vms.values())},
              "memory": {"used": 1 << 30, "total": 8 << 30, "workloads": len(vms) << 27},
              "pressure": {}, "vms": {f"ns/{k}": {"cpu": v, "memory": 1 << 27}
                                      for k, v in vms.items()}}
    res = {"cpu": "2", "memory": "8Gi", "pods": "110"}
    return {"metadata": {"name": name, "annotations": {d.LOAD_ANNOTATION: json.dumps(report)}},
            "spec": spec, "status": {"capacity": res, "allocatable": res,
                                     "conditions": [{"type": "Ready", "status": "True"}]}}


def vm(name: str, host: str, **annotations: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "uid": f"u-{name}",
                         "labels": {n.HOST_LABEL: host}, "annotations": annotations},
            "spec": {"className": "best-effort-xsmall", "powerState": n.POWERED_ON},
            "status": {"powerState": n.POWERED_ON}}


def setup(level: str, target: dict[str, Any] | None = None, **annotations: str
          ) -> tuple[DRSController, FakeClient, FakeClock]:
    client, clock = FakeClient(), FakeClock()
    drs = DRSController(client, InformerFactory(client), clock=clock)  # type: ignore[arg-type]
    feed(drs.policies, {"metadata": {"name": "default"},
                        "spec": {"automationLevel": level, "migrationThreshold": 3,
                                 "intervalSeconds": 30, "vmCooldownSeconds": 300}})
    feed(drs.nodes, node("a", clock, {"x": 900, "y": 900}))
    feed(drs.nodes, target or node("b", clock, {}))
    feed(drs.vms, vm("x", "a", **annotations))
    feed(drs.vms, vm("y", "a", **annotations))
    for inf in (drs.migrations, drs.recommendations, drs.classes, drs.pods, drs.claims,
                drs.volumes):
        inf.synced.set()
    return drs, client, clock


def created(client: FakeClient, prefix: str) -> list[dict[str, Any]]:
    return [obj for path, obj in client.objects.items() if path.startswith(prefix)]


async def test_manual_writes_a_recommendation_and_migrates_nothing() -> None:
    drs, client, _ = setup(d.MANUAL)
    assert await drs.reconcile("default") == requeue_after(30)
    [rec] = created(client, RECS)
    assert rec["metadata"]["name"] == "x-drs" and rec["spec"]["targetNode"] == "b"
    assert rec["spec"]["priority"] == 2 and rec["spec"]["expectedImprovement"] == "0.45 -> 0.00"
    assert created(client, m.path("ns")) == []
    # inside the interval: no second pass
    calls = len(client.calls)
    assert (await drs.reconcile("default")).requeue_after is not None
    assert len(client.calls) == calls


async def test_fully_automated_migrates_one_vm_labelled_drs() -> None:
    drs, client, _ = setup(d.FULL)
    await drs.reconcile("default")
    [mig] = created(client, m.path("ns"))
    assert mig["metadata"]["labels"]["migration.atoll.dev/reason"] == "drs"
    assert mig["spec"] == {"vmName": "x", "targetNode": "b"}
    assert created(client, RECS) == []


async def test_a_vm_override_beats_the_cluster_level() -> None:
    drs, client, _ = setup(d.MANUAL, **{d.AUTOMATION_ANNOTATION: d.FULL})
    await drs.reconcile("default")
    assert len(created(client, m.path("ns"))) == 1
    drs, client, _ = setup(d.FULL, **{d.AUTOMATION_ANNOTATION: d.DISABLED})
    await drs.reconcile("default")
    assert created(client, m.path("ns")) == [] and created(client, RECS) == []


async def test_hosts_in_maintenance_are_never_targets() -> None:
    clock = FakeClock()
    drs, client, _ = setup(d.FULL, node("b", clock, {}, unschedulable=True))
    await drs.reconcile("default")
    assert created(client, m.path("ns")) == []


async def test_running_and_recent_migrations_hold_drs_back() -> None:
    drs, client, clock = setup(d.FULL)
    mig = {"metadata": {"name": "other", "namespace": "ns", "uid": "m1",
                        "creationTimestamp": rfc3339(clock())},
           "spec": {"vmName": "y"}, "status": {"phase": m.RUNNING}}
    feed(drs.migrations, mig)
    await drs.reconcile("default")
    assert created(client, m.path("ns")) == []
    # it ended long ago for the hosts' reports, recently for the VM: only x may move
    feed(drs.migrations, dict(mig, status={"phase": m.SUCCEEDED, "sourceNode": "b",
                                           "targetNode": "a",
                                           "endTimestamp": rfc3339(clock() - 100)}), "MODIFIED")
    await drs.reconcile("default")
    [made] = created(client, m.path("ns"))
    assert made["spec"]["vmName"] == "x"


async def test_applying_a_recommendation_makes_its_migration() -> None:
    drs, client, _ = setup(d.MANUAL)
    feed(drs.recommendations, {
        "metadata": {"name": "y-drs", "namespace": "ns"},
        "spec": {"vmName": "y", "sourceNode": "a", "targetNode": "b", "priority": 2,
                 "apply": True}})
    await drs.reconcile("default")
    migs = created(client, m.path("ns"))
    assert [x["spec"] for x in migs] == [{"vmName": "y", "targetNode": "b"}]
    assert ("PATCH", d.recommendation_path("ns", "y-drs") + "/status") in client.calls
    # one whose VM has left its source is stale: deleted, not applied
    drs, client, _ = setup(d.MANUAL)
    client.objects[d.recommendation_path("ns", "z-drs")] = {}
    feed(drs.recommendations, {
        "metadata": {"name": "z-drs", "namespace": "ns"},
        "spec": {"vmName": "y", "sourceNode": "b", "targetNode": "a", "apply": True}})
    await drs.reconcile("default")
    assert ("DELETE", d.recommendation_path("ns", "z-drs")) in client.calls
    assert not any(x["spec"].get("targetNode") == "a" for x in created(client, m.path("ns")))
