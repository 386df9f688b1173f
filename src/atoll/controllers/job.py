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
import datetime as dt
import logging
import time
from typing import Any

from atoll.api import errors, selectors
from atoll.client.informer import Informer, object_key
from atoll.client.rest import ApiClient
from atoll.client.workqueue import WorkQueue
from atoll.controllers import podcontrol
from atoll.controllers.runner import run_workers

log = logging.getLogger(__name__)
BACKOFF_BASE = 1.0
BACKOFF_MAX = 360.0


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _parse(value: Any) -> float | None:
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class JobController:
    name = "job"

    def __init__(self, client: ApiClient, *, workers: int = 4, pods: Informer | None = None) -> None:
        self.client = client
        self.workers = workers
        self.jobs = Informer(client, "batch", "v1", "jobs")
        self.pods = pods or Informer(client, "", "v1", "pods")
        self._own_pods = pods is None
        self.queue: WorkQueue[str] = WorkQueue(base_delay=0.05, max_delay=10.0)
        self.expectations = podcontrol.Expectations()
        self.jobs.add_handler(lambda kind, obj, old: self.queue.add(object_key(obj)))
        self.pods.add_handler(self._on_pod)

    def _on_pod(self, kind: str, pod: dict[str, Any], old: dict[str, Any] | None) -> None:
        ref = podcontrol.controller_ref(pod)
        if ref is None or ref.get("kind") != "Job":
            return
        key = f"{pod['metadata'].get('namespace')}/{ref.get('name')}"
        if kind == "ADDED":
            self.expectations.created(key)
        if kind == "DELETED" or pod["metadata"].get("deletionTimestamp"):
            self.expectations.deleted(key, object_key(pod))
        self.queue.add(key)

    async def run(self) -> None:
        tasks = [asyncio.create_task(self.jobs.run())]
        if self._own_pods:
            tasks.append(asyncio.create_task(self.pods.run()))
        await asyncio.gather(self.jobs.synced.wait(), self.pods.synced.wait())
        await asyncio.gather(*tasks, run_workers(self.name, self.queue, self.reconcile,
                                                 self.workers))

    def _pods(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        uid, ns = job["metadata"]["uid"], job["metadata"]["namespace"]
        try:
            selector = selectors.label_selector_from_dict((job.get("spec") or {}).get("selector"))
        except errors.ApiError:
            return []
        return [p for p in self.pods.list()
                if p["metadata"].get("namespace") == ns
                and (podcontrol.controller_ref(p) or {}).get("uid") == uid
                and selector.matches(p["metadata"].get("labels"))]

    async def reconcile(self, key: str) -> float | None:
        job = self.jobs.get(key)
        if job is None:
            self.expectations.forget(key)
            return None
        spec, status = job.get("spec") or {}, dict(job.get("status") or {})
        conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
        pods = self._pods(job)
        active = [p for p in pods if podcontrol.is_active(p)]
        succeeded = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Succeeded")
        failed = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Failed")
        now = time.time()
        start = _parse(status.get("startTime")) if status.get("startTime") else None
        finished = _condition(conditions, "Complete") or _condition(conditions, "Failed")
        if finished:
            return await self._after_finish(job, status)
        if start is None and not spec.get("suspend"):
            start = now
            status["startTime"] = _now()
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
            if not _condition(conditions, target):
                message = {"BackoffLimitExceeded": "Job has reached the specified backoff limit",
                           "DeadlineExceeded": "Job was active longer than specified deadline",
                           }.get(failure, "Reached expected number of succeeded pods")
                conditions.append(_new_condition(target, failure or "CompletionsReached",
                                                 message))
            if active:
                await asyncio.gather(*(podcontrol.delete_pod(self.client, p) for p in active))
            else:
                final = "Failed" if failure else "Complete"
                source = next(c for c in conditions if c["type"] == target)
                conditions.append(_new_condition(final, source.get("reason", ""),
                                                 source.get("message", "")))
                if not failure:
                    status["completionTime"] = _now()
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
                await asyncio.gather(*(podcontrol.delete_pod(self.client, p) for p in doomed))
        if isinstance(deadline, int) and start is not None and not (failure or done):
            remaining = start + deadline - now
            again = min(again, remaining) if again is not None else remaining
        status.update({"active": len(active), "succeeded": succeeded, "failed": failed,
                       "ready": sum(1 for p in active if podcontrol.is_ready(p)),
                       "conditions": conditions or None})
        await self._write_status(job, status)
        return again

    def _backoff(self, failed: int, pods: list[dict[str, Any]], now: float) -> float:
        """Seconds to wait before replacing failed pods: doubling with each failure."""
        if failed == 0:
            return 0.0
        last = max((_parse(((p.get("status") or {}).get("containerStatuses") or [{}])[0]
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
                job, template, generate_name=f"{name}-")) for _ in range(count)),
            return_exceptions=True)
        failures = [r for r in results if isinstance(r, Exception)]
        for _ in failures:
            self.expectations.created(key)
        if failures:
            raise failures[0]

    async def _after_finish(self, job: dict[str, Any], status: dict[str, Any]) -> float | None:
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        if not isinstance(ttl, int):
            return None
        finished = next((_parse(c.get("lastTransitionTime")) for c in status.get("conditions")
                         or [] if c.get("type") in ("Complete", "Failed")), None) or time.time()
        remaining = finished + ttl - time.time()
        if remaining > 0:
            return remaining
        ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
        try:
            await self.client.delete(f"/apis/batch/v1/namespaces/{ns}/jobs/{name}",
                                     {"apiVersion": "v1", "kind": "DeleteOptions",
                                      "propagationPolicy": "Background"})
        except errors.NotFound:
            pass
        return None

    async def _write_status(self, job: dict[str, Any], status: dict[str, Any]) -> None:
        current = job.get("status") or {}
        if all(current.get(k) == v for k, v in status.items() if v is not None) and \
                not any(k in current for k, v in status.items() if v is None):
            return
        ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
        try:
            await self.client.patch(f"/apis/batch/v1/namespaces/{ns}/jobs/{name}/status",
                                    {"status": status})
        except errors.NotFound:
            pass


def _condition(conditions: list[dict[str, Any]], type_: str) -> bool:
    return any(c.get("type") == type_ and c.get("status") == "True" for c in conditions)


def _new_condition(type_: str, reason: str, message: str) -> dict[str, Any]:
    now = _now()
    return {"type": type_, "status": "True", "reason": reason, "message": message,
            "lastProbeTime": now, "lastTransitionTime": now}

