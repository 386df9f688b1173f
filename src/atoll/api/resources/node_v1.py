"""node.k8s.io/v1 RuntimeClass: which runtime a pod's containers run in, what that runtime
costs per pod (``overhead.podFixed``) and which nodes have it (``scheduling``).

Validation follows upstream's ``pkg/apis/node/validation``: the handler is a DNS label fixed
once created; the overhead is checked as container limits are (so its errors name
``overhead.limits[...]``, as upstream's do); the node selector as labels; the tolerations as
a pod's, without duplicates.  The RuntimeClass admission plugin
(``apiserver.admission.runtimeclass``) applies a class to the pods that name it.
"""

from __future__ import annotations

from typing import Any

from atoll.api import errors, quantity, validation
from atoll.api.printing import Cells, _age, _age_col, _name, _name_col, _str, column, printer
from atoll.api.resources.base import Kind
from atoll.api.resourcetype import builtin
from atoll.api.strategy import Strategy

RUNTIMECLASSES = builtin("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses", False)

#: the built-in class (and handler) of pod-VMs: each pod in its own QEMU microvm
POD_VM_CLASS = POD_VM_HANDLER = "atoll-vm"
#: a namespace label naming the RuntimeClass its pods get when they name none ("": none)
DEFAULT_RUNTIME_CLASS_LABEL = "atoll.dev/default-runtime-class"

#: resource names a container (and so an overhead) may name without a domain prefix
STANDARD_CONTAINER_RESOURCES = ("cpu", "memory", "ephemeral-storage")
TOLERATION_OPERATORS = ["Equal", "Exists"]
TAINT_EFFECTS = ["NoSchedule", "PreferNoSchedule", "NoExecute"]

Causes = list[errors.Cause]


def validate_overhead(overhead: Any, path: str = "overhead") -> Causes:
    """``overhead.podFixed``: quantities of container resources, none negative."""
    if overhead is None:
        return []
    if not isinstance(overhead, dict):
        return [errors.invalid_value(path, overhead, "must be an object")]
    fixed = overhead.get("podFixed")
    if fixed is None:
        return []
    if not isinstance(fixed, dict):
        return [errors.invalid_value(f"{path}.podFixed", fixed, "must be a map of quantities")]
    causes: Causes = []
    for name, raw in sorted(fixed.items()):
        field = f"{path}.limits[{name}]"
        standard = name in STANDARD_CONTAINER_RESOURCES or name.startswith("hugepages-")
        if not standard:
            problems = validation.is_qualified_name(name)
            if problems:
                causes += [errors.invalid_value(field, name, m) for m in problems]
            elif "/" not in name:
                causes.append(errors.invalid_value(field, name,
                                                   "must be a standard resource for containers"))
        try:
            amount = quantity.parse(raw)
        except (ValueError, TypeError, ArithmeticError):
            causes.append(errors.invalid_value(field, raw, "must be a quantity"))
            continue
        if amount < 0:
            causes.append(errors.invalid_value(field, raw, "must be greater than or equal to 0"))
    return causes


def validate_tolerations(tolerations: Any, path: str) -> Causes:
    """A pod's toleration rules (upstream's ValidateTolerations)."""
    if tolerations is None:
        return []
    if not isinstance(tolerations, list):
        return [errors.invalid_value(path, tolerations, "must be a list")]
    causes: Causes = []
    seen: set[tuple[Any, ...]] = set()
    for i, t in enumerate(tolerations):
        at = f"{path}[{i}]"
        if not isinstance(t, dict):
            causes.append(errors.invalid_value(at, t, "must be an object"))
            continue
        key, op, value, effect = (t.get("key") or "", t.get("operator") or "",
                                  t.get("value") or "", t.get("effect") or "")
        if key:
            causes += [errors.invalid_value(f"{at}.key", key, m)
                       for m in validation.is_qualified_name(str(key))]
        if not key and op != "Exists":
            causes.append(errors.invalid_value(
                f"{at}.operator", op, "operator must be Exists when `key` is empty, which means "
                                      "\"match all values and all keys\""))
        if t.get("tolerationSeconds") is not None and effect != "NoExecute":
            causes.append(errors.invalid_value(
                f"{at}.effect", effect, "effect must be 'NoExecute' when `tolerationSeconds` "
                                        "is set"))
        if op in ("Equal", ""):
            problems = validation.is_valid_label_value(str(value))
            if problems:
                causes.append(errors.invalid_value(f"{at}.operator", value, ";".join(problems)))
        elif op == "Exists":
            if value:
                causes.append(errors.invalid_value(f"{at}.operator", t,
                                                   "value must be empty when `operator` is "
                                                   "'Exists'"))
        else:
            causes.append(errors.not_supported(f"{at}.operator", op, TOLERATION_OPERATORS))
        if effect and effect not in TAINT_EFFECTS:
            causes.append(errors.not_supported(f"{at}.effect", effect, TAINT_EFFECTS))
        list_key = (key, op, value, effect)
        if list_key in seen:
            causes.append(errors.Cause("FieldValueDuplicate", f"Duplicate value: {t}", at))
        seen.add(list_key)
    return causes


class RuntimeClassStrategy(Strategy):
    """ValidateRuntimeClass(+Update): a DNS-label handler that never changes."""

    def validate(self, rt, obj):  # type: ignore[no-untyped-def]
        handler = obj.get("handler")
        causes: Causes = []
        if not isinstance(handler, str):
            handler = "" if handler is None else handler
        causes += [errors.invalid_value("handler", handler, m)
                   for m in validation.is_dns1123_label(str(handler))]
        causes += validate_overhead(obj.get("overhead"))
        scheduling = obj.get("scheduling")
        if scheduling is not None:
            if not isinstance(scheduling, dict):
                return causes + [errors.invalid_value("scheduling", scheduling,
                                                      "must be an object")]
            if scheduling.get("nodeSelector") is not None:
                causes += validation.validate_labels(scheduling["nodeSelector"],
                                                     "scheduling.nodeSelector")
            causes += validate_tolerations(scheduling.get("tolerations"),
                                           "scheduling.tolerations")
        return causes

    def validate_transition(self, rt, old, new):  # type: ignore[no-untyped-def]
        if old.get("handler") != new.get("handler"):
            return [errors.invalid_value("handler", new.get("handler"),
                                         validation.FIELD_IMMUTABLE)]
        return []


@printer(columns=[
    _name_col(),
    column("Handler", description="handler specifies the underlying runtime and configuration "
                                  "that the CRI implementation will use to handle pods of this "
                                  "class. The possible values are specific to the node & CRI "
                                  "configuration.  It is assumed that all handlers are available "
                                  "on every node, and handlers of the same name are equivalent "
                                  "on every node. For example, a handler called \"runc\" might "
                                  "specify that the runc OCI runtime (using native Linux "
                                  "containers) will be used to run the containers in a pod. The "
                                  "Handler must be lowercase, conform to the DNS Label (RFC "
                                  "1123) requirements, and is immutable."),
    _age_col(),
])
def _runtime_class_row(obj: dict[str, Any], now: float) -> Cells:
    return [_name(obj), _str(obj.get("handler")), _age(obj, now)]


def handler_of(runtime_class: dict[str, Any] | None) -> str:
    """The class's handler ("" for none)."""
    handler = (runtime_class or {}).get("handler")
    return handler if isinstance(handler, str) else ""


RUNTIMECLASS = Kind(RUNTIMECLASSES, RuntimeClassStrategy(), printer=_runtime_class_row)
