"""Every namespace gets a ``default`` ServiceAccount and the ``kube-root-ca.crt`` ConfigMap.

Upstream's serviceaccounts-controller and root-ca-cert-publisher in one: a
namespace is reconciled when it appears, and again when either object in it
is deleted or changed (the ConfigMap is put back to the cluster's CA).
Namespaces being deleted are left alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from atoll.api import errors
from atoll.client.controller import DONE, Builder, Controller, Result, requeue_after
from atoll.client.factory import InformerFactory
from atoll.client.rest import ApiClient
from atoll.settings import ReconcileSettings

log = logging.getLogger(__name__)
ROOT_CA = "kube-root-ca.crt"
DESCRIPTION = "kubernetes.io/description"
#: seconds before a namespace that refused our objects (terminating, quota) is tried again
FORBIDDEN_RETRY = 30.0


class ServiceAccountsController(Controller):
    name = "serviceaccounts"
    default_workers = 2
    backoff = (0.05, 10.0)

    def __init__(self, client: ApiClient, factory: InformerFactory, *, ca_pem: bytes,
                 workers: int | None = None, settings: ReconcileSettings | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.ca = ca_pem.decode()
        super().__init__(client, factory, workers=workers, settings=settings, clock=clock)

    def declare(self, b: Builder) -> None:
        self.namespaces = b.primary("", "v1", "namespaces")
        # the garbage collector's metadata cache of every account: one watch, not two
        self.accounts = b.watches("", "v1", "serviceaccounts", self._account_changed,
                                  metadata_only=True)
        # every ConfigMap in full, as upstream's root CA publisher: the process's one
        # configmaps watch (the quota controller and the garbage collector share it)
        self.configmaps = b.watches("", "v1", "configmaps", self._configmap_changed)

    @staticmethod
    def _account_changed(kind: str, obj: dict[str, Any],
                         old: dict[str, Any] | None) -> Iterable[str]:
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace")
        return [ns] if ns and meta.get("name") == "default" and kind == "DELETED" else []

    def _configmap_changed(self, kind: str, obj: dict[str, Any],
                           old: dict[str, Any] | None) -> Iterable[str]:
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace")
        if ns and meta.get("name") == ROOT_CA and (
                kind == "DELETED" or (obj.get("data") or {}).get("ca.crt", self.ca) != self.ca):
            return [ns]
        return []

    async def reconcile(self, namespace: str) -> Result:
        ns = self.namespaces.get(namespace)
        if ns is None or ns["metadata"].get("deletionTimestamp") or \
                (ns.get("status") or {}).get("phase") == "Terminating":
            return DONE
        try:
            if self.accounts.get(f"{namespace}/default") is None:
                await self._create(f"/api/v1/namespaces/{namespace}/serviceaccounts", {
                    "apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": "default"}})
            cm = self.configmaps.get(f"{namespace}/{ROOT_CA}")
            body = {"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": ROOT_CA, "annotations": {
                        DESCRIPTION: "Contains a CA bundle that can be used to verify the "
                                     "kube-apiserver when using internal endpoints such as the "
                                     "internal service IP or kubernetes.default.svc. No other "
                                     "usage is guaranteed across distributions of Kubernetes "
                                     "clusters."}},
                    "data": {"ca.crt": self.ca}}
            if cm is None:
                await self._create(f"/api/v1/namespaces/{namespace}/configmaps", body)
            elif (cm.get("data") or {}).get("ca.crt") != self.ca:
                await self.client.patch(f"/api/v1/namespaces/{namespace}/configmaps/{ROOT_CA}",
                                        {"data": {"ca.crt": self.ca}})
        except errors.Forbidden as err:
            # a terminating namespace, or a quota that leaves no room: say so, try later
            log.info("namespace %s: %s", namespace, err)
            return requeue_after(FORBIDDEN_RETRY)
        return DONE

    async def _create(self, path: str, body: dict[str, Any]) -> None:
        try:
            await self.client.create(path, body)
        except errors.AlreadyExists:
            pass
