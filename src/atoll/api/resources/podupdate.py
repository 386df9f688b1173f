"""What an update may change in a pod that exists: upstream's ValidatePodUpdate.

A pod's spec is what was admitted, and the agent runs it; so, as upstream,
an update may change only the containers' and init containers' images,
``activeDeadlineSeconds`` (set, or lowered), ``tolerations`` (additions, and
the seconds of existing ones), ``terminationGracePeriodSeconds`` (to 1 when it
was negative), remove scheduling gates and, while the pod is still gated, add
to its ``nodeSelector``.  Anything else (a securityContext, host namespaces,
volumes, a command, the service account, ephemeral containers, the node) is a
422 on ``spec``.  ``nodeName`` moves only through ``pods/binding``.  The
AppArmor annotations are as immutable as the fields they stand for.

Both specs are compared after the API's defaulting, and with JSON's ``null``
and empty lists meaning "unset" (Go's semantic equality), so a client that
re-sends what it read is never refused.
"""

from __future__ import annotations

from typing import Any

import orjson

from atoll.api import errors

APPARMOR_PREFIX = "container.apparmor.security.beta.kubernetes.io/"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
UPDATABLE = ("`spec.containers[*].image`", "`spec.initContainers[*].image`",
             "`spec.activeDeadlineSeconds`",
             "`spec.tolerations` (only additions to existing tolerations)",
             "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously "
             "negative)")
FORBIDDEN = "pod updates may not change fields other than " + ",".join(UPDATABLE)
MAX_INT32 = 2**31 - 1
#: at most this many changed fields are named after the refusal
MAX_DIFF_PATHS = 8


def validate(old: dict[str, Any], new: dict[str, Any], *,
             subresource: str = "") -> list[errors.Cause]:
    """Causes that make this update invalid (empty when it is allowed)."""
    causes = _annotation_updates(_dict(_dict(old.get("metadata")).get("annotations")),
                                 _dict(_dict(new.get("metadata")).get("annotations")))
    old_spec, new_spec = _dict(old.get("spec")), new.get("spec")
    if not isinstance(new_spec, dict):
        return causes + [errors.required("spec")]
    for key, path in (("containers", "spec.containers"), ("initContainers", "spec.initContainers")):
        olds, news = _list(old_spec.get(key)), _list(new_spec.get(key))
        if len(olds) != len(news):
            return causes + [errors.forbidden_field(path, "pod updates may not add or remove "
                                                          "containers")]
        for i, c in enumerate(news):
            image = _dict(c).get("image")
            if not image:
                causes.append(errors.required(f"{path}[{i}].image"))
            elif isinstance(image, str) and image.strip() != image:
                causes.append(errors.invalid_value(f"{path}[{i}].image", image,
                                                   "must not have leading or trailing whitespace"))
    deadline = _deadline(old_spec.get("activeDeadlineSeconds"),
                         new_spec.get("activeDeadlineSeconds"))
    if deadline is not None:
        return causes + [deadline]
    causes += _tolerations(_list(old_spec.get("tolerations")), _list(new_spec.get("tolerations")))
    causes += _gates(_list(old_spec.get("schedulingGates")), _list(new_spec.get("schedulingGates")))

    munged = orjson.loads(orjson.dumps(new_spec))
    for key in ("containers", "initContainers"):
        for c, o in zip(_list(munged.get(key)), _list(old_spec.get(key))):
            if isinstance(c, dict):
                if isinstance(o, dict) and "image" in o:
                    c["image"] = o["image"]
                else:
                    c.pop("image", None)
    for key in ("activeDeadlineSeconds", "tolerations", "schedulingGates"):
        _carry(munged, old_spec, key)
    grace_old = old_spec.get("terminationGracePeriodSeconds")
    if _is_int(grace_old) and grace_old < 0 and munged.get("terminationGracePeriodSeconds") == 1:
        munged["terminationGracePeriodSeconds"] = grace_old
    if _list(old_spec.get("schedulingGates")):
        selector_causes = _selector_additions(_dict(old_spec.get("nodeSelector")),
                                              _dict(munged.get("nodeSelector")))
        if not selector_causes:
            _carry(munged, old_spec, "nodeSelector")
        causes += selector_causes
    if subresource == "binding" and not old_spec.get("nodeName"):
        _carry(munged, old_spec, "nodeName")
    changed = _diff(_norm(old_spec), _norm(munged), "spec")
    if changed:
        shown = ", ".join(changed[:MAX_DIFF_PATHS]) + (", ..." if len(changed) > MAX_DIFF_PATHS
                                                       else "")
        causes.append(errors.forbidden_field("spec", f"{FORBIDDEN}\nchanged: {shown}"))
    return causes


# -- rules ------------------------------------------------------------------------------------
def _annotation_updates(old: dict[str, Any], new: dict[str, Any]) -> list[errors.Cause]:
    causes = []
    for key, value in old.items():
        if key in new and new[key] == value:
            continue
        if key.startswith(APPARMOR_PREFIX):
            causes.append(errors.forbidden_field(f"metadata.annotations[{key}]",
                                                 "may not remove or update AppArmor annotations"))
        elif key == MIRROR_ANNOTATION:
            causes.append(errors.forbidden_field(f"metadata.annotations[{key}]",
                                                 "may not remove or update mirror pod annotation"))
    for key in new:
        if key in old:
            continue
        if key.startswith(APPARMOR_PREFIX):
            causes.append(errors.forbidden_field(f"metadata.annotations[{key}]",
                                                 "may not add AppArmor annotations"))
        elif key == MIRROR_ANNOTATION:
            causes.append(errors.forbidden_field(f"metadata.annotations[{key}]",
                                                 "may not add mirror pod annotation"))
    return causes


def _deadline(old: Any, new: Any) -> errors.Cause | None:
    """Set from unset, or lowered; never raised, never unset."""
    path = "spec.activeDeadlineSeconds"
    if new is not None:
        if not _is_int(new) or new < 0 or new > MAX_INT32:
            return errors.invalid_value(path, new, f"must be between 0 and {MAX_INT32}, inclusive")
        if _is_int(old) and old < new:
            return errors.invalid_value(path, new, "must be less than or equal to previous value")
    elif old is not None:
        return errors.invalid_value(path, "null", "must not update from a positive integer to nil "
                                                "value")
    return None


def _tolerations(old: list[Any], new: list[Any]) -> list[errors.Cause]:
    """Each existing toleration must still be there (its tolerationSeconds may change)."""
    def key(t: Any) -> Any:
        t = _norm(_dict(t))
        t.pop("tolerationSeconds", None)
        return t

    remaining = [key(t) for t in new]
    for t in old:
        if key(t) not in remaining:
            return [errors.forbidden_field("spec.tolerations", "existing toleration can not be "
                                                               "modified except its "
                                                               "tolerationSeconds")]
    return []


def _gates(old: list[Any], new: list[Any]) -> list[errors.Cause]:
    """Scheduling gates may only be removed."""
    before = {_dict(g).get("name") for g in old}
    return [errors.forbidden_field(f"spec.schedulingGates[{i}].name",
                                   f"only deletion is allowed, but found new scheduling gate "
                                   f"'{_dict(g).get('name')}'")
            for i, g in enumerate(new) if _dict(g).get("name") not in before]


def _selector_additions(old: dict[str, Any], new: dict[str, Any]) -> list[errors.Cause]:
    return [errors.invalid_value(f"spec.nodeSelector[{k}]", new.get(k),
                                 "only additions to spec.nodeSelector are allowed (no mutations "
                                 "or deletions)")
            for k, v in old.items() if new.get(k) != v]


# -- comparison -------------------------------------------------------------------------------
def _norm(value: Any) -> Any:
    """Drop what Go's semantic equality treats as unset: nulls and empty lists."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            v = _norm(v)
            if v is None or v == []:
                continue
            out[k] = v
        return out
    if isinstance(value, list):
        return [_norm(v) for v in value]
    return value


def _diff(old: Any, new: Any, path: str) -> list[str]:
    """The paths where two normalised values differ (the first levels only)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in list(old) + [k for k in new if k not in old]:
            if old.get(k) != new.get(k):
                out += _diff(old.get(k), new.get(k), f"{path}.{k}")
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new)):
            if a != b:
                out += _diff(a, b, f"{path}[{i}]")
        return out
    return [] if _same(old, new) else [path]


def _same(a: Any, b: Any) -> bool:
    return a == b and type(a) is type(b) or (_is_int(a) and _is_int(b) and a == b)


def _carry(munged: dict[str, Any], old: dict[str, Any], key: str) -> None:
    if key in old:
        munged[key] = old[key]
    else:
        munged.pop(key, None)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []
