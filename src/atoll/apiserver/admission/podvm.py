"""What a pod-VM cannot honour, refused when the pod is created rather than left in
ContainerCreating: a pod whose RuntimeClass has the handler ``atoll-vm`` runs on its own
kernel in its own QEMU microvm, so it cannot share the host's namespaces or devices.

Refused (403, the message and ``details.causes`` naming each field): ``spec.hostNetwork``,
``spec.hostPID``, ``spec.hostIPC``; ``securityContext.privileged`` on any container (init and
ephemeral ones too: privileged would mean the guest's devices, never the host's, which is not
what a privileged container asks for); ``hostPath`` volumes of devices (``type`` CharDevice or
BlockDevice, or a path under ``/dev``); ``shareProcessNamespace``, because the in-guest agent
starts every container in a PID namespace of its own (Kata can share one: lift this when the
guest agent can).  Allowed, as Kata Containers allows them: host ports (the host forwards them
to the pod IP, which the VM holds) and other ``hostPath`` volumes (shared into the guest like
every other volume).

Runs after ``RuntimeClassAdmission``, so a pod that got its class from its namespace or the
platform's default is held to the same rules.
"""

from __future__ import annotations

import posixpath
from typing import Any

from atoll.api import errors
from atoll.api.resources.node_v1 import POD_VM_HANDLER, handler_of
from atoll.api.resourcetype import ResourceType
from atoll.api.strategy import ObjectReader, WriteOptions
from atoll.apiserver.admission import BasePlugin
from atoll.apiserver.admission.runtimeclass import runtime_class_for

NAMESPACE_FIELDS = {
    "hostNetwork": "the VM has its own kernel and network stack",
    "hostPID": "the VM's processes are the guest kernel's, not the host's",
    "hostIPC": "the VM cannot share the host's IPC namespace",
    "shareProcessNamespace": "the guest agent gives each container a PID namespace of its own",
}
PRIVILEGED = "a pod-VM cannot give a container the host's devices"
DEVICE = "a pod-VM cannot pass the host's device files into the guest"
DEVICE_TYPES = ("CharDevice", "BlockDevice")


def violations(spec: dict[str, Any]) -> list[errors.Cause]:
    """Every field of ``spec`` a pod-VM cannot honour, with why."""
    out: list[errors.Cause] = []
    for field, why in NAMESPACE_FIELDS.items():
        if spec.get(field) is True:
            out.append(errors.forbidden_field(f"spec.{field}", why))
    for key in ("initContainers", "containers", "ephemeralContainers"):
        out += _privileged(spec.get(key), f"spec.{key}")
    volumes = spec.get("volumes")
    for i, v in enumerate(volumes if isinstance(volumes, list) else []):
        host_path = v.get("hostPath") if isinstance(v, dict) else None
        if not isinstance(host_path, dict):
            continue
        path = posixpath.normpath("/" + str(host_path.get("path") or "").lstrip("/"))
        if host_path.get("type") in DEVICE_TYPES:
            out.append(errors.forbidden_field(f"spec.volumes[{i}].hostPath.type", DEVICE))
        elif path == "/dev" or path.startswith("/dev/"):
            out.append(errors.forbidden_field(f"spec.volumes[{i}].hostPath.path", DEVICE))
    return out


def _privileged(containers: Any, path: str) -> list[errors.Cause]:
    out = []
    for i, c in enumerate(containers if isinstance(containers, list) else []):
        sc = c.get("securityContext") if isinstance(c, dict) else None
        if isinstance(sc, dict) and sc.get("privileged") is True:
            out.append(errors.forbidden_field(f"{path}[{i}].securityContext.privileged",
                                              PRIVILEGED))
    return out


def refusal(obj: dict[str, Any], class_name: str, causes: list[errors.Cause]) -> errors.Forbidden:
    meta = obj.get("metadata") or {}
    name = meta.get("name") or meta.get("generateName") or ""
    reasons = "; ".join(f"{c.field}: {c.message.removeprefix('Forbidden: ')}" for c in causes)
    return errors.Forbidden(f'pods "{name}" is forbidden: a pod-VM (RuntimeClass "{class_name}",'
                            f' handler "{POD_VM_HANDLER}") cannot honour {reasons}',
                            name=name, kind="pods", causes=causes)


class PodVMRestrictions(BasePlugin):
    def validate_create(self, svc: ObjectReader, rt: ResourceType, obj: dict[str, Any],
                        opts: WriteOptions) -> None:
        self._check(svc, rt, obj, obj.get("spec"))

    def validate_update(self, svc: ObjectReader, rt: ResourceType, old: dict[str, Any],
                        new: dict[str, Any], opts: WriteOptions, subresource: str) -> None:
        if subresource == "ephemeralcontainers":  # the one way a pod gains a container
            spec = new.get("spec")
            if isinstance(spec, dict):
                self._check(svc, rt, new, {"runtimeClassName": spec.get("runtimeClassName"),
                                           "ephemeralContainers": spec.get("ephemeralContainers")})

    @staticmethod
    def _check(svc: ObjectReader, rt: ResourceType, obj: dict[str, Any], spec: Any) -> None:
        if rt.group or rt.plural != "pods" or not isinstance(spec, dict):
            return
        klass = runtime_class_for(svc, spec)
        if handler_of(klass) != POD_VM_HANDLER:
            return
        causes = violations(spec)
        if causes:
            raise refusal(obj, str(spec.get("runtimeClassName")), causes)
