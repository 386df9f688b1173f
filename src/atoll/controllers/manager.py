"""The controller manager: one API client, one informer factory (so one watch per resource
for the whole process), every controller as a named, guarded task (if one ends unexpectedly it
is logged and restarted), and their work-queue metrics on ``/metrics``."""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import uuid
from typing import Any

from aiohttp import web

from atoll.client import kubeconfig
from atoll.client.controller import Controller, register_metrics
from atoll.client.factory import InformerFactory
from atoll.client.leaderelection import ElectionConfig, LeaderElector
from atoll.client.metrics import Registry
from atoll.client.rest import ApiClient
from atoll.controllers.clusterroleaggregation import ClusterRoleAggregationController
from atoll.controllers.cronjob import CronJobController
from atoll.controllers.csrcleaner import CSRCleaner
from atoll.controllers.daemonset import DaemonSetController
from atoll.controllers.deployment import DeploymentController
from atoll.controllers.disruption import DisruptionController
from atoll.controllers.endpoints import EndpointsController
from atoll.controllers.endpointslice import EndpointSliceController
from atoll.controllers.endpointslicemirroring import EndpointSliceMirroringController
from atoll.controllers.ingressstatus import IngressStatusController
from atoll.controllers.loadbalancer import LoadBalancerController
from atoll.controllers.garbagecollector import GarbageCollector
from atoll.controllers.hpa import HorizontalPodAutoscalerController
from atoll.controllers.job import JobController
from atoll.controllers.namespace import NamespaceController
from atoll.controllers.hostslices import HostSliceController
from atoll.controllers.nodelifecycle import NodeLifecycleController
from atoll.controllers.replicaset import ReplicaSetController
from atoll.controllers.replicationcontroller import ReplicationControllerController
from atoll.controllers.resourcequota import ResourceQuotaController
from atoll.controllers.scheduler import Scheduler
from atoll.controllers.serviceaccounts import ServiceAccountsController
from atoll.controllers.statefulset import StatefulSetController
from atoll.controllers.vmoperator.classes import DefaultClassesController
from atoll.controllers.vmoperator.drs import DRSController
from atoll.controllers.vmoperator.evacuation import EvacuationController
from atoll.controllers.vmoperator.migration import MigrationController
from atoll.controllers.vmoperator.replicaset import VirtualMachineReplicaSetController
from atoll.controllers.vmoperator.vmgroup import VirtualMachineGroupController
from atoll.controllers.vmoperator.webconsole import WebConsoleRequestController
from atoll.controllers.vmoperator.virtualmachine import VirtualMachineController
from atoll.controllers.vmoperator.vmservice import VirtualMachineServiceController
from atoll.controllers.vmoperator.vmsnapshot import VirtualMachineSnapshotController
from atoll.controllers.volume.expander import VolumeExpander
from atoll.controllers.volume.localprovisioner import LocalProvisioner
from atoll.controllers.volume.protection import StorageProtectionController
from atoll.controllers.volume.snapshotcontroller import SnapshotController
from atoll.controllers.volume.pvcontroller import PersistentVolumeController
from atoll.controllers.volume.vmclaims import VMClaimsController
from atoll.settings import ControllerSettings

log = logging.getLogger(__name__)
LEASE_NAME = "atoll-controller-manager"


class ControllerManager:
    def __init__(self, settings: ControllerSettings) -> None:
        self.settings = settings
        config = kubeconfig.load(settings.kubeconfig)
        if settings.server:
            config.server = settings.server
        self.client = ApiClient(config, user_agent="atoll-controller-manager")
        self.factory = InformerFactory(self.client)
        workers = settings.workers
        self.controllers: list[Any] = [
            self._make(GarbageCollector, workers),
            self._make(NamespaceController, max(1, workers // 2)),
            self._make(NodeLifecycleController),
            self._make(HostSliceController),
            self._make(ReplicaSetController, workers),
            self._make(ReplicationControllerController),
            self._make(JobController, workers),
            self._make(CronJobController),
            self._make(DeploymentController, workers),
            self._make(DaemonSetController),
            self._make(StatefulSetController),
            self._make(HorizontalPodAutoscalerController),
            self._make(DisruptionController),
            self._make(EndpointSliceController, workers),
            self._make(EndpointsController, workers),
            self._make(EndpointSliceMirroringController),
            self._make(LoadBalancerController),
            self._make(IngressStatusController),
            self._make(Scheduler),
            self._make(VirtualMachineController),
            self._make(MigrationController),
            self._make(EvacuationController),
            self._make(DRSController),
            self._make(DefaultClassesController),
            self._make(VirtualMachineServiceController),
            self._make(VirtualMachineSnapshotController),
            self._make(VirtualMachineReplicaSetController),
            self._make(WebConsoleRequestController),
            self._make(VirtualMachineGroupController),
            self._make(ResourceQuotaController),
            self._make(ClusterRoleAggregationController),
            self._make(CSRCleaner),
            self._make(PersistentVolumeController),
            self._make(LocalProvisioner),
            self._make(StorageProtectionController),
            self._make(VMClaimsController),
            self._make(VolumeExpander),
            self._make(SnapshotController),
        ]
        if config.ca_pem:  # the CA to publish in every namespace (kube-root-ca.crt)
            self.controllers.append(self._make(ServiceAccountsController, ca_pem=config.ca_pem))
        self.tasks: list[asyncio.Task[None]] = []
        self.metrics = Registry()
        register_metrics(self.metrics, self.controllers)
        self._metrics_runner: web.AppRunner | None = None

    def _make(self, cls: type, workers: int | None = None, **extra: Any) -> Any:
        if issubclass(cls, Controller):
            return cls(self.client, self.factory, workers=workers,
                       settings=self.settings.reconcile, **extra)
        # the scheduler has its own queue; it takes what its constructor names
        params = inspect.signature(cls).parameters
        offered = {"factory": self.factory, "workers": workers,
                   "pods": self.factory.informer("", "v1", "pods"), **extra}
        return cls(self.client, **{k: v for k, v in offered.items()
                                   if k in params and v is not None})

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
        await self._serve_metrics()
        self.factory.start()
        for c in self.controllers:
            self.tasks.append(asyncio.create_task(self._guard(c), name=c.name))

    async def _serve_metrics(self) -> None:
        address = self.settings.metrics_bind_address
        if not address:
            return
        host, _, port = address.rpartition(":")

        async def metrics(request: web.Request) -> web.Response:
            return web.Response(text=self.metrics.render(),
                                content_type="text/plain", charset="utf-8")

        async def healthz(request: web.Request) -> web.Response:
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", healthz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host.strip("[]") or "127.0.0.1", int(port)).start()
        except (OSError, ValueError) as exc:
            log.warning("metrics not served on %s: %s", address, exc)
            await runner.cleanup()
            return
        self._metrics_runner = runner

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
        await self.factory.stop()
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
        await self.client.close()
