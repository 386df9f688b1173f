"""``pods/ephemeralcontainers``: the one way to add a debug container to a running pod.

As upstream's ephemeral-containers strategy: an update through the subresource changes
only ``spec.ephemeralContainers`` (everything else is taken from the stored pod), and is
validated as ``ValidatePodEphemeralContainersUpdate`` does: names unique across every
container of the pod, none of the fields a debug container cannot have (ports, probes,
resources, lifecycle, restartPolicy, subPath mounts), ``targetContainerName`` naming a
container or init container, and entries, once added, never removed or changed.
"""

from __future__ import annotations

import copy
from typing import Any

from atoll.api import errors, validation

PATH = "spec.ephemeralContainers"
#: fields an ephemeral container may not set (upstream's list in ValidateEphemeralContainers)
FORBIDDEN_FIELDS = ("lifecycle", "livenessProbe", "readinessProbe", "startupProbe", "ports",
                    "resources", "resizePolicy", "restartPolicy")


def merged(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The stored pod with the update's ephemeral containers (and its resourceVersion, for
    the optimistic-concurrency check), nothing else of the update."""
    pod = copy.deepcopy(old)
    new_meta = new.get("metadata") if isinstance(new.get("metadata"), dict) else {}
    if "resourceVersion" in new_meta:
        pod["metadata"]["resourceVersion"] = new_meta["resourceVersion"]
    spec = new.get("spec") if isinstance(new.get("spec"), dict) else {}
    ephemeral = spec.get("ephemeralContainers")
    pod.setdefault("spec", {})
    if ephemeral is None:
        pod["spec"].pop("ephemeralContainers", None)
    else:
        pod["spec"]["ephemeralContainers"] = ephemeral
    return pod


def validate_update(old: dict[str, Any], new: dict[str, Any]) -> list[errors.Cause]:
    """Causes that make an update of the ephemeral containers invalid (new is ``merged``)."""
    old_spec = old.get("spec") if isinstance(old.get("spec"), dict) else {}
    spec = new.get("spec") if isinstance(new.get("spec"), dict) else {}
    ephemeral = spec.get("ephemeralContainers")
    if ephemeral is None:
        ephemeral = []
    if not isinstance(ephemeral, list):
        return [errors.Cause("FieldValueTypeInvalid", "Invalid value: must be a list", PATH)]
    causes = validate_containers(spec, ephemeral)
    by_name = {c.get("name"): c for c in ephemeral if isinstance(c, dict)}
    for before in old_spec.get("ephemeralContainers") or []:
        if not isinstance(before, dict):
            continue
        name = before.get("name")
        after = by_name.get(name)
        if after is None:
            causes.append(errors.forbidden_field(
                PATH, f'existing ephemeral containers "{name}" may not be removed'))
        elif _norm(before) != _norm(after):
            causes.append(errors.forbidden_field(
                f"{PATH}[{name}]", f'existing ephemeral containers "{name}" may not be changed'))
    return causes


def validate_containers(spec: dict[str, Any], ephemeral: list[Any]) -> list[errors.Cause]:
    """The rules for each ephemeral container against the rest of the pod."""
    others = {c.get("name") for key in ("containers", "initContainers")
              for c in spec.get(key) or [] if isinstance(c, dict)}
    causes: list[errors.Cause] = []
    taken = {str(n) for n in others if n}
    for i, c in enumerate(ephemeral):
        p = f"{PATH}[{i}]"
        if not isinstance(c, dict):
            causes.append(errors.Cause("FieldValueTypeInvalid", "Invalid value: must be an object",
                                       p))
            continue
        causes += validation.container_name_causes(c.get("name"), f"{p}.name", taken)
        if not c.get("image"):
            causes.append(errors.required(f"{p}.image"))
        for field in FORBIDDEN_FIELDS:
            value = c.get(field)
            if value not in (None, {}, []) and not (field == "resources"
                                                    and _empty_resources(value)):
                causes.append(errors.forbidden_field(f"{p}.{field}",
                                                     "cannot be set for an Ephemeral Container"))
        for j, vm in enumerate(c.get("volumeMounts") or []):
            if isinstance(vm, dict) and (vm.get("subPath") or vm.get("subPathExpr")):
                which = "subPath" if vm.get("subPath") else "subPathExpr"
                causes.append(errors.forbidden_field(f"{p}.volumeMounts[{j}].{which}",
                                                     "cannot be set for an Ephemeral Container"))
        target = c.get("targetContainerName")
        if target not in (None, "") and target not in others:
            causes.append(errors.Cause("FieldValueNotFound", f'Not found: "{target}"',
                                       f"{p}.targetContainerName"))
    return causes


def forbidden_on_create(spec: dict[str, Any]) -> list[errors.Cause]:
    """A new pod has no ephemeral containers: they are added to a running one."""
    if spec.get("ephemeralContainers"):
        return [errors.forbidden_field(PATH, "cannot be set on create")]
    return []


def _empty_resources(value: Any) -> bool:
    return isinstance(value, dict) and not any(value.get(k) for k in value)


def _norm(value: Any) -> Any:
    """Go's semantic equality: nulls and empty lists or maps are unset."""
    if isinstance(value, dict):
        out = {k: _norm(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, [], {})}
    if isinstance(value, list):
        return [_norm(v) for v in value]
    return value
