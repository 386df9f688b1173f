"""batch/v1: jobs and cron jobs."""

from __future__ import annotations

from typing import Any

from atoll.api import cron, errors
from atoll.api.labelselector import format_label_selector
from atoll.api.printing import (_WORKLOAD_WIDE, Cells, _age, _age_col, _containers_cells,
                                _deleting, _dict, _get, _has_condition, _int, _list, _name,
                                _name_col, _str,
                                _wide, column, human_duration, printer)
from atoll.api.resources.base import Kind, field_int
from atoll.api.resources.core_v1_pods import _validate_containers, default_pod_spec
from atoll.api.resourcetype import STATUS, builtin
from atoll.api.strategy import Strategy
from atoll.api.timestamps import parse_rfc3339

JOBS = builtin("batch", "v1", "Job", "jobs", True, categories=("all",), subresources=(STATUS,))
CRONJOBS = builtin("batch", "v1", "CronJob", "cronjobs", True, short_names=("cj",),
                   categories=("all",), subresources=(STATUS,))


class JobStrategy(Strategy):
    def prepare_create(self, svc, rt, obj, opts):  # type: ignore[no-untyped-def]
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return
        spec.setdefault("parallelism", 1)
        spec.setdefault("completions", 1)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        uid = obj["metadata"]["uid"]
        tmpl = spec.get("template")
        if isinstance(tmpl, dict) and not spec.get("manualSelector"):
            labels = {"batch.kubernetes.io/controller-uid": uid, "controller-uid": uid,
                      "batch.kubernetes.io/job-name": obj["metadata"].get("name", ""),
                      "job-name": obj["metadata"].get("name", "")}
            tmeta = tmpl.setdefault("metadata", {})
            if isinstance(tmeta, dict):
                tmeta["labels"] = {**(tmeta.get("labels") or {}), **labels}
            spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        if isinstance(tmpl, dict) and isinstance(tmpl.get("spec"), dict):
            tmpl["spec"].setdefault("restartPolicy", "Never")
            default_pod_spec(tmpl["spec"])
        obj.setdefault("status", {})

    def validate(self, rt, obj):  # type: ignore[no-untyped-def]
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return [errors.required("spec")]
        tmpl = spec.get("template")
        if not isinstance(tmpl, dict) or not isinstance(tmpl.get("spec"), dict):
            return [errors.required("spec.template")]
        causes = _validate_containers(tmpl["spec"].get("containers"),
                                      "spec.template.spec.containers", required=True)
        if tmpl["spec"].get("restartPolicy") not in ("Never", "OnFailure"):
            causes.append(errors.not_supported("spec.template.spec.restartPolicy",
                                               tmpl["spec"].get("restartPolicy"),
                                               ["OnFailure", "Never"]))
        return causes

    @property
    def default_propagation(self) -> str:  # type: ignore[override]
        return "Background"


@printer(columns=[
    _name_col(), column("Status", description="Status of the job."),
    column("Completions", description="The number of pods which reached phase Succeeded."),
    column("Duration", description="Time required to complete the job."),
    _age_col(), *_WORKLOAD_WIDE,
    _wide("Selector", "A label query over pods that should match the pod count."),
])
def _job(obj: dict[str, Any], now: float) -> Cells:
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    succeeded = _int(status.get("succeeded"))
    if isinstance(spec.get("completions"), int):
        completions = f"{succeeded}/{spec['completions']}"
    elif _int(spec.get("parallelism")) > 1:
        completions = f"{succeeded}/1 of {_int(spec.get('parallelism'))}"
    else:
        completions = f"{succeeded}/1"
    start, end = parse_rfc3339(status.get("startTime")), parse_rfc3339(status.get("completionTime"))
    duration = "" if start is None else human_duration((end if end is not None else now) - start)
    return [_name(obj), _job_status(obj), completions, duration, _age(obj, now),
            *_containers_cells(obj), format_label_selector(spec.get("selector"))]


def _job_status(obj: dict[str, Any]) -> str:
    status = _dict(obj.get("status"))
    for cond, text in (("Complete", "Complete"), ("Failed", "Failed")):
        if _has_condition(status, cond):
            return text
    if _deleting(obj):
        return "Terminating"
    for cond in ("Suspended", "FailureTarget", "SuccessCriteriaMet"):
        if _has_condition(status, cond):
            return cond
    return "Running"


JOB = Kind(JOBS, JobStrategy(), _job,
           lambda o: {"status.successful": field_int(_get(o, "status", "succeeded"))})
class CronJobStrategy(Strategy):
    """Defaults and checks of upstream's CronJob: a schedule cronsim can read, a real time
    zone, and a Job template that would itself be valid."""

    def prepare_create(self, svc, rt, obj, opts):  # type: ignore[no-untyped-def]
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return
        spec.setdefault("concurrencyPolicy", "Allow")
        spec.setdefault("suspend", False)
        spec.setdefault("successfulJobsHistoryLimit", 3)
        spec.setdefault("failedJobsHistoryLimit", 1)
        tmpl = _dict(_dict(spec.get("jobTemplate")).get("spec")).get("template")
        if isinstance(tmpl, dict) and isinstance(tmpl.get("spec"), dict):
            tmpl["spec"].setdefault("restartPolicy", "Never")  # as for Jobs
            default_pod_spec(tmpl["spec"])
        obj.setdefault("status", {})

    def prepare_update(self, rt, old, new, subresource=""):  # type: ignore[no-untyped-def]
        spec = new.get("spec")
        if isinstance(spec, dict):
            for k, v in (("concurrencyPolicy", "Allow"), ("suspend", False),
                         ("successfulJobsHistoryLimit", 3), ("failedJobsHistoryLimit", 1)):
                spec.setdefault(k, v)

    def validate(self, rt, obj):  # type: ignore[no-untyped-def]
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return [errors.required("spec")]
        causes = []
        name = _str(obj["metadata"].get("name"))
        if len(name) > 52:  # the Job's name adds "-" and 11 digits of minutes
            causes.append(errors.invalid_value("metadata.name", name,
                                               "must be no more than 52 characters"))
        problem = cron.schedule_error(spec.get("schedule"))
        if problem == "schedule is required":
            causes.append(errors.required("spec.schedule"))
        elif problem:
            causes.append(errors.invalid_value("spec.schedule", spec.get("schedule"), problem))
        tz = spec.get("timeZone")
        if tz is not None and cron.zone(tz) is None:
            causes.append(errors.invalid_value("spec.timeZone", tz, "unknown time zone " +
                                               _str(tz)))
        if spec.get("concurrencyPolicy") not in ("Allow", "Forbid", "Replace"):
            causes.append(errors.not_supported("spec.concurrencyPolicy",
                                               spec.get("concurrencyPolicy"),
                                               ["Allow", "Forbid", "Replace"]))
        for field_ in ("startingDeadlineSeconds", "successfulJobsHistoryLimit",
                       "failedJobsHistoryLimit"):
            v = spec.get(field_)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                causes.append(errors.invalid_value(f"spec.{field_}", v,
                                                   "must be greater than or equal to 0"))
        job_spec = _dict(spec.get("jobTemplate")).get("spec")
        tmpl = _dict(job_spec).get("template")
        if not isinstance(tmpl, dict) or not isinstance(tmpl.get("spec"), dict):
            causes.append(errors.required("spec.jobTemplate.spec.template"))
            return causes
        causes += _validate_containers(tmpl["spec"].get("containers"),
                                       "spec.jobTemplate.spec.template.spec.containers",
                                       required=True)
        if tmpl["spec"].get("restartPolicy") not in ("Never", "OnFailure"):
            causes.append(errors.not_supported("spec.jobTemplate.spec.template.spec.restartPolicy",
                                               tmpl["spec"].get("restartPolicy"),
                                               ["OnFailure", "Never"]))
        return causes


@printer(columns=[
    _name_col(), column("Schedule", description="The schedule in Cron format."),
    column("Timezone", description="The time zone name for the given schedule."),
    column("Suspend", "boolean", "This flag tells the controller to suspend subsequent "
                                 "executions."),
    column("Active", "integer", "A list of pointers to currently running jobs."),
    column("Last Schedule", description="Information when was the last time the job was "
                                        "successfully scheduled."),
    _age_col(),
    _wide("Containers", "Names of each container in the template."),
    _wide("Images", "Images referenced by each container in the template."),
    _wide("Selector", "A label query over pods that should match the pod count."),
])
def _cronjob(obj: dict[str, Any], now: float) -> Cells:
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    last = parse_rfc3339(status.get("lastScheduleTime"))
    job_spec = _dict(_dict(spec.get("jobTemplate")).get("spec"))
    containers = [c for c in _list(_get(job_spec, "template", "spec", "containers"))
                  if isinstance(c, dict)]
    return [_name(obj), _str(spec.get("schedule")), _str(spec.get("timeZone")) or "<none>",
            bool(spec.get("suspend")), len(_list(status.get("active"))),
            "<none>" if last is None else human_duration(now - last), _age(obj, now),
            ",".join(_str(c.get("name")) for c in containers),
            ",".join(_str(c.get("image")) for c in containers),
            format_label_selector(job_spec.get("selector")) or "<none>"]


CRONJOB = Kind(CRONJOBS, CronJobStrategy(), _cronjob)
