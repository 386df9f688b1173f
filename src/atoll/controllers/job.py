"""Jobs: run pods until ``completions`` succeed, at most ``parallelism`` at a time.

As upstream's job controller: failed pods count against ``backoffLimit``
(then the Job fails with ``BackoffLimitExceeded``), ``activeDeadlineSeconds``
bounds the Job's run time (``DeadlineExceeded``), replacements after failures
wait an exponential back-off, and a finished Job's ``ttlSecondsAfterFinished``
deletes it.  Conditions follow 1.37: ``SuccessCriteriaMet``/``FailureTarget``
first, then ``Complete``/``Failed`` once no pod is left running.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from atoll.api import conditions as cond
from atoll.api import errors, selectors
from atoll.api.timestamps import parse_rfc3339, rfc3339
from atoll.client.controller import DONE, Builder, Controller, Result, requeue_after
from atoll.client.events import NORMAL, WARNING
from atoll.client.informer import object_key
from atoll.client.status import patch_status_if_changed
from atoll.controllers import podcontrol

log = logging.getLogger(__name__)
BACKOFF_BASE = 1.0
BACKOFF_MAX = 360.0


class JobController(Controller):
    """Jobs (primary); pods watched for their owner's expectations (generated names)."""

    name = "job"
    default_workers = 4
    backoff = (0.05, 10.0)
    events_component = "job-controller"

    def declare(self, b: Builder) -> None:
        self.expectations = podcontrol.Expectations()
        self.jobs = b.primary("batch", "v1", "jobs")
        self.pods = b.watches("", "v1", "pods", podcontrol.observe_pods(self.expectations, "Job"))

    def _pods(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            selector = selectors.label_selector_from_dict((job.get("spec") or {}).get("selector"))
        except errors.ApiError:
            return []
        return [p for p in podcontrol.controlled_by(self.pods, job)
                if selector.matches(p["metadata"].get("labels"))]

    async def reconcile(self, key: str) -> Result:
        job = self.jobs.get(key)
        if job is None:
            self.expectations.forget(key)
            return DONE
        spec, status = job.get("spec") or {}, dict(job.get("status") or {})
        conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
        pods = self._pods(job)
        active = [p for p in pods if podcontrol.is_active(p)]
        succeeded = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Succeeded")
        failed = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Failed")
        now = self.clock()
        start = parse_rfc3339(status.get("startTime")) if status.get("startTime") else None
        if cond.is_true(conditions, "Complete") or cond.is_true(conditions, "Failed"):
            return await self._after_finish(job, status)
        if start is None and not spec.get("suspend"):
            start = now
            status["startTime"] = rfc3339(now)
        completions = spec.get("completions")
        parallelism = int(spec.get("parallelism", 1) or 0)
        backoff_limit = int(spec.get("backoffLimit", 6))
        deadline = spec.get("activeDeadlineSeconds")
        failure = ""
        if failed > backoff_limit:
            failure = "BackoffLimitExceeded"
        elif isinstance(deadline, int) and start is not None and now - start >= deadline:
            failure = "DeadlineExceeded"
        done = (succeeded >= int(completions) if isinstance(completions, int)
                else succeeded > 0 and not active)
        again: float | None = None
        if failure or done:
            target = "FailureTarget" if failure else "SuccessCriteriaMet"
            if not cond.is_true(conditions, target):
                message = {"BackoffLimitExceeded": "Job has reached the specified backoff limit",
                           "DeadlineExceeded": "Job was active longer than specified deadline",
                           }.get(failure, "Reached expected number of succeeded pods")
                conditions.append(_new_condition(now, target, failure or "CompletionsReached",
                                                 message))
            if active:
                await asyncio.gather(*(podcontrol.delete_pod(self.client, p, events=self.events,
                                                             owner=job) for p in active))
            else:
                final = "Failed" if failure else "Complete"
                source = next(c for c in conditions if c["type"] == target)
                conditions.append(_new_condition(now, final, source.get("reason", ""),
                                                 source.get("message", "")))
                if not failure:
                    status["completionTime"] = rfc3339(now)
                    self.events.record(job, NORMAL, "Completed", "Job completed")
                else:
                    self.events.record(job, WARNING, failure, source.get("message", ""))
        elif not spec.get("suspend") and self.expectations.satisfied(key):
            wanted = parallelism
            if isinstance(completions, int):
                wanted = min(parallelism, completions - succeeded)
            missing = wanted - len(active)
            if missing > 0:
                delay = self._backoff(failed, pods, now)
                if delay > 0:
                    again = delay
                else:
                    await self._create(job, key, missing)
            elif missing < 0:
                doomed = sorted(active, key=podcontrol.deletion_rank)[:-missing]
                self.expectations.expect(key, dels={object_key(p) for p in doomed})
                await asyncio.gather(*(podcontrol.delete_pod(self.client, p, events=self.events,
                                                             owner=job) for p in doomed))
        if isinstance(deadline, int) and start is not None and not (failure or done):
            remaining = start + deadline - now
            again = min(again, remaining) if again is not None else remaining
        status.update({"active": len(active), "succeeded": succeeded, "failed": failed,
                       "ready": sum(1 for p in active if podcontrol.is_ready(p)),
                       "conditions": conditions or None})
        await self._write_status(job, status)
        return DONE if again is None else requeue_after(again)

    def _backoff(self, failed: int, pods: list[dict[str, Any]], now: float) -> float:
        """Seconds to wait before replacing failed pods: doubling with each failure."""
        if failed == 0:
            return 0.0
        last = max((parse_rfc3339(((p.get("status") or {}).get("containerStatuses") or [{}])[0]
                           .get("state", {}).get("terminated", {}).get("finishedAt")) or 0.0
                    for p in pods if (p.get("status") or {}).get("phase") == "Failed"),
                   default=0.0)
        wait = min(BACKOFF_BASE * 2 ** (failed - 1), BACKOFF_MAX)
        return max(0.0, last + wait - now)

    async def _create(self, job: dict[str, Any], key: str, count: int) -> None:
        self.expectations.expect(key, adds=count)
        template = (job.get("spec") or {}).get("template") or {}
        ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
        results = await asyncio.gather(
            *(podcontrol.create_pod(self.client, ns, podcontrol.pod_from_template(
                job, template, generate_name=f"{name}-"), events=self.events, owner=job)
              for _ in range(count)),
            return_exceptions=True)
        failures = [r for r in results if isinstance(r, Exception)]
        for _ in failures:
            self.expectations.created(key)
        if failures:
            raise failures[0]

    async def _after_finish(self, job: dict[str, Any], status: dict[str, Any]) -> Result:
        """A finished Job waits out ``ttlSecondsAfterFinished`` (a delayed requeue), then goes."""
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        if not isinstance(ttl, int):
            return DONE
        now = self.clock()
        finished = next((parse_rfc3339(c.get("lastTransitionTime"))
                         for c in status.get("conditions") or []
                         if c.get("type") in ("Complete", "Failed")), None) or now
        remaining = finished + ttl - now
        if remaining > 0:
            return requeue_after(remaining)
        ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
        try:
            await self.client.delete(f"/apis/batch/v1/namespaces/{ns}/jobs/{name}",
                                     {"apiVersion": "v1", "kind": "DeleteOptions",
                                      "propagationPolicy": "Background"})
        except errors.NotFound:
            pass
        return DONE

    async def _write_status(self, job: dict[str, Any], status: dict[str, Any]) -> None:
        ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
        await patch_status_if_changed(self.client, f"/apis/batch/v1/namespaces/{ns}/jobs/"
                                      f"{name}/status", job, status)


def _new_condition(now: float, type_: str, reason: str, message: str) -> dict[str, Any]:
    """A True JobCondition as of ``now`` (JobConditions carry ``lastProbeTime`` too)."""
    stamp = rfc3339(now)
    return {**cond.condition(type_, True, reason, message),
            "lastProbeTime": stamp, "lastTransitionTime": stamp}

