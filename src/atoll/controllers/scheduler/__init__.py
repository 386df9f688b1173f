"""The pod scheduler: pending pods are assigned a node, as kube-scheduler assigns them.

Modules, from the object to the decision to the API:
``controllers.capacity`` (quantities as integers, requests, allocatable, fits; shared with VM
placement), ``podinfo`` (a pod's constraints, parsed
once), ``cache`` (per-node allocatable and what bound or assumed pods take),
``filters`` and ``scoring`` (upstream's default plugins as functions),
``algorithm`` (one decision: filter a sample of nodes, score, pick), ``queue``
(active, back-off, unschedulable), ``events`` (bounded, fire-and-forget Events)
and ``scheduler`` (the controller: informers, the loop, bindings, status).
"""

from atoll.controllers.scheduler.scheduler import Scheduler, SchedulerConfig

__all__ = ["Scheduler", "SchedulerConfig"]
