"""The controller manager: builds one API client and runs every controller as a named,
guarded task; if one ends unexpectedly it is logged and restarted."""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from typing import Any

from atoll.client import kubeconfig
from atoll.client.leaderelection import ElectionConfig, LeaderElector
from atoll.client.informer import Informer
from atoll.client.rest import ApiClient
from atoll.controllers.clusterroleaggregation import ClusterRoleAggregationController
from atoll.controllers.csrcleaner import CSRCleaner
from atoll.controllers.garbagecollector import GarbageCollector
from atoll.controllers.namespace import NamespaceController
from atoll.controllers.nodelifecycle import NodeLifecycleController
from atoll.controllers.daemonset import DaemonSetController
from atoll.controllers.deployment import DeploymentController
from atoll.controllers.job import JobController
from atoll.controllers.replicaset import ReplicaSetController
from atoll.controllers.resourcequota import ResourceQuotaController
from atoll.controllers.statefulset import StatefulSetController
from atoll.controllers.scheduler import Scheduler
from atoll.controllers.serviceaccounts import ServiceAccountsController
from atoll.controllers.vmoperator.classes import DefaultClassesController
from atoll.controllers.vmoperator.virtualmachine import VirtualMachineController
from atoll.controllers.vmoperator.vmservice import VirtualMachineServiceController
from atoll.settings import ControllerSettings

log = logging.getLogger(__name__)
LEASE_NAME = "atoll-controller-manager"


class SharedInformer:
    """Runs an informer several controllers read, guarded like a controller."""

    def __init__(self, name: str, informer: Informer) -> None:
        self.name = name
        self.informer = informer

    async def run(self) -> None:
        await self.informer.run()


class ControllerManager:
    def __init__(self, settings: ControllerSettings) -> None:
        self.settings = settings
        config = kubeconfig.load(settings.kubeconfig)
        if settings.server:
            config.server = settings.server
        self.client = ApiClient(config, user_agent="atoll-controller-manager")
        pods = Informer(self.client, "", "v1", "pods")  # one pod cache for the workload controllers
        self.controllers: list[Any] = [
            GarbageCollector(self.client, workers=settings.workers),
            NamespaceController(self.client, workers=max(1, settings.workers // 2)),
            NodeLifecycleController(self.client),
            SharedInformer("pod-informer", pods),
            ReplicaSetController(self.client, workers=settings.workers, pods=pods),
            JobController(self.client, workers=settings.workers, pods=pods),
            DeploymentController(self.client, workers=settings.workers),
            DaemonSetController(self.client, pods=pods),
            StatefulSetController(self.client, pods=pods),
            Scheduler(self.client),
            VirtualMachineController(self.client, pods=pods),
            DefaultClassesController(self.client),
            VirtualMachineServiceController(self.client),
            ResourceQuotaController(self.client),
            ClusterRoleAggregationController(self.client),
            CSRCleaner(self.client),
        ]
        if config.ca_pem:  # the CA to publish in every namespace (kube-root-ca.crt)
            self.controllers.append(ServiceAccountsController(self.client, config.ca_pem))
        self.tasks: list[asyncio.Task[None]] = []

    async def run_until(self, stop: asyncio.Event) -> int:
        """Run the controllers until ``stop``; with leader election only while leading.

        A manager that loses the lease stops acting and exits (1): whoever supervises it
        (``atoll up``) starts it again as a candidate, with clean caches.
        """
        elector = None
        if self.settings.leader_elect:
            elector = LeaderElector(self.client, ElectionConfig(
                "kube-system", LEASE_NAME, f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}",
                self.settings.lease_duration_seconds, self.settings.renew_deadline_seconds,
                self.settings.retry_period_seconds))
            acquiring = asyncio.create_task(elector.acquire())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not acquiring.done():
                acquiring.cancel()
                await self.client.close()
                return 0
            stopping.cancel()
        await self.start()
        waits = {asyncio.create_task(stop.wait())}
        if elector is not None:
            waits.add(asyncio.create_task(elector.hold()))
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
        lost = elector is not None and elector.lost.is_set()
        if elector is not None and not lost:
            await elector.release()
        await self.stop()
        return 1 if lost else 0

    async def start(self) -> None:
        for c in self.controllers:
            self.tasks.append(asyncio.create_task(self._guard(c), name=c.name))

    async def _guard(self, controller: Any) -> None:
        delay = 0.5
        while True:
            try:
                await controller.run()
                log.warning("controller %s stopped; restarting", controller.name)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("controller %s failed; restarting in %.1fs", controller.name, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.client.close()
