"""Every namespace gets a ``default`` ServiceAccount and the ``kube-root-ca.crt`` ConfigMap.

Upstream's serviceaccounts-controller and root-ca-cert-publisher in one: a
namespace is reconciled when it appears, and again when either object in it
is deleted or changed (the ConfigMap is put back to the cluster's CA).
Namespaces being deleted are left alone.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from atoll.api import errors
from atoll.client.informer import Informer
from atoll.client.rest import ApiClient
from atoll.client.workqueue import WorkQueue
from atoll.controllers.runner import run_workers

log = logging.getLogger(__name__)
ROOT_CA = "kube-root-ca.crt"
DESCRIPTION = "kubernetes.io/description"


class ServiceAccountsController:
    name = "serviceaccounts"

    def __init__(self, client: ApiClient, ca_pem: bytes, *, workers: int = 2) -> None:
        self.client = client
        self.ca = ca_pem.decode()
        self.workers = workers
        self.namespaces = Informer(client, "", "v1", "namespaces")
        self.accounts = Informer(client, "", "v1", "serviceaccounts",
                                 field_selector="metadata.name=default", metadata_only=True)
        self.configmaps = Informer(client, "", "v1", "configmaps",
                                   field_selector=f"metadata.name={ROOT_CA}")
        self.queue: WorkQueue[str] = WorkQueue(base_delay=0.05, max_delay=10.0)
        self.namespaces.add_handler(lambda kind, ns, old: kind != "DELETED" and
                                    self.queue.add(ns["metadata"]["name"]))
        for informer in (self.accounts, self.configmaps):
            informer.add_handler(self._on_object)

    def _on_object(self, kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        ns = obj["metadata"].get("namespace")
        if ns and (kind == "DELETED" or obj.get("data", {}).get("ca.crt", self.ca) != self.ca):
            self.queue.add(ns)

    async def run(self) -> None:
        informers = (self.namespaces, self.accounts, self.configmaps)
        tasks = [asyncio.create_task(i.run()) for i in informers]
        try:
            await asyncio.gather(*(i.synced.wait() for i in informers))
            await run_workers(self.name, self.queue, self.reconcile, self.workers)
        finally:
            for t in tasks:
                t.cancel()

    async def reconcile(self, namespace: str) -> float | None:
        ns = self.namespaces.get(namespace)
        if ns is None or ns["metadata"].get("deletionTimestamp") or \
                (ns.get("status") or {}).get("phase") == "Terminating":
            return None
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
            return 30.0
        return None

    async def _create(self, path: str, body: dict[str, Any]) -> None:
        try:
            await self.client.create(path, body)
        except errors.AlreadyExists:
            pass
