"""What a host may read: only the Secrets, ConfigMaps and claims its own workloads use
(and the status of those claims, which it writes when it has grown their volume).

Upstream's Node authorizer: a kubelet gets a Secret only if a pod bound to its
node refers to it.  Here the references are found in the watch cache: pods
with ``spec.nodeName`` = the host (volumes, projected sources, env, envFrom,
image pull secrets) and VirtualMachines placed on it, or which a live
migration is bringing to it (the raw cloud-config Secret, PVC volumes).  Hosts may not list or watch these kinds at all, so one
compromised host cannot read every tenant's Secrets.

Every host routes the Ingresses of class ``atoll``, so every host may read the
Secrets they name in ``spec.tls[].secretName`` in their own namespace: get, and
list or watch narrowed to that one name (``fieldSelector=metadata.name=X``, as
upstream's Node authorizer lets a kubelet watch single Secrets), so each host's
router sees a changed certificate as a watch event.
"""

from __future__ import annotations

from typing import Any, Iterable

from atoll.api.migration import names as migration
from atoll.api.resources.core_v1_pods import PODS
from atoll.api.resources.networking_v1 import INGRESSES, ingress_is_atolls
from atoll.api.resources.vmoperator import VIRTUALMACHINES
from atoll.api.vmoperator.names import HOST_LABEL
from atoll.api.resourcetype import ResourceType
from atoll.apiserver.attributes import Attributes
from atoll.storage.cacher import Cacher

GUARDED = {"secrets": "Secret", "configmaps": "ConfigMap",
           "persistentvolumeclaims": "PersistentVolumeClaim"}
#: a claim's status (the end of an expansion): written only for the claims a host's workloads
#: use, as upstream's Node authorizer
CLAIM_STATUS = ("persistentvolumeclaims", "status")


def node_of(a: Attributes) -> str | None:
    if "system:nodes" not in a.user.groups or not a.user.name.startswith("system:node:"):
        return None
    return a.user.name[len("system:node:"):]


def guarded(a: Attributes) -> bool:
    return a.resource_request and not a.api_group and a.resource in GUARDED and \
        (not a.subresource or (a.resource, a.subresource) == CLAIM_STATUS)


#: live migrations (a CRD): the target host prepares the VM, so it reads what its host does
MIGRATIONS = ResourceType(migration.GROUP, migration.VERSION, migration.KIND, migration.PLURAL,
                          True)


def arriving(cacher: Cacher, node: str, namespace: str) -> set[str]:
    """The VMs of ``namespace`` an active live migration is bringing to ``node``."""
    out = set()
    for mig in cacher.list(MIGRATIONS.prefix(namespace)):
        labels = mig.obj["metadata"].get("labels") or {}
        if labels.get(migration.TARGET_LABEL) == node and \
                migration.phase(mig.obj) in migration.ACTIVE:
            out.add(str((mig.obj.get("spec") or {}).get("vmName") or ""))
    return out


def may_read(cacher: Cacher, node: str, a: Attributes) -> bool:
    if not a.name or not a.namespace:
        return False
    if a.resource == "secrets" and a.verb in ("get", "list", "watch") and \
            ingress_tls_secret(cacher, a.namespace, a.name):
        return True
    if a.verb != "get" and not (a.subresource and a.verb in ("patch", "update")):
        return False
    kind = GUARDED[a.resource]
    for pod in cacher.list(PODS.prefix(a.namespace)):
        if (pod.obj.get("spec") or {}).get("nodeName") == node and \
                (kind, a.name) in set(pod_references(pod.obj)):
            return True
    incoming = arriving(cacher, node, a.namespace)
    for vm in cacher.list(VIRTUALMACHINES.prefix(a.namespace)):
        here = (vm.obj["metadata"].get("labels") or {}).get(HOST_LABEL) == node or \
            vm.obj["metadata"].get("name") in incoming
        if here and (kind, a.name) in set(vm_references(vm.obj)):
            return True
    return False


def ingress_tls_secret(cacher: Cacher, namespace: str, name: str) -> bool:
    """Whether an Ingress of class ``atoll`` in ``namespace`` names Secret ``name`` for TLS."""
    for ing in cacher.list(INGRESSES.prefix(namespace)):
        if not ingress_is_atolls(ing.obj):
            continue
        for entry in (ing.obj.get("spec") or {}).get("tls") or []:
            if isinstance(entry, dict) and entry.get("secretName") == name:
                return True
    return False


def pod_references(pod: dict[str, Any]) -> Iterable[tuple[str, str]]:
    spec = pod.get("spec") or {}
    for ref in spec.get("imagePullSecrets") or []:
        if isinstance(ref, dict) and ref.get("name"):
            yield "Secret", ref["name"]
    for vol in spec.get("volumes") or []:
        if not isinstance(vol, dict):
            continue
        if (vol.get("secret") or {}).get("secretName"):
            yield "Secret", vol["secret"]["secretName"]
        if (vol.get("configMap") or {}).get("name"):
            yield "ConfigMap", vol["configMap"]["name"]
        if (vol.get("persistentVolumeClaim") or {}).get("claimName"):
            yield "PersistentVolumeClaim", vol["persistentVolumeClaim"]["claimName"]
        for src in (vol.get("projected") or {}).get("sources") or []:
            if (src.get("secret") or {}).get("name"):
                yield "Secret", src["secret"]["name"]
            if (src.get("configMap") or {}).get("name"):
                yield "ConfigMap", src["configMap"]["name"]
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(field) or []:
            if not isinstance(c, dict):
                continue
            for env in c.get("env") or []:
                source = (env or {}).get("valueFrom") or {}
                if (source.get("secretKeyRef") or {}).get("name"):
                    yield "Secret", source["secretKeyRef"]["name"]
                if (source.get("configMapKeyRef") or {}).get("name"):
                    yield "ConfigMap", source["configMapKeyRef"]["name"]
            for env_from in c.get("envFrom") or []:
                if ((env_from or {}).get("secretRef") or {}).get("name"):
                    yield "Secret", env_from["secretRef"]["name"]
                if ((env_from or {}).get("configMapRef") or {}).get("name"):
                    yield "ConfigMap", env_from["configMapRef"]["name"]


def vm_references(vm: dict[str, Any]) -> Iterable[tuple[str, str]]:
    spec = vm.get("spec") or {}
    cloud_init = (spec.get("bootstrap") or {}).get("cloudInit") or {}
    raw = cloud_init.get("rawCloudConfig")
    if isinstance(raw, dict) and raw.get("name"):
        yield "Secret", raw["name"]
    for vol in spec.get("volumes") or []:
        if isinstance(vol, dict) and (vol.get("persistentVolumeClaim") or {}).get("claimName"):
            yield "PersistentVolumeClaim", vol["persistentVolumeClaim"]["claimName"]
