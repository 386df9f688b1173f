"""CustomResourceDefinitions: turning them into served resource types.

A CRD is established as it is written: names are checked and the status
conditions filled in the same write (``atoll.api.resources.apiextensions_v1``, the
kind's own rules), and the registry follows the watch cache,
so a custom resource can be created as soon as its CRD's create returns (and
every API server over the same store serves it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from atoll.api import crdconversion, crdschema, errors
from atoll.api.resources.apiextensions_v1 import CLEANUP_FINALIZER, CUSTOMRESOURCEDEFINITIONS
from atoll.api.resourcetype import SUB_VERBS, ResourceType, Subresource
from atoll.api.strategy import WriteOptions
from atoll.apiserver.registry import Registry

if TYPE_CHECKING:
    from atoll.storage.cacher import CacheEvent, Cacher

log = logging.getLogger(__name__)

CRD_PREFIX = CUSTOMRESOURCEDEFINITIONS.store_prefix
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
    #: the in-process converter (crdconversion) of a built-in CRD with strategy Webhook
    converter: Any = None

    def admit(self, rt: ResourceType, obj: dict[str, Any], opts: WriteOptions) -> None:
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


def types_for(crd: dict[str, Any]) -> list[ResourceType]:
    """One ResourceType per served version of an (established) CRD."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group", "")
    storage = next((v["name"] for v in spec.get("versions") or [] if v.get("storage")), "")
    converter = crdconversion.in_process(spec)
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
            converter=converter,
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


__all__ = ["AGENT_SUBRESOURCES", "CLEANUP_FINALIZER", "CRD_PREFIX", "CRDWatcher", "CustomInfo",
           "types_for"]
