"""The host agent ("Spherelet"): this host's Node, and a pod worker per pod bound to it.

It watches only the pods bound to its node (``fieldSelector=spec.nodeName``),
starts a ``PodWorker`` for each, forwards every change to it, and, after the
first list, cleans up whatever belongs to pods that no longer exist (their
containers, IP leases, network namespaces and volumes): a host never keeps
leftovers of a pod deleted while the agent was down.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import urllib.parse
from pathlib import Path
from typing import Any

from atoll.agent.host import nodeslice
from atoll.agent.dns.records import ClusterRecords, slices_by_service
from atoll.agent.dns.server import ClusterDNS
from atoll.agent.host.network import CNI, NetworkSettings
from atoll.agent.ingress import proxy as ingress
from atoll.agent.netpol import enforcer as netpol
from atoll.agent.proxy import proxier as service_proxy
from atoll.agent.proxy.proxier import Proxier, table_name
from atoll.agent.proxy.rules import ProxySettings
from atoll.agent.host.node import NodeAgent, NodeSettings, runc_version
from atoll.agent.host.lbannounce import LoadBalancerAnnouncer
from atoll.agent.host.roaming import RoamingRoutes
from atoll.agent.host.routes import PodRoutes
from atoll.agent.host.loadreport import LoadReport
from atoll.agent.host.stats import StatsCollector
from atoll.agent.host.syncreport import SyncReport
from atoll.agent.images.imagegc import GCSettings, ImageGC
from atoll.agent.images.puller import ImagePuller, PullSettings
from atoll.agent.images.registry import RegistrySettings
from atoll.agent.images.store import ImageStore
from atoll.agent.pods.worker import PodWorker, WorkerSettings
from atoll.agent.podvm.dispatch import HandlerRuntimes
from atoll.agent.podvm.runtime import HANDLER as POD_VM_HANDLER
from atoll.agent.podvm.runtime import PodVMRuntime, unavailable as pod_vms_unavailable
from atoll.agent.runtime.containers import ContainerMeta, ContainerRuntime
from atoll.agent.runtime.mounts import unmount_all_under
from atoll.agent.storage.node import NodeStorage
from atoll.agent.streams.server import AgentServer, Identity, Lookups
from atoll.agent.vms.manager import VMManager
from atoll.agent.vms.worker import VMWorker, VMWorkerSettings
from atoll.client import kubeconfig
from atoll.client.events import EventRecorder
from atoll.client.factory import InformerFactory
from atoll.client.rest import ApiClient
from atoll.settings import AgentSettings

log = logging.getLogger(__name__)


class Agent:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        s = settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        config = kubeconfig.load(s.kubeconfig)
        self.ca_pem = config.ca_pem
        if s.server:
            config.server = s.server.rstrip("/")
        self.client = ApiClient(config, user_agent=f"atoll-agent/{s.name}")
        self.images = ImageStore(s.data_dir / "images")
        self.puller = ImagePuller(self.images, PullSettings(
            registry=RegistrySettings(insecure=s.insecure_registries,
                                      ca_file=s.registry_ca_file, mirrors=s.registry_mirrors,
                                      read_timeout=s.registry_read_timeout),
            credentials_file=s.registry_credentials_file,
            max_layer_bytes=s.image_max_layer_bytes))
        run_dir = s.run_dir or Path("/run/atoll") / s.name
        self.runtime = ContainerRuntime(run_dir / "containers", runc=s.runtime,
                                        runc_root=run_dir / "runc")
        #: pod-VMs (RuntimeClass handler ``atoll-vm``) where QEMU can run them
        self.podvms = PodVMRuntime(run_dir / "podvm",
                                   accel=lambda kernel: self.vms.accelerator(kernel))
        runtimes = {"": self.runtime, "runc": self.runtime}
        if not pod_vms_unavailable():
            runtimes[POD_VM_HANDLER] = self.podvms
        else:
            log.warning("pod-VMs are not offered: %s", pod_vms_unavailable())
        self.pod_runtime = HandlerRuntimes(runtimes, self._runtime_handler)
        self.cni = CNI(NetworkSettings(pod_cidr=s.pod_cidr, cluster_cidr=s.cluster_cidr,
                                       bridge=s.bridge,
                                       cni_bin_dir=s.cni_bin_dir,
                                       state_dir=s.data_dir / "cni"))
        self.node = NodeAgent(self.client, NodeSettings(
            name=s.name, data_dir=s.data_dir, host_ip=s.host_ip, pod_cidr=s.pod_cidr,
            lease_interval=s.lease_interval, lease_seconds=s.lease_seconds, port=s.port,
            runtime_version=runc_version(s.runtime), labels=s.labels,
            runtime_handlers=self.pod_runtime.handlers), images=self.images)
        api_host, api_port = api_endpoint_for_pods(config.server, s.host_ip)
        self.worker_settings = WorkerSettings(node_name=s.name, host_ip=s.host_ip,
                                              pods_dir=s.data_dir / "pods",
                                              backoff_base=s.backoff_base,
                                              backoff_max=s.backoff_max,
                                              api_host=api_host, api_port=api_port,
                                              cluster_dns=s.cluster_dns or
                                              str(self.cni.ipam.gateway),
                                              cluster_domain=s.cluster_domain,
                                              runtime_handlers=self.pod_runtime.handlers)
        #: one informer per resource for the whole agent, as in the controller manager
        self.informers = InformerFactory(self.client)
        self.pods = self.informers.informer("", "v1", "pods",
                                            field_selector=f"spec.nodeName={s.name}")
        self.pods.add_handler(self._on_pod)
        services = self.informers.informer("", "v1", "services")
        slices = self.informers.informer("discovery.k8s.io", "v1", "endpointslices",
                                         indexers={"service": slices_by_service})
        #: the cluster DNS this host answers its pods with, on the pod bridge's address
        self.dns = ClusterDNS(ClusterRecords(
            services, slices, s.cluster_domain,
            self.informers.informer("networking.k8s.io", "v1", "servicecidrs"),
            [s.cluster_cidr or s.pod_cidr]), str(self.cni.ipam.gateway))
        #: the Service dataplane: this host's nftables table
        self.proxier = Proxier(services, slices, ProxySettings(
            table_name(s.bridge), s.name, s.cluster_cidr or s.pod_cidr, s.host_ip),
            dataplane_report(self, service_proxy.CONDITION, service_proxy.FAILED_REASON,
                             "atoll-service-proxy"))
        #: the HTTP router of Ingresses (class atoll), behind kube-system/atoll-ingress
        self.ingress = ingress.IngressProxy(
            self.informers.informer("networking.k8s.io", "v1", "ingresses"), services, slices,
            str(self.cni.ipam.gateway), self.client)
        #: NetworkPolicies for this host's pods and VMs (peers are every host's)
        self.policies = netpol.PolicyEnforcer(
            self.informers.informer("networking.k8s.io", "v1", "networkpolicies"),
            self.informers.informer("", "v1", "pods"),
            self.informers.informer("", "v1", "namespaces"),
            netpol.table_name(s.bridge), s.name,
            dataplane_report(self, netpol.CONDITION, netpol.FAILED_REASON,
                             "atoll-network-policy"),
            vms=self.informers.informer("vmoperator.vmware.com", "v1alpha3", "virtualmachines"),
            vm_address=self._vm_address)
        self.workers: dict[str, PodWorker] = {}
        #: containers on disk at start, by pod uid: adopted by the first worker of each pod
        self._found: dict[str, list[ContainerMeta]] = {}
        for meta in [*self.runtime.list(), *self.podvms.list()]:
            self._found.setdefault(meta.pod_uid, []).append(meta)
        self.vms = VMManager(self.client, self.informers, VMWorkerSettings(
            node_name=s.name, data_dir=s.data_dir / "vms", run_dir=run_dir / "vms",
            soft_timeout=s.vm_soft_timeout, silent_boot_timeout=s.vm_silent_boot_timeout,
            host_ip=s.host_ip),
            self.cni, s.data_dir / "vmimages")
        #: local volumes: the janitor of deleted PVs' data, the capacity this host reports
        self.storage = NodeStorage(self.client, self.informers, s.data_dir, s.name)
        #: (Service, address, ports) of the servers this host answers on for its pods
        self._served: list[tuple[str, str, list[dict[str, Any]]]] = []
        self.node.on_isolated.append(self.vms.fence)
        self.node.on_reconnected.append(self.vms.unfence)
        self.stats = StatsCollector(self._running_containers, vms=self._running_vms)
        #: the measured load DRS balances on, an annotation on this host's Node
        self.load_report = LoadReport(self.client, s.name, self.stats.load)
        self.stats.on_sample.append(self.load_report.sampled)
        self.server: AgentServer | None = None

    async def _publish_served(self) -> None:
        """This host's slices of the servers it runs for its pods (DNS, the Ingress router)."""
        for service, address, ports in self._served:
            await nodeslice.publish(self.client, service, self.settings.name, address, ports)

    async def _node_replaced(self) -> None:
        """A deleted Node took its slices and capacity along: publish them again."""
        await self._publish_served()
        self.storage.capacity.node_replaced()

    async def run(self) -> None:
        await self.node.keep_lease()
        if self.images.ensure_busybox() is None:
            log.warning("no busybox binary on this host: the built-in busybox image is missing")
        await self.cni.ensure_masquerade()
        lookups = Lookups(pod=self.pod_worker, vm=self.vm_worker,
                          stats=lambda: self.stats.summary(self.settings.name))
        self.server = AgentServer(lookups, self.runtime, self.settings.port, Identity(
            self.settings.data_dir / "pki", self.settings.name, self.settings.host_ip))
        await self.server.start(self.ca_pem)
        await self.node.register()
        self.informers.start()
        try:
            await self.dns.start()
            self._served.append(("kube-dns", self.dns.address, nodeslice.DNS_PORTS))
        except OSError as e:  # a host without its DNS still runs its pods
            log.error("cannot serve cluster DNS on %s:53: %s", self.dns.address, e)
        try:
            await self.ingress.start()
            self._served.append(("atoll-ingress", self.ingress.address, ingress.PORTS))
        except OSError as e:
            log.error("cannot serve Ingresses on %s:80: %s", self.ingress.address, e)
        await self._publish_served()
        self.node.on_registered_again.append(self._node_replaced)
        heartbeat = asyncio.create_task(self.node.heartbeat(), name="heartbeat")
        vms = asyncio.create_task(self.vms.run(), name="vms")
        tasks = [heartbeat, vms, asyncio.create_task(self.stats.run(), name="stats"),
                 asyncio.create_task(self._proxy(), name="service-proxy"),
                 asyncio.create_task(self._policies(), name="network-policy"),
                 asyncio.create_task(self.storage.run(), name="storage"),
                 # LoadBalancer pool addresses this host answers ARP for
                 asyncio.create_task(LoadBalancerAnnouncer(
                     self.client, self.informers, self.settings.name, self.settings.host_ip,
                     self.settings.data_dir / "lb-addresses.json").run(), name="lb-announcer")]
        image_gc = ImageGC(self.images, GCSettings(
            high_percent=self.settings.image_gc_high_threshold,
            low_percent=self.settings.image_gc_low_threshold,
            min_age=self.settings.image_gc_min_age), self._images_in_use, self.puller.last_used)
        tasks.append(asyncio.create_task(image_gc.run(), name="image-gc"))
        if self.settings.pod_routes:
            tasks.append(asyncio.create_task(PodRoutes(
                self.client, self.informers, self.settings.name, self.settings.host_ip,
                self.settings.pod_cidr).run(), name="pod-routes"))
            # live-migrated VMs keep their address: /32s follow them between hosts
            tasks.append(asyncio.create_task(RoamingRoutes(
                self.client, self.informers, self.settings.name, self.settings.host_ip,
                self.settings.pod_cidr, self.settings.bridge).run(), name="roaming-routes"))
        try:
            await self.informers.wait_for_sync([self.pods])
            await self._collect_orphans()
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await self.dns.stop()
            await self.ingress.stop()
            await self.informers.stop()

    async def _proxy(self) -> None:
        """The Service table, programmed once both informers hold the whole picture."""
        await self.informers.wait_for_sync([self.proxier.services, self.proxier.slices])
        await self.proxier.run()

    async def _policies(self) -> None:
        """The policy table, programmed once every peer is known (never half a picture)."""
        await self.informers.wait_for_sync(self.policies.informers)
        await self.policies.run()

    def pod_worker(self, namespace: str, name: str) -> PodWorker | None:
        """The worker of the pod ``namespace/name`` (the first, while an old one finishes)."""
        return next((w for w in self.workers.values()
                     if w.pod["metadata"].get("namespace") == namespace
                     and w.pod["metadata"].get("name") == name), None)

    def _vm_address(self, uid: str) -> str | None:
        """The address this host gave the VM ``uid`` (for its policies), if it runs here."""
        worker = self.vms.workers.get(uid) if hasattr(self, "vms") else None
        return worker.address.ip if worker is not None and worker.address else None

    def vm_worker(self, uid: str) -> VMWorker | None:
        return self.vms.workers.get(uid)

    def _images_in_use(self) -> set[str]:
        """Images (refs and ids) of every container on this host, running or exited."""
        used: set[str] = set()
        for meta in [*self.runtime.list(), *self.podvms.list()]:
            used.update((meta.image, meta.image_id))
        for worker in list(self.workers.values()):
            for ref, _ in worker.pulls.values():
                used.add(ref)
        return used

    def _running_containers(self) -> list[tuple[str, str, str, str, str]]:
        """(namespace, pod, pod uid, container, cgroup) of each running container, for stats."""
        out = []
        for worker in list(self.workers.values()):
            meta = worker.pod["metadata"]
            for name, attempts in worker.attempts.items():
                if attempts and attempts[-1].exit is None:
                    out.append((meta.get("namespace", ""), meta.get("name", ""), worker.uid, name,
                                f"/atoll/{self.settings.name}/{worker.uid}-{name}"))
        return out

    def _running_vms(self) -> list[tuple[str, int]]:
        """("namespace/name", QEMU pid) of each VM whose QEMU runs here, for stats and DRS."""
        return [(w.key, w.qemu.pid) for w in list(self.vms.workers.values())
                if w.qemu.running and w.qemu.pid is not None]

    def _runtime_handler(self, uid: str) -> str | None:
        """The RuntimeClass handler the pod's worker resolved (None: no worker, not yet)."""
        worker = self.workers.get(uid)
        return worker.runtime_handler if worker is not None else None

    async def close(self) -> None:
        await self.vms.close()
        await self.podvms.detach()  # pod-VMs run on: the next agent takes them over
        await self.puller.close()
        if self.server is not None:
            await self.server.stop()
        await self.client.close()

    def _on_pod(self, kind: str, pod: dict[str, Any], old: dict[str, Any] | None) -> None:
        uid = pod["metadata"].get("uid", "")
        worker = self.workers.get(uid)
        if kind == "DELETED":
            if worker is not None:
                worker.update(None)
            return
        if worker is None:
            worker = PodWorker(pod, client=self.client, runtime=self.pod_runtime,
                               images=self.images, cni=self.cni, settings=self.worker_settings,
                               puller=self.puller)
            self.workers[uid] = worker
            worker.start(self._found.pop(uid, None))
            asyncio.get_running_loop().create_task(self._forget_when_done(uid, worker))
        else:
            worker.update(pod)

    async def _forget_when_done(self, uid: str, worker: PodWorker) -> None:
        await worker.finished.wait()
        if self.workers.get(uid) is worker:
            del self.workers[uid]

    async def _collect_orphans(self) -> None:
        """Remove containers, networks and files of pods this node no longer has."""
        live = {p["metadata"].get("uid") for p in self.pods.list()}
        orphans = {uid for uid in self._found if uid not in live}
        pods_dir = self.worker_settings.pods_dir
        if pods_dir.is_dir():
            orphans |= {d.name for d in pods_dir.iterdir() if d.is_dir() and d.name not in live}
        for uid in orphans:
            log.info("cleaning up after pod %s, which is gone", uid)
            pod = {"metadata": {"uid": uid, "name": uid, "namespace": "",
                                "deletionGracePeriodSeconds": 1}, "spec": {}}
            worker = PodWorker(pod, client=self.client, runtime=self.pod_runtime,
                               images=self.images, cni=self.cni, settings=self.worker_settings,
                               puller=self.puller)
            worker._adopt(self._found.pop(uid, []))
            worker.deleted_from_api = True
            await worker.sync()
            self._remove_pod_dir(pods_dir / uid)

    @staticmethod
    def _remove_pod_dir(path: Path) -> None:
        """Delete a gone pod's directory, never through a mount: a bind-mounted volume or
        subPath still attached below it would otherwise have its host files deleted."""
        left = unmount_all_under(str(path))
        if left:
            log.warning("not removing %s: still mounted at %s", path, ", ".join(left))
            return
        shutil.rmtree(path, ignore_errors=True)


def api_endpoint_for_pods(server: str, host_ip: str) -> tuple[str, int]:
    """The API server's address as a pod sees it: the agent's own server URL (the first of
    several), with a loopback host replaced by this host's address (a pod has its own lo)."""
    url = urllib.parse.urlsplit(server.split(",")[0].strip())
    try:
        port = url.port or 443
    except ValueError:
        return "", 0
    host = url.hostname or ""
    if host == "localhost" or host.startswith("127.") or host == "::1":
        host = host_ip
    return host, port


def dataplane_report(agent: "Agent", condition: str, reason: str, component: str) -> SyncReport:
    """A dataplane's Events (its own recorder) and Node condition (the node status path)."""
    return SyncReport(agent.settings.name, condition, reason,
                      EventRecorder(agent.client, component), agent.node)
