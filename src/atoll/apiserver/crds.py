"""CustomResourceDefinitions: their status, and turning them into served resource types.

A CRD is established as it is written: names are checked and the status
conditions filled in the same write, and the registry follows the watch cache,
so a custom resource can be created as soon as its CRD's create returns (and
every API server over the same store serves it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from atoll.api import crdschema, errors
from atoll.api.kinds import ResourceType, Subresource, SUB_VERBS
from atoll.apiserver.registry import Registry

if TYPE_CHECKING:
    from atoll.apiserver.objects import WriteOptions
    from atoll.storage.cacher import CacheEvent, Cacher

log = logging.getLogger(__name__)

CRD_PREFIX = "/registry/apiextensions.k8s.io/customresourcedefinitions/"
CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
#: subresources of Atoll's own CRDs that a host agent serves (through the node proxy), as
#: pods/exec is: the VM's serial console
AGENT_SUBRESOURCES = {("vmoperator.vmware.com", "virtualmachines"): ("console",)}


@dataclass
class CustomInfo:
    """What the server needs to serve one version of a custom resource."""

    crd_name: str
    list_kind: str
    schema: Any  # crdschema.StructuralSchema | None
    printer_columns: list[dict[str, Any]] = field(default_factory=list)
    selectable_fields: list[str] = field(default_factory=list)
    scale: dict[str, str] | None = None
    deprecation_warning: str = ""

    def admit(self, rt: ResourceType, obj: dict[str, Any], opts: "WriteOptions") -> None:
        """Prune unknown fields (or refuse them), default, validate: as apiextensions does."""
        if self.schema is None:
            return
        name = obj.get("metadata", {}).get("name", "")
        if opts.field_validation in ("Strict", "Warn"):
            unknown = self.schema.unknown_fields(obj)
            if unknown and opts.field_validation == "Strict":
                raise errors.BadRequest(
                    f"{rt.kind} in version \"{rt.version}\" cannot be handled as a {rt.kind}: "
                    "strict decoding error: " + ", ".join(f'unknown field "{p}"' for p in unknown))
            opts.warnings.extend(f'unknown field "{p}"' for p in unknown)
        self.schema.prune(obj)
        self.schema.apply_defaults(obj)
        causes = self.schema.validate(obj)
        if causes:
            raise errors.invalid(rt.kind, name, causes, rt.group)


def prepare(crd: dict[str, Any], old: dict[str, Any] | None) -> None:
    """Defaults and status on every write: names accepted, Established, storedVersions."""
    if isinstance(crd.get("spec"), dict):
        defaulted = crdschema.default_crd(crd)
        crd.clear()
        crd.update(defaulted)
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    status = crd.setdefault("status", {}) if old is None else dict(old.get("status") or {})
    stored = list(status.get("storedVersions") or [])
    for v in spec.get("versions") or []:
        if isinstance(v, dict) and v.get("storage") and v.get("name") not in stored:
            stored.append(v["name"])
    from atoll.apiserver.objects import now_rfc3339

    now = now_rfc3339()
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


def types_for(crd: dict[str, Any]) -> list[ResourceType]:
    """One ResourceType per served version of an (established) CRD."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group", "")
    storage = next((v["name"] for v in spec.get("versions") or [] if v.get("storage")), "")
    if crd.get("metadata", {}).get("deletionTimestamp"):
        pass  # still served until its objects are gone, as upstream
    out = []
    for v in spec.get("versions") or []:
        if not v.get("served", True):
            continue
        schema_doc = (v.get("schema") or {}).get("openAPIV3Schema")
        try:
            compiled = crdschema.StructuralSchema(schema_doc) if schema_doc else None
        except Exception:  # an invalid stored schema must not stop the server
            log.exception("cannot compile schema of %s/%s", crd["metadata"]["name"], v.get("name"))
            compiled = None
        subs: list[Subresource] = []
        subresources = v.get("subresources") or {}
        if "status" in subresources:
            subs.append(Subresource("status"))
        subs += [Subresource(name, verbs=("get",)) for name in
                 AGENT_SUBRESOURCES.get((group, names.get("plural", "")), ())]
        scale = subresources.get("scale")
        if isinstance(scale, dict):
            subs.append(Subresource("scale", kind="Scale", group="autoscaling", version="v1",
                                    verbs=SUB_VERBS))
        info = CustomInfo(
            crd_name=crd["metadata"]["name"],
            list_kind=names.get("listKind") or f"{names.get('kind', '')}List",
            schema=compiled,
            printer_columns=list(v.get("additionalPrinterColumns") or []),
            selectable_fields=[f.get("jsonPath", "") for f in v.get("selectableFields") or []],
            scale=scale if isinstance(scale, dict) else None,
            deprecation_warning=(v.get("deprecationWarning") or
                                 (f"{group}/{v['name']} {names.get('kind')} is deprecated"
                                  if v.get("deprecated") else "")),
        )
        out.append(ResourceType(
            group=group, version=v["name"], kind=names.get("kind", ""),
            plural=names.get("plural", ""), namespaced=spec.get("scope") == "Namespaced",
            singular=names.get("singular") or names.get("kind", "").lower(),
            short_names=tuple(names.get("shortNames") or ()),
            categories=tuple(names.get("categories") or ()),
            subresources=tuple(subs), storage_version=storage, custom=info,
        ))
    return out


class CRDWatcher:
    """Keeps the registry in step with the CRDs in the watch cache."""

    def __init__(self, registry: Registry, cacher: "Cacher") -> None:
        self.registry = registry
        self.cacher = cacher

    def start(self) -> None:
        for cached in self.cacher.list(CRD_PREFIX):
            self._sync(cached.obj)
        self.cacher.listeners.append(self._on_event)

    def _on_event(self, ev: "CacheEvent") -> None:
        if not ev.key.startswith(CRD_PREFIX):
            return
        if ev.type == "DELETED":
            self.registry.set_custom(ev.obj["metadata"]["name"], [])
        else:
            self._sync(ev.obj)

    def _sync(self, crd: dict[str, Any]) -> None:
        try:
            self.registry.set_custom(crd["metadata"]["name"], types_for(crd))
        except Exception:
            log.exception("cannot serve CRD %s", crd.get("metadata", {}).get("name"))
