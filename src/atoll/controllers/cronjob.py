"""CronJobs: a Job per scheduled time, as kube-controller-manager's CronJob controller (v2).

Each reconcile looks at the CronJob's Jobs (by controller uid), keeps ``status.active`` and
``lastSuccessfulTime`` true, trims finished Jobs to the history limits, and, unless
suspended, starts the Job of the most recent scheduled time not yet run, then asks to be
looked at again exactly at the next one (``requeue_after``: no ticker).

A Job's name carries its scheduled minute (``<cronjob>-<minutes since the epoch>``), so a
restarted controller that tries the same time again gets AlreadyExists instead of a second
run; ``startingDeadlineSeconds`` bounds how late a missed time may still start.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from atoll.api import cron, errors
from atoll.api.timestamps import parse_rfc3339, rfc3339
from atoll.client import indexers as ix
from atoll.client.controller import DONE, Builder, Controller, Result, requeue_after
from atoll.client.events import NORMAL, WARNING
from atoll.client.status import patch_status_if_changed

log = logging.getLogger(__name__)
SCHEDULED_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"
#: more missed times than this is reported (as upstream), and the walk jumps ahead
TOO_MANY_MISSED = 100
_WALK_LIMIT = 10_000


def most_recent(schedule: str, tz: dt.tzinfo, earliest: float, now: float
                ) -> tuple[float | None, int, float]:
    """(the latest scheduled time in (earliest, now] or None, how many there were, the next
    scheduled time after now)."""
    start = dt.datetime.fromtimestamp(earliest, tz)
    missed, latest = 0, None
    it = cron.times(schedule, start)
    for _ in range(_WALK_LIMIT):
        t = next(it).timestamp()
        if t > now:
            return latest, missed, t
        latest, missed = t, missed + 1
    # a long gap of a frequent schedule: only the last day can still matter
    latest2, missed2, nxt = most_recent(schedule, tz, max(earliest, now - 86400), now)
    return latest2 or latest, missed + missed2, nxt


def finished(job: dict[str, Any]) -> str:
    """"Complete", "Failed" or "" for a Job still running."""
    for c in (job.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("status") == "True" and c.get("type") in (
                "Complete", "Failed"):
            return str(c["type"])
    return ""


def job_reference(job: dict[str, Any]) -> dict[str, Any]:
    meta = job["metadata"]
    return {"kind": "Job", "apiVersion": "batch/v1", "name": meta["name"],
            "namespace": meta["namespace"], "uid": meta.get("uid", ""),
            "resourceVersion": meta.get("resourceVersion", "")}


class CronJobController(Controller):
    """CronJobs (primary) owning Jobs."""

    name = "cronjob"
    default_workers = 2
    events_component = "cronjob-controller"
    backoff = (0.5, 30.0)

    def declare(self, b: Builder) -> None:
        self.cronjobs = b.primary("batch", "v1", "cronjobs")
        self.jobs = b.owns("batch", "v1", "jobs", owner_kind="CronJob")

    async def reconcile(self, key: str) -> Result:
        cj = self.cronjobs.get(key)
        if cj is None or cj["metadata"].get("deletionTimestamp"):
            return DONE
        spec, meta = cj.get("spec") or {}, cj["metadata"]
        jobs = [j for j in self.jobs.by_index(ix.CONTROLLER_UID, meta.get("uid", ""))
                if j["metadata"].get("namespace") == meta["namespace"]]
        status = dict(cj.get("status") or {})
        await self._clean_history(cj, jobs)
        active = [j for j in jobs if not finished(j) and not j["metadata"].get("deletionTimestamp")]
        was_active = {ref.get("uid") for ref in status.get("active") or [] if isinstance(ref, dict)}
        for job in jobs:
            if finished(job) and job["metadata"].get("uid") in was_active:
                self.events.record(cj, NORMAL, "SawCompletedJob",
                                   f"Saw completed job: {job['metadata']['name']}, "
                                   f"condition: {finished(job)}")
        status["active"] = [job_reference(j) for j in sorted(
            active, key=lambda j: j["metadata"]["name"])] or None
        done = [parse_rfc3339((j.get("status") or {}).get("completionTime"))
                for j in jobs if finished(j) == "Complete"]
        if any(done):
            best = max(t for t in done if t)
            if (parse_rfc3339(status.get("lastSuccessfulTime")) or 0) < best:
                status["lastSuccessfulTime"] = rfc3339(best)
        tz = cron.zone(spec["timeZone"]) if spec.get("timeZone") else \
            dt.datetime.now().astimezone().tzinfo
        problem = cron.schedule_error(spec.get("schedule")) or (
            "" if tz is not None else f"unknown time zone {spec.get('timeZone')}")
        if problem:  # the API refuses these; an old object may still hold one
            await self._write_status(cj, status)
            self.events.record(cj, WARNING, "UnparseableSchedule", problem)
            return DONE
        if spec.get("suspend"):
            await self._write_status(cj, status)
            return DONE
        assert tz is not None
        now = self.clock()
        earliest = parse_rfc3339(status.get("lastScheduleTime")) or \
            parse_rfc3339(meta.get("creationTimestamp")) or now
        deadline = spec.get("startingDeadlineSeconds")
        if isinstance(deadline, int) and deadline >= 0:
            earliest = max(earliest, now - deadline)
        due, missed, nxt = most_recent(spec["schedule"], tz, earliest, now)
        if missed > TOO_MANY_MISSED:
            self.events.record(cj, WARNING, "TooManyMissedTimes",
                               f"too many missed start times: {missed}. Set or decrease "
                               ".spec.startingDeadlineSeconds or check clock skew")
        if due is not None:
            await self._start(cj, status, active, due)
        await self._write_status(cj, status)
        return requeue_after(nxt - now + 0.01)

    async def _start(self, cj: dict[str, Any], status: dict[str, Any],
                     active: list[dict[str, Any]], due: float) -> None:
        policy = (cj.get("spec") or {}).get("concurrencyPolicy") or "Allow"
        if active and policy == "Forbid":
            log.debug("cronjob %s: %s skipped, a job is still running",
                      cj["metadata"]["name"], rfc3339(due))
            return
        if active and policy == "Replace":
            for job in active:
                await self._delete(cj, job)
            status["active"] = None
        job = self._job_for(cj, due)
        ns = cj["metadata"]["namespace"]
        try:
            created = await self.client.create(f"/apis/batch/v1/namespaces/{ns}/jobs", job)
        except errors.AlreadyExists:
            created = None  # this time ran already (a restart, or a lost status write)
        except errors.ApiError as exc:
            self.events.record(cj, WARNING, "FailedCreate", f"Error creating job: {exc}")
            raise
        if created is not None:
            self.events.record(cj, NORMAL, "SuccessfulCreate",
                               f"Created job {created['metadata']['name']}")
            status["active"] = [*(status.get("active") or []), job_reference(created)]
        status["lastScheduleTime"] = rfc3339(due)

    @staticmethod
    def _job_for(cj: dict[str, Any], due: float) -> dict[str, Any]:
        meta = cj["metadata"]
        template = (cj.get("spec") or {}).get("jobTemplate") or {}
        tmeta = template.get("metadata") or {}
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {
            "name": f"{meta['name']}-{int(due // 60)}", "namespace": meta["namespace"],
            "labels": dict(tmeta.get("labels") or {}),
            "annotations": {**(tmeta.get("annotations") or {}),
                            SCHEDULED_ANNOTATION: rfc3339(due)},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob",
                                 "name": meta["name"], "uid": meta["uid"], "controller": True,
                                 "blockOwnerDeletion": True}]},
            "spec": template.get("spec") or {}}

    async def _clean_history(self, cj: dict[str, Any], jobs: list[dict[str, Any]]) -> None:
        spec = cj.get("spec") or {}
        for outcome, limit_name, default in (("Complete", "successfulJobsHistoryLimit", 3),
                                             ("Failed", "failedJobsHistoryLimit", 1)):
            limit = spec.get(limit_name, default)
            if not isinstance(limit, int) or limit < 0:
                continue
            old = sorted((j for j in jobs if finished(j) == outcome
                          and not j["metadata"].get("deletionTimestamp")),
                         key=lambda j: ((j.get("status") or {}).get("startTime") or "",
                                        j["metadata"]["name"]))
            for job in old[:max(0, len(old) - limit)]:
                await self._delete(cj, job)

    async def _delete(self, cj: dict[str, Any], job: dict[str, Any]) -> None:
        meta = job["metadata"]
        try:
            await self.client.delete(f"/apis/batch/v1/namespaces/{meta['namespace']}/jobs/"
                                     f"{meta['name']}", {"propagationPolicy": "Background"})
        except errors.NotFound:
            return
        self.events.record(cj, NORMAL, "SuccessfulDelete", f"Deleted job {meta['name']}")

    async def _write_status(self, cj: dict[str, Any], status: dict[str, Any]) -> None:
        meta = cj["metadata"]
        await patch_status_if_changed(self.client, f"/apis/batch/v1/namespaces/"
                                      f"{meta['namespace']}/cronjobs/{meta['name']}/status",
                                      cj, status)
