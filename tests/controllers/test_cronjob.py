"""The CronJob controller against a fake client and a fake clock: which Job starts when."""

from __future__ import annotations

from typing import Any

import pytest

from atoll.api.resources import batch_v1
from atoll.api.timestamps import parse_rfc3339, rfc3339
from atoll.client.controller import requeue_after
from atoll.client.factory import InformerFactory
from atoll.controllers.cronjob import SCHEDULED_ANNOTATION, CronJobController
from tests.client.fakes import FakeClient, FakeClock, feed

JOBS = "/apis/batch/v1/namespaces/ns/jobs"
T0 = parse_rfc3339("2026-01-01T00:00:00Z")
assert T0 is not None


def cronjob(schedule: str = "*/5 * * * *", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "tick", "namespace": "ns", "uid": "cj-uid",
                         "resourceVersion": "1", "creationTimestamp": rfc3339(T0)},
            "spec": {"schedule": schedule, "timeZone": "UTC", "concurrencyPolicy": "Allow",
                     "jobTemplate": {"spec": {"template": {"spec": {
                         "restartPolicy": "Never",
                         "containers": [{"name": "c", "image": "busybox"}]}}}}, **spec},
            "status": {}}


def job(name: str, outcome: str = "", start: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    status: dict[str, Any] = {"startTime": start}
    if outcome:
        status["conditions"] = [{"type": outcome, "status": "True"}]
        status["completionTime"] = start
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}",
                         "resourceVersion": "1",
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob",
                                              "name": "tick", "uid": "cj-uid",
                                              "controller": True}]},
            "status": status}


def controller(clock: FakeClock) -> tuple[CronJobController, FakeClient]:
    client = FakeClient()
    ctrl = CronJobController(client, InformerFactory(client), clock=clock)  # type: ignore[arg-type]
    feed(ctrl.jobs, {"metadata": {"name": "unrelated", "namespace": "ns", "uid": "x"}})
    return ctrl, client


def created(client: FakeClient) -> list[str]:
    return sorted(p.rsplit("/", 1)[1] for p in client.objects if p.startswith(JOBS + "/"))


def status_patches(client: FakeClient) -> list[str]:
    return [p for verb, p in client.calls if verb == "PATCH" and p.endswith("/status")]


async def test_the_most_recent_time_runs_once_and_the_next_is_awaited() -> None:
    clock = FakeClock(T0 + 6 * 60 + 30)  # 00:06:30: 00:05 is due, 00:10 next
    ctrl, client = controller(clock)
    cj = cronjob()
    feed(ctrl.cronjobs, cj)
    client.objects["/apis/batch/v1/namespaces/ns/cronjobs/tick/status"] = cj
    result = await ctrl.reconcile("ns/tick")
    minutes = int((T0 + 300) // 60)
    assert created(client) == [f"tick-{minutes}"]
    made = client.objects[f"{JOBS}/tick-{minutes}"]
    assert made["metadata"]["annotations"][SCHEDULED_ANNOTATION] == "2026-01-01T00:05:00Z"
    assert made["metadata"]["ownerReferences"][0]["uid"] == "cj-uid"
    assert result == requeue_after(210 + 0.01)
    assert status_patches(client)
    # a controller that restarts before its status write landed tries the same time again:
    # AlreadyExists, not a second run
    again = await ctrl.reconcile("ns/tick")
    assert created(client) == [f"tick-{minutes}"] and again == result


async def test_forbid_skips_while_a_job_runs_and_replace_replaces_it() -> None:
    clock = FakeClock(T0 + 6 * 60)
    ctrl, client = controller(clock)
    feed(ctrl.jobs, job("tick-old"))
    client.objects[f"{JOBS}/tick-old"] = job("tick-old")
    feed(ctrl.cronjobs, cronjob(concurrencyPolicy="Forbid"))
    await ctrl.reconcile("ns/tick")
    assert created(client) == ["tick-old"]
    feed(ctrl.cronjobs, cronjob(concurrencyPolicy="Replace"), kind="MODIFIED")
    await ctrl.reconcile("ns/tick")
    assert ("DELETE", f"{JOBS}/tick-old") in client.calls
    assert created(client) == [f"tick-{int((T0 + 300) // 60)}"]


async def test_suspend_and_starting_deadline_hold_runs_back() -> None:
    clock = FakeClock(T0 + 6 * 60)
    ctrl, client = controller(clock)
    feed(ctrl.cronjobs, cronjob(suspend=True))
    await ctrl.reconcile("ns/tick")
    assert created(client) == []
    # 00:05 was 60 s ago; a 30 s deadline says it is too late to start it
    feed(ctrl.cronjobs, cronjob(startingDeadlineSeconds=30), kind="MODIFIED")
    result = await ctrl.reconcile("ns/tick")
    assert created(client) == [] and result == requeue_after(240 + 0.01)
    clock.advance(240)  # 00:10:00 exactly: due now
    await ctrl.reconcile("ns/tick")
    assert created(client) == [f"tick-{int((T0 + 600) // 60)}"]


async def test_time_zone_and_history_limits() -> None:
    clock = FakeClock(T0 + 3600)  # 01:00 UTC is 10:00 in Tokyo
    ctrl, client = controller(clock)
    for i in range(5):
        feed(ctrl.jobs, job(f"tick-ok{i}", "Complete", f"2025-12-31T0{i}:00:00Z"))
    feed(ctrl.jobs, job("tick-bad0", "Failed", "2025-12-31T00:00:00Z"))
    feed(ctrl.jobs, job("tick-bad1", "Failed", "2025-12-31T01:00:00Z"))
    feed(ctrl.cronjobs, cronjob("0 10 * * *", timeZone="Asia/Tokyo"))
    await ctrl.reconcile("ns/tick")
    assert created(client) == [f"tick-{int((T0 + 3600) // 60)}"]
    deleted = sorted(p.rsplit("/", 1)[1] for verb, p in client.calls if verb == "DELETE")
    assert deleted == ["tick-bad0", "tick-ok0", "tick-ok1"]  # keeps 3 successful, 1 failed


@pytest.mark.parametrize("spec,field", [
    ({"schedule": "61 * * * *"}, "spec.schedule"),
    ({"schedule": "TZ=UTC 0 * * * *"}, "spec.schedule"),
    ({"schedule": ""}, "spec.schedule"),
    ({"timeZone": "Mars/Olympus"}, "spec.timeZone"),
    ({"timeZone": "../../etc/passwd"}, "spec.timeZone"),
    ({"concurrencyPolicy": "Sometimes"}, "spec.concurrencyPolicy"),
    ({"startingDeadlineSeconds": -1}, "spec.startingDeadlineSeconds"),
])
def test_bad_cronjobs_name_the_field(spec: dict[str, Any], field: str) -> None:
    obj = cronjob(**spec)
    causes = batch_v1.CronJobStrategy().validate(batch_v1.CRONJOBS, obj)
    assert [c.field for c in causes] == [field], causes


def test_descriptors_and_a_good_cronjob_are_valid() -> None:
    for schedule in ("@hourly", "@daily", "0 0 * * 0", "*/1 * * * *"):
        assert batch_v1.CronJobStrategy().validate(batch_v1.CRONJOBS, cronjob(schedule)) == []
