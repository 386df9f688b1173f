"""ServiceAccount admission: every pod runs as a ServiceAccount, and gets its token, as upstream.

``spec.serviceAccountName`` defaults to ``default``.  A pod naming another
ServiceAccount that does not exist is refused (the ``default`` one is created
by the ServiceAccount controller moments after its namespace, so a pod racing
it is let through; its token arrives once the account exists).  Unless the pod
or its account sets ``automountServiceAccountToken: false``, the pod gets the
projected volume ``kube-api-access-<5 chars>``: a short-lived token bound to
the pod, the cluster CA and the namespace, mounted read-only at
``/var/run/secrets/kubernetes.io/serviceaccount`` in every container and init
container that has nothing mounted there already.
"""

from __future__ import annotations

import random
from typing import Any

from atoll.api import errors
from atoll.api.resources.core_v1 import SERVICEACCOUNTS
from atoll.api.resourcetype import ResourceType
from atoll.api.strategy import ObjectReader, WriteOptions
from atoll.apiserver.admission import BasePlugin


MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
TOKEN_SECONDS = 3607
ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
VOLUME_PREFIX = "kube-api-access-"


def access_volume(name: str) -> dict[str, Any]:
    return {"name": name, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": TOKEN_SECONDS, "path": "token"}},
        {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt",
                                                             "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
            "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}}


class ServiceAccountAdmission(BasePlugin):
    def mutate_create(self, svc: ObjectReader, rt: ResourceType, obj: dict[str, Any],
                      opts: WriteOptions) -> None:
        if rt.group or rt.plural != "pods":
            return
        spec = obj.setdefault("spec", {})
        if not isinstance(spec, dict):
            return
        name = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        if not isinstance(name, str):
            return  # validation refuses it with the field's path
        spec["serviceAccountName"] = name
        spec.setdefault("serviceAccount", name)
        namespace = obj["metadata"].get("namespace", "")
        sa = svc.read(SERVICEACCOUNTS, namespace, name)
        if sa is None and name != "default":
            raise errors.Forbidden(
                f'pods "{obj["metadata"].get("name", "")}" is forbidden: error looking up '
                f'service account {namespace}/{name}: serviceaccount "{name}" not found',
                name=obj["metadata"].get("name", ""), kind="pods")
        if not _automount(spec, sa.obj if sa else None):
            return
        _mount_token(spec)


def _mount_token(spec: dict[str, Any]) -> None:
    """Mount the token volume in every (init) container that has nothing at the path yet,
    reusing a ``kube-api-access-*`` volume the pod already has (a copied pod), as upstream."""
    volumes = [v for v in spec.get("volumes") or [] if isinstance(v, dict)]
    names = {v.get("name") for v in volumes}
    existing = next((str(v["name"]) for v in volumes
                     if str(v.get("name", "")).startswith(VOLUME_PREFIX)), None)
    volume = existing
    while volume is None or (existing is None and volume in names):
        volume = VOLUME_PREFIX + "".join(random.choice(ALPHABET) for _ in range(5))
    needed = False
    for field in ("initContainers", "containers"):
        for c in spec.get(field) or []:
            if not isinstance(c, dict):
                continue
            mounts = c.get("volumeMounts") if isinstance(c.get("volumeMounts"), list) else []
            if any(isinstance(m, dict) and m.get("mountPath") == MOUNT_PATH for m in mounts):
                continue  # the container brings its own
            c["volumeMounts"] = list(mounts) + [
                {"name": volume, "readOnly": True, "mountPath": MOUNT_PATH}]
            needed = True
    if needed and existing is None:
        spec["volumes"] = list(spec.get("volumes") or []) + [access_volume(volume)]


def _automount(spec: dict[str, Any], sa: dict[str, Any] | None) -> bool:
    if spec.get("automountServiceAccountToken") is not None:
        return bool(spec["automountServiceAccountToken"])
    if sa is not None and sa.get("automountServiceAccountToken") is not None:
        return bool(sa["automountServiceAccountToken"])
    return True
