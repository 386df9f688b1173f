"""VM classes and images bound to a namespace: a VirtualMachine may use only those.

In vSphere an administrator binds VM classes and content libraries to a
Namespace; DevOps users pick from them.  Here the binding is two namespace
annotations (written by ``atoll namespace create``, changeable only by whom may
update namespaces): ``vmoperator.atoll.dev/classes`` and
``vmoperator.atoll.dev/images``.  Without an annotation nothing is restricted.
An image may be named by object name or by display name, either way.
"""

from __future__ import annotations

from typing import Any

from atoll.api import errors, tenancy
from atoll.api.resources.core_v1 import NAMESPACES
from atoll.api.resources.vmoperator import CLUSTERVIRTUALMACHINEIMAGES, VIRTUALMACHINEIMAGES
from atoll.api.resourcetype import ResourceType
from atoll.api.strategy import ObjectReader, WriteOptions
from atoll.api.vmoperator import names as vmnames
from atoll.apiserver.admission import BasePlugin


class VMBindings(BasePlugin):
    def validate_create(self, svc: ObjectReader, rt: ResourceType, obj: dict[str, Any],
                        opts: WriteOptions) -> None:
        if rt.group == vmnames.GROUP and rt.kind == "VirtualMachine":
            self._check(svc, rt, obj, None)

    def validate_update(self, svc: ObjectReader, rt: ResourceType, old: dict[str, Any],
                        new: dict[str, Any], opts: WriteOptions, subresource: str) -> None:
        if rt.group == vmnames.GROUP and rt.kind == "VirtualMachine" and not subresource:
            self._check(svc, rt, new, old)

    def _check(self, svc: ObjectReader, rt: ResourceType, vm: dict[str, Any],
               old: dict[str, Any] | None) -> None:
        namespace = vm["metadata"].get("namespace", "")
        ns = svc.read(NAMESPACES, "", namespace)
        annotations = ((ns.obj.get("metadata") or {}).get("annotations") or {}) if ns else {}
        spec = vm.get("spec") or {}
        old_spec = (old or {}).get("spec") or {}
        causes: list[errors.Cause] = []
        classes = tenancy.allowed_names(annotations, tenancy.VM_CLASSES_ANNOTATION)
        klass = spec.get("className")
        if classes is not None and klass and klass not in classes and \
                klass != old_spec.get("className"):
            causes.append(errors.invalid_value(
                "spec.className", klass, f'VirtualMachineClass "{klass}" is not bound to namespace '
                f'"{namespace}" (bound: {", ".join(classes) or "none"})'))
        images = tenancy.allowed_names(annotations, tenancy.VM_IMAGES_ANNOTATION)
        ref = spec.get("image") if isinstance(spec.get("image"), dict) else {}
        wanted = str(ref.get("name") or spec.get("imageName") or "")
        old_ref = old_spec.get("image") if isinstance(old_spec.get("image"), dict) else {}
        unchanged = wanted == str(old_ref.get("name") or old_spec.get("imageName") or "")
        if images is not None and wanted and not (old is not None and unchanged) and \
                not (self._identities(svc, namespace, wanted) & set(images)):
            field = "spec.image.name" if ref.get("name") else "spec.imageName"
            causes.append(errors.invalid_value(
                field, wanted, f'image "{wanted}" is not bound to namespace "{namespace}" '
                f'(bound: {", ".join(images) or "none"})'))
        if causes:
            raise errors.invalid(rt.kind, vm["metadata"].get("name", ""), causes, rt.group)

    @staticmethod
    def _identities(svc: ObjectReader, namespace: str, wanted: str) -> set[str]:
        """Every name the wanted image goes by: object names and display names."""
        names = {wanted}
        for rt, scope in ((VIRTUALMACHINEIMAGES, namespace), (CLUSTERVIRTUALMACHINEIMAGES, "")):
            for cached in svc.read_list(rt, scope):
                meta, status = cached.obj["metadata"], cached.obj.get("status") or {}
                if wanted in (meta.get("name"), status.get("name")):
                    names.update(n for n in (meta.get("name"), status.get("name")) if n)
        return names
