"""apiextensions.k8s.io/v1 CustomResourceDefinitions as a kind: defaults, status and
validation on every write, deletion through the cleanup finalizer.

Turning a CRD into served resource types is ``atoll.apiserver.crds``'s; the schema
language itself is ``atoll.api.crdschema``'s.
"""

from __future__ import annotations

from typing import Any

from atoll.api import crdschema, errors
from atoll.api.printing import created_at_printer
from atoll.api.resources.base import Kind
from atoll.api.resourcetype import STATUS, builtin
from atoll.api.strategy import Strategy
from atoll.api.timestamps import rfc3339

CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"

CUSTOMRESOURCEDEFINITIONS = builtin(
    "apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", False,
    short_names=("crd", "crds"), categories=("api-extensions",), subresources=(STATUS,))


def prepare(crd: dict[str, Any], old: dict[str, Any] | None, subresource: str = "") -> None:
    """Defaults and status on every write: names accepted, Established, storedVersions (which
    a status write may trim, as a storage version migrator does, to served versions)."""
    if isinstance(crd.get("spec"), dict):
        defaulted = crdschema.default_crd(crd)
        crd.clear()
        crd.update(defaulted)
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    status = crd.setdefault("status", {}) if old is None else dict(old.get("status") or {})
    stored = list(status.get("storedVersions") or [])
    if subresource == "status" and old is not None:
        wanted = (crd.get("status") or {}).get("storedVersions")
        known = {v.get("name") for v in spec.get("versions") or [] if isinstance(v, dict)}
        if isinstance(wanted, list) and wanted and all(w in known for w in wanted):
            stored = list(wanted)
    for v in spec.get("versions") or []:
        if isinstance(v, dict) and v.get("storage") and v.get("name") not in stored:
            stored.append(v["name"])
    now = rfc3339()
    prev = {c.get("type"): c for c in status.get("conditions") or [] if isinstance(c, dict)}

    def cond(type_: str, reason: str, message: str) -> dict[str, Any]:
        old_c = prev.get(type_)
        when = old_c.get("lastTransitionTime", now) if old_c and old_c.get("status") == "True" else now
        return {"type": type_, "status": "True", "lastTransitionTime": when, "reason": reason,
                "message": message}

    status.update({
        "acceptedNames": {k: v for k, v in names.items()},
        "conditions": [
            cond("NamesAccepted", "NoConflicts", "no conflicts found"),
            cond("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "storedVersions": stored,
    })
    crd["status"] = status


def validate(crd: dict[str, Any]) -> list[errors.Cause]:
    return crdschema.check_crd(crd)


class CRDStrategy(Strategy):
    def prepare_create(self, svc, rt, obj, opts):  # type: ignore[no-untyped-def]
        prepare(obj, None)

    def prepare_update(self, rt, old, new, subresource=""):  # type: ignore[no-untyped-def]
        prepare(new, old, subresource)

    def validate(self, rt, obj):  # type: ignore[no-untyped-def]
        return validate(obj)

    def deletion_finalizers(self, rt, obj):  # type: ignore[no-untyped-def]
        return [CLEANUP_FINALIZER]

    def on_delete_marked(self, rt, obj):  # type: ignore[no-untyped-def]
        conds = (obj.get("status") or {}).get("conditions") or []
        if not any(c.get("type") == "Terminating" for c in conds if isinstance(c, dict)):
            conds.append({"type": "Terminating", "status": "True", "reason": "InstanceDeletionPending",
                          "message": "CustomResourceDefinition marked for deletion; its objects "
                                     "are being deleted"})
            obj.setdefault("status", {})["conditions"] = conds


CUSTOMRESOURCEDEFINITION = Kind(CUSTOMRESOURCEDEFINITIONS, CRDStrategy(), created_at_printer)
