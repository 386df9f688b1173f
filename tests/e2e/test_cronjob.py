"""CronJobs end to end: `kubectl create cronjob` fires within its minute, runs to completion,
and reads back with upstream's columns; a bad schedule is a 422 naming the field."""

from __future__ import annotations

import json

from tests.conftest import Platform, wait_until


def test_a_cronjob_fires_every_minute_and_reports_it(platform: Platform, namespace: str) -> None:
    platform.kubectl("-n", namespace, "create", "cronjob", "tick", "--image=busybox",
                     "--schedule=*/1 * * * *", "--", "true")
    jobs = wait_until("a Job of the CronJob", lambda: json.loads(platform.kubectl(
        "-n", namespace, "get", "jobs", "-o", "json").stdout)["items"], timeout=90, interval=1)
    owner = jobs[0]["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("CronJob", "tick", True)
    assert jobs[0]["metadata"]["name"].startswith("tick-")
    status = wait_until("the CronJob's last successful time", lambda: (s := json.loads(
        platform.kubectl("-n", namespace, "get", "cronjob", "tick", "-o", "json").stdout
    ).get("status") or {}).get("lastSuccessfulTime") and s, timeout=90, interval=1)
    assert status["lastScheduleTime"].endswith(":00Z")
    reasons = wait_until("the CronJob's events", lambda: (r := set(platform.kubectl(
        "-n", namespace, "get", "events", "--field-selector", "involvedObject.kind=CronJob",
        "-o", "jsonpath={.items[*].reason}").stdout.split())) >= {"SuccessfulCreate",
                                                                  "SawCompletedJob"} and r,
        timeout=30)
    assert "UnparseableSchedule" not in reasons
    table = platform.kubectl("-n", namespace, "get", "cronjob", "tick").stdout.splitlines()
    assert table[0].split() == ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST",
                                "SCHEDULE", "AGE"], table
    assert table[1].split()[:4] == ["tick", "*/1", "*", "*"]


def test_bad_schedules_and_time_zones_are_422(platform: Platform, namespace: str) -> None:
    out = platform.kubectl("-n", namespace, "create", "cronjob", "bad", "--image=busybox",
                           "--schedule=61 * * * *", check=False)
    assert out.returncode != 0 and "spec.schedule" in out.stderr, out.stderr
    manifest = {"apiVersion": "batch/v1", "kind": "CronJob",
                "metadata": {"name": "tz", "namespace": namespace},
                "spec": {"schedule": "0 9 * * *", "timeZone": "Mars/Olympus",
                         "jobTemplate": {"spec": {"template": {"spec": {
                             "restartPolicy": "OnFailure",
                             "containers": [{"name": "c", "image": "busybox"}]}}}}}}
    out = platform.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=False)
    assert out.returncode != 0 and "spec.timeZone" in out.stderr, out.stderr
