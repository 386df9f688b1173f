"""batch/v1: jobs and cron jobs."""

from __future__ import annotations

from typing import Any

from atoll.api import errors
from atoll.api.labelselector import format_label_selector
from atoll.api.printing import (_WORKLOAD_WIDE, Cells, _age, _age_col, _containers_cells,
                                _deleting, _dict, _get, _has_condition, _int, _name, _name_col,
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
CRONJOB = Kind(CRONJOBS)
