"""LimitRange admission: default requests and limits, then minimums, maximums and ratios.

As upstream's LimitRanger: containers that do not say how much they need get
the namespace's ``defaultRequest``/``default`` (so a compute quota can count
them); then every container, pod and claim is checked against ``min``, ``max``
and ``maxLimitRequestRatio``.  A breach is a 403 naming the bound.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from atoll.api import errors, quantity
from atoll.api.resources.core_v1 import LIMITRANGES
from atoll.api.resourcetype import ResourceType
from atoll.api.strategy import ObjectReader, WriteOptions
from atoll.apiserver.admission import BasePlugin


def _limits(svc: ObjectReader, namespace: str, kind: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if not namespace:
        return out
    for cached in svc.read_list(LIMITRANGES, namespace):
        for item in (cached.obj.get("spec") or {}).get("limits") or []:
            if isinstance(item, dict) and item.get("type") == kind:
                out.append(item)
    return out


def _q(value: Any) -> Decimal | None:
    try:
        return quantity.parse(value)
    except (ValueError, TypeError, ArithmeticError):
        return None


class LimitRanger(BasePlugin):
    def mutate_create(self, svc: ObjectReader, rt: ResourceType, obj: dict[str, Any],
                      opts: WriteOptions) -> None:
        if rt.group or rt.plural != "pods":
            return
        ranges = _limits(svc, obj["metadata"].get("namespace", ""), "Container")
        if not ranges:
            return
        spec = obj.get("spec") or {}
        for c in list(spec.get("initContainers") or []) + list(spec.get("containers") or []):
            if not isinstance(c, dict):
                continue
            res = c.get("resources")
            if not isinstance(res, dict):
                res = c["resources"] = {}
            for lr in ranges:
                default = lr.get("default") or {}
                default_request = dict(default)
                default_request.update(lr.get("defaultRequest") or {})
                user_limits = dict(res.get("limits") or {}) if isinstance(res.get("limits"), dict) else {}
                limits = dict(user_limits)
                requests = dict(res.get("requests") or {}) \
                    if isinstance(res.get("requests"), dict) else {}
                for name, value in default.items():
                    limits.setdefault(name, value)
                for name, value in default_request.items():
                    # a container that set only a limit asks for that limit (API defaulting)
                    requests.setdefault(name, user_limits.get(name, value))
                if limits:
                    res["limits"] = limits
                if requests:
                    res["requests"] = requests

    def validate_create(self, svc: ObjectReader, rt: ResourceType, obj: dict[str, Any],
                        opts: WriteOptions) -> None:
        namespace = obj["metadata"].get("namespace", "")
        name = obj["metadata"].get("name", "")
        if not rt.group and rt.plural == "pods":
            spec = obj.get("spec") or {}
            containers = [c for c in list(spec.get("initContainers") or []) +
                          list(spec.get("containers") or []) if isinstance(c, dict)]
            for lr in _limits(svc, namespace, "Container"):
                for c in containers:
                    res = c.get("resources") or {}
                    self._check(rt, name, lr, res.get("requests") or {}, res.get("limits") or {},
                                "Container")
            pod_ranges = _limits(svc, namespace, "Pod")
            if pod_ranges:
                requests: dict[str, Decimal] = {}
                limits: dict[str, Decimal] = {}
                for c in spec.get("containers") or []:
                    res = c.get("resources") or {} if isinstance(c, dict) else {}
                    for target, src in ((requests, res.get("requests") or {}),
                                        (limits, res.get("limits") or {})):
                        for k, v in src.items():
                            target[k] = target.get(k, Decimal(0)) + (_q(v) or Decimal(0))
                for lr in pod_ranges:
                    self._check(rt, name, lr, requests, limits, "Pod")
        elif not rt.group and rt.plural == "persistentvolumeclaims":
            storage = (((obj.get("spec") or {}).get("resources") or {}).get("requests") or {})
            for lr in _limits(svc, namespace, "PersistentVolumeClaim"):
                self._check(rt, name, lr, storage, {}, "PersistentVolumeClaim")

    @staticmethod
    def _check(rt: ResourceType, name: str, lr: dict[str, Any], requests: dict[str, Any],
               limits: dict[str, Any], scope: str) -> None:
        def refuse(text: str) -> None:
            raise errors.Forbidden(f'{rt.plural} "{name}" is forbidden: {text}', name=name,
                                   kind=rt.plural)

        for res, bound in (lr.get("min") or {}).items():
            low = _q(bound)
            req = _q(requests.get(res)) if res in requests else None
            if low is None:
                continue
            if req is None:
                refuse(f"minimum {res} usage per {scope} is {bound}.  No request is specified")
            elif req < low:
                refuse(f"minimum {res} usage per {scope} is {bound}, but request is "
                       f"{requests[res]}")
        for res, bound in (lr.get("max") or {}).items():
            high = _q(bound)
            if high is None:
                continue
            value = limits.get(res) if scope != "PersistentVolumeClaim" else requests.get(res)
            if value is None:
                refuse(f"maximum {res} usage per {scope} is {bound}.  No limit is specified")
            elif (_q(value) or Decimal(0)) > high:
                what = "limit" if scope != "PersistentVolumeClaim" else "request"
                refuse(f"maximum {res} usage per {scope} is {bound}, but {what} is {value}")
        for res, bound in (lr.get("maxLimitRequestRatio") or {}).items():
            ratio = _q(bound)
            lim, req = _q(limits.get(res)), _q(requests.get(res))
            if ratio is None or lim is None:
                continue
            if not req:
                refuse(f"{res} max limit to request ratio per {scope} is {bound}, but no request "
                       "is specified or request is 0")
            elif lim / req > ratio:
                refuse(f"{res} max limit to request ratio per {scope} is {bound}, but provided "
                       f"ratio is {float(lim / req):.6f}")
