"""RuntimeClass admission: a pod that names a RuntimeClass gets what the class says.

Two plugins, in this order in the chain:

- ``DefaultRuntimeClass`` (Atoll's): a pod created without ``spec.runtimeClassName`` gets its
  namespace's default class, the value of the namespace label
  ``atoll.dev/default-runtime-class`` (``atoll namespace create --pod-vms`` sets it to
  ``atoll-vm``), or else the platform's (``atoll server --default-runtime-class``) in every
  namespace but the system ones.  The label set to "" opts a namespace out.
- ``RuntimeClassAdmission``, upstream's ``RuntimeClass`` plugin: the class must exist (403
  ``pod rejected: RuntimeClass "x" not found``); its ``overhead.podFixed`` becomes the pod's
  ``spec.overhead`` (a pod that brings a different overhead is refused, and so is one that
  brings an overhead its class does not define, or without a class); its
  ``scheduling.nodeSelector`` is merged into the pod's (a different value for the same key is
  refused) and its tolerations are merged into the pod's, dropping those another covers.

Both act on pod creation only, as upstream's plugin: a pod's class and overhead never change.
"""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

from atoll.api import errors, quantity
from atoll.api.resources.core_v1 import NAMESPACES
from atoll.api.resources.node_v1 import DEFAULT_RUNTIME_CLASS_LABEL, RUNTIMECLASSES
from atoll.api.resourcetype import ResourceType
from atoll.api.strategy import ObjectReader, WriteOptions
from atoll.apiserver.admission import BasePlugin

#: namespaces the platform's default class never applies to (the cluster's own workloads)
SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})


def _is_pod(rt: ResourceType) -> bool:
    return not rt.group and rt.plural == "pods"


def forbidden(obj: dict[str, Any], text: str) -> errors.Forbidden:
    """admission.NewForbidden for a pod: ``pods "name" is forbidden: text``."""
    meta = obj.get("metadata") or {}
    name = meta.get("name") or meta.get("generateName") or ""
    return errors.Forbidden(f'pods "{name}" is forbidden: {text}', name=name, kind="pods")


def runtime_class_for(svc: ObjectReader, spec: dict[str, Any]) -> dict[str, Any] | None:
    """The RuntimeClass ``spec`` names, if it names one and it exists."""
    name = spec.get("runtimeClassName")
    if not isinstance(name, str) or not name:
        return None
    stored = svc.read(RUNTIMECLASSES, "", name)
    return stored.obj if stored is not None else None


class DefaultRuntimeClass(BasePlugin):
    def __init__(self, platform_default: str = "") -> None:
        self.platform_default = platform_default

    def mutate_create(self, svc: ObjectReader, rt: ResourceType, obj: dict[str, Any],
                      opts: WriteOptions) -> None:
        spec = obj.get("spec")
        if not _is_pod(rt) or not isinstance(spec, dict) or \
                spec.get("runtimeClassName") is not None:
            return
        name = self.default_for(svc, obj["metadata"].get("namespace", ""))
        if name:
            spec["runtimeClassName"] = name

    def default_for(self, svc: ObjectReader, namespace: str) -> str:
        stored = svc.read(NAMESPACES, "", namespace) if namespace else None
        labels = ((stored.obj.get("metadata") or {}).get("labels") or {}) if stored else {}
        if isinstance(labels, dict) and isinstance(labels.get(DEFAULT_RUNTIME_CLASS_LABEL), str):
            return labels[DEFAULT_RUNTIME_CLASS_LABEL]
        if namespace in SYSTEM_NAMESPACES:
            return ""
        return self.platform_default


class RuntimeClassAdmission(BasePlugin):
    def mutate_create(self, svc: ObjectReader, rt: ResourceType, obj: dict[str, Any],
                      opts: WriteOptions) -> None:
        spec = obj.get("spec")
        if not _is_pod(rt) or not isinstance(spec, dict):
            return
        klass = self._class(svc, obj, spec)
        if klass is None:
            return
        overhead = klass.get("overhead")
        if isinstance(overhead, dict):
            fixed = overhead.get("podFixed")
            if spec.get("overhead") and not same_resources(fixed, spec.get("overhead")):
                raise forbidden(obj, "pod rejected: Pod's Overhead doesn't match RuntimeClass's "
                                     "defined Overhead")
            if isinstance(fixed, dict):
                spec["overhead"] = copy.deepcopy(fixed)
            else:
                spec.pop("overhead", None)
        scheduling = klass.get("scheduling")
        if isinstance(scheduling, dict):
            merge_scheduling(obj, spec, scheduling)

    def validate_create(self, svc: ObjectReader, rt: ResourceType, obj: dict[str, Any],
                        opts: WriteOptions) -> None:
        spec = obj.get("spec")
        if not _is_pod(rt) or not isinstance(spec, dict) or not spec.get("overhead"):
            return
        klass = self._class(svc, obj, spec)
        overhead = klass.get("overhead") if klass is not None else None
        if not isinstance(overhead, dict):
            raise forbidden(obj, "pod rejected: Pod Overhead set without corresponding "
                                 "RuntimeClass defined Overhead")
        if not same_resources(overhead.get("podFixed"), spec.get("overhead")):
            raise forbidden(obj, "pod rejected: Pod's Overhead doesn't match RuntimeClass's "
                                 "defined Overhead")

    @staticmethod
    def _class(svc: ObjectReader, obj: dict[str, Any],
               spec: dict[str, Any]) -> dict[str, Any] | None:
        name = spec.get("runtimeClassName")
        if name is None:
            return None
        stored = svc.read(RUNTIMECLASSES, "", name) if isinstance(name, str) and name else None
        if stored is None:
            raise forbidden(obj, f"pod rejected: RuntimeClass {_go_quote(name)} not found")
        return stored.obj


def merge_scheduling(obj: dict[str, Any], spec: dict[str, Any],
                     scheduling: dict[str, Any]) -> None:
    selector = scheduling.get("nodeSelector")
    if isinstance(selector, dict) and selector:
        pod_selector = spec.get("nodeSelector")
        if not isinstance(pod_selector, dict):
            spec["nodeSelector"] = dict(selector)
        else:
            for key, value in selector.items():
                if key in pod_selector and pod_selector[key] != value:
                    raise forbidden(obj, f"conflict: runtimeClass.scheduling.nodeSelector[{key}]"
                                         f" = {value}; pod.spec.nodeSelector[{key}] = "
                                         f"{pod_selector[key]}")
                pod_selector[key] = value
    theirs = scheduling.get("tolerations")
    mine = spec.get("tolerations")
    merged = merge_tolerations(mine if isinstance(mine, list) else [],
                               theirs if isinstance(theirs, list) else [])
    if merged or isinstance(mine, list):
        spec["tolerations"] = merged


# -- upstream's pkg/util/tolerations -----------------------------------------------------------
def _toleration(t: Any) -> dict[str, Any]:
    """A toleration with Go's zero values for what it leaves out (so equal ones compare so)."""
    t = t if isinstance(t, dict) else {}
    return {"key": t.get("key") or "", "operator": t.get("operator") or "",
            "value": t.get("value") or "", "effect": t.get("effect") or "",
            "tolerationSeconds": t.get("tolerationSeconds")}


def is_superset(ss: dict[str, Any], t: dict[str, Any]) -> bool:
    """Whether toleration ``ss`` tolerates every taint ``t`` does."""
    a, b = _toleration(ss), _toleration(t)
    if a == b:
        return True
    if b["key"] != a["key"] and (a["key"] != "" or a["operator"] != "Exists"):
        return False
    if b["effect"] != a["effect"] and a["effect"] != "":
        return False
    if a["effect"] == "NoExecute" and a["tolerationSeconds"] is not None:
        if b["tolerationSeconds"] is None or b["tolerationSeconds"] > a["tolerationSeconds"]:
            return False
    if a["operator"] in ("Equal", ""):
        return b["operator"] == "Equal" and b["value"] == a["value"]
    return a["operator"] == "Exists"


def merge_tolerations(first: list[Any], second: list[Any]) -> list[Any]:
    """Both lists, in order, without a toleration another one covers (equal ones: the first)."""
    every = list(first) + list(second)
    merged: list[Any] = []
    for i, t in enumerate(every):
        if any(is_superset(kept, t) for kept in merged):
            continue
        if any(_toleration(t) != _toleration(later) and is_superset(later, t)
               for later in every[i + 1:]):
            continue
        merged.append(t)
    return merged


def same_resources(a: Any, b: Any) -> bool:
    """Two resource lists equal by value (``100m`` is ``0.1``), as Semantic.DeepEqual."""
    left, right = _parsed(a), _parsed(b)
    return left is not None and left == right


def _parsed(values: Any) -> dict[str, Decimal] | None:
    if values is None:
        return {}
    if not isinstance(values, dict):
        return None
    out: dict[str, Decimal] = {}
    for name, raw in values.items():
        try:
            out[str(name)] = quantity.parse(raw)
        except (ValueError, TypeError, ArithmeticError):
            return None
    return out


def _go_quote(value: Any) -> str:
    """Go's %q of a string."""
    return json.dumps(value if isinstance(value, str) else str(value))
