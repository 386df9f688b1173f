"""A namespace as a product: the plain Kubernetes objects one vSphere-style Namespace is.

``atoll namespace create`` builds them here and applies them; ``-o yaml`` prints
the same objects for GitOps.  Nothing here is a new kind: a Namespace (with its
pod security level and the VM classes and images bound to it as annotations),
a ResourceQuota, a LimitRange with default container sizes, RoleBindings to
the ``admin``/``edit``/``view`` ClusterRoles, and the bound VirtualMachineClasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from atoll.api import quantity

MANAGED_LABEL = "atoll.dev/namespace-bundle"
POD_SECURITY_ENFORCE = "pod-security.kubernetes.io/enforce"
#: comma-separated VirtualMachineClass names a namespace's VMs may use (absent: any class in it)
VM_CLASSES_ANNOTATION = "vmoperator.atoll.dev/classes"
#: comma-separated image names (VirtualMachineImage or ClusterVirtualMachineImage) VMs may use
VM_IMAGES_ANNOTATION = "vmoperator.atoll.dev/images"
DEFAULT_CLASSES_OPT_OUT = "vmoperator.atoll.dev/default-classes"
#: comma-separated StorageClass names a namespace's claims may use (absent: any class)
STORAGE_CLASSES_ANNOTATION = "storage.atoll.dev/classes"
QUOTA_NAME = "atoll-budget"
LIMITS_NAME = "atoll-defaults"
ROLES = {"owner": "admin", "edit": "edit", "view": "view"}
RBAC = "rbac.authorization.k8s.io"


@dataclass
class Bundle:
    name: str
    cpu: str = ""
    memory: str = ""
    storage: dict[str, str] = field(default_factory=dict)
    pods: int | None = None
    vms: int | None = None
    vm_classes: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    #: the StorageClasses assigned to the namespace (empty: not restricted)
    storage_classes: list[str] = field(default_factory=list)
    people: dict[str, list[str]] = field(default_factory=dict)  # role → subjects
    pod_security: str = "baseline"

    def check(self) -> None:
        """Refuse what the server would refuse, before anything is written."""
        for flag, value in (("--cpu", self.cpu), ("--memory", self.memory),
                            *((f"--storage {k}", v) for k, v in self.storage.items())):
            if value:
                try:
                    if quantity.parse(value) < 0:
                        raise ValueError
                except (ValueError, ArithmeticError):
                    raise ValueError(f"{flag}: {value!r} is not a quantity (e.g. 4, 500m, 16Gi)")
        if self.pod_security not in ("privileged", "baseline", "restricted"):
            raise ValueError("--pod-security must be privileged, baseline or restricted")
        for role in self.people:
            if role not in ROLES:
                raise ValueError(f"unknown role {role!r}")

    def objects(self) -> list[dict[str, Any]]:
        self.check()
        out = [self.namespace(), *self.quotas(), self.limit_range(), *self.role_bindings()]
        return [o for o in out if o]

    def namespace(self) -> dict[str, Any]:
        annotations: dict[str, str] = {}
        if self.vm_classes:
            annotations[VM_CLASSES_ANNOTATION] = ",".join(self.vm_classes)
            annotations[DEFAULT_CLASSES_OPT_OUT] = "false"
        if self.images:
            annotations[VM_IMAGES_ANNOTATION] = ",".join(self.images)
        if self.storage_classes:
            annotations[STORAGE_CLASSES_ANNOTATION] = ",".join(self.storage_classes)
        meta: dict[str, Any] = {"name": self.name,
                                "labels": {MANAGED_LABEL: "true",
                                           POD_SECURITY_ENFORCE: self.pod_security}}
        if annotations:
            meta["annotations"] = annotations
        return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}

    def quotas(self) -> list[dict[str, Any]]:
        hard: dict[str, str] = {}
        if self.cpu:
            hard["requests.cpu"] = hard["limits.cpu"] = self.cpu
        if self.memory:
            hard["requests.memory"] = hard["limits.memory"] = self.memory
        for klass, size in sorted(self.storage.items()):
            hard[f"{klass}.storageclass.storage.k8s.io/requests.storage"] = size
        if self.pods is not None:
            hard["pods"] = str(self.pods)
        if self.vms is not None:
            hard["count/virtualmachines.vmoperator.vmware.com"] = str(self.vms)
        if not hard:
            return []
        return [{"apiVersion": "v1", "kind": "ResourceQuota",
                 "metadata": {"name": QUOTA_NAME, "namespace": self.name,
                              "labels": {MANAGED_LABEL: "true"}},
                 "spec": {"hard": hard}}]

    def limit_range(self) -> dict[str, Any]:
        """Defaults for containers that do not say, so a compute quota can count them."""
        if not (self.cpu or self.memory):
            return {}
        default: dict[str, str] = {}
        request: dict[str, str] = {}
        if self.cpu:
            default["cpu"] = _smaller("1", self.cpu)
            request["cpu"] = _smaller("100m", self.cpu)
        if self.memory:
            default["memory"] = _smaller("512Mi", self.memory)
            request["memory"] = _smaller("128Mi", self.memory)
        return {"apiVersion": "v1", "kind": "LimitRange",
                "metadata": {"name": LIMITS_NAME, "namespace": self.name,
                             "labels": {MANAGED_LABEL: "true"}},
                "spec": {"limits": [{"type": "Container", "default": default,
                                     "defaultRequest": request}]}}

    def role_bindings(self) -> list[dict[str, Any]]:
        out = []
        for role, subjects in self.people.items():
            if not subjects:
                continue
            out.append({"apiVersion": f"{RBAC}/v1", "kind": "RoleBinding",
                        "metadata": {"name": f"atoll:{role}", "namespace": self.name,
                                     "labels": {MANAGED_LABEL: "true"}},
                        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": ROLES[role]},
                        "subjects": [subject(s, self.name) for s in subjects]})
        return out


def subject(text: str, namespace: str) -> dict[str, str]:
    """``alice`` is a user, ``group:devs`` a group, ``serviceaccount:[ns:]name`` a ServiceAccount."""
    kind, sep, rest = text.partition(":")
    if sep and kind == "group" and rest:
        return {"apiGroup": RBAC, "kind": "Group", "name": rest}
    if sep and kind in ("serviceaccount", "sa") and rest:
        ns, _, name = rest.rpartition(":")
        return {"kind": "ServiceAccount", "name": name, "namespace": ns or namespace}
    if sep and kind == "user" and rest:
        return {"apiGroup": RBAC, "kind": "User", "name": rest}
    return {"apiGroup": RBAC, "kind": "User", "name": text}


def allowed_names(annotations: dict[str, Any] | None, key: str) -> list[str] | None:
    """The names an annotation binds, or None when the namespace does not restrict them."""
    value = (annotations or {}).get(key)
    if not isinstance(value, str):
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _smaller(a: str, b: str) -> str:
    return a if quantity.parse(a) <= quantity.parse(b) else b
