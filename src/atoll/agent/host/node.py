"""This host as a Kubernetes Node: capacity, addresses, node info, conditions, and its Lease.

The Node is created (or taken over) at start with what the host has; its
``Ready`` condition and the pressure conditions are refreshed with every
status heartbeat, and the Lease in ``kube-node-lease`` is renewed every
``lease_interval`` seconds: the node lifecycle controller reads the Lease to
decide a host is gone.  Parts of the agent add conditions of their own (the dataplanes'
``atoll.dev/ServiceProxyHealthy``, ``atoll.dev/NetworkPolicyHealthy``) with
``set_condition``: a change is posted with the next Lease renewal, not the next status.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import aiohttp

from atoll._kits.netaddr import default_route_address
from atoll.agent.images.store import ImageStore
from atoll.api import errors
from atoll.api.timestamps import rfc3339
from atoll.client.events import EventRecorder
from atoll.client.rest import ApiClient

log = logging.getLogger(__name__)
LEASE_NAMESPACE = "kube-node-lease"
AGENT_VERSION = "v1.37.0-atoll"
#: the RuntimeClass handlers runc serves: "" (pods that name no class) and ``runc``
RUNC_HANDLERS: tuple[str, ...] = ("", "runc")


@dataclass(frozen=True)
class NodeSettings:
    name: str
    data_dir: Path
    host_ip: str
    pod_cidr: str
    max_pods: int = 110
    port: int = 10250
    lease_seconds: int = 8
    lease_interval: float = 2.0
    status_interval: float = 10.0
    runtime_version: str = "runc"
    labels: tuple[tuple[str, str], ...] = ()
    #: the RuntimeClass handlers this host has a runtime for (``status.runtimeHandlers``)
    runtime_handlers: tuple[str, ...] = RUNC_HANDLERS


def host_ip() -> str:
    """The address other hosts reach this one on: the source of the default route."""
    return default_route_address()


def _meminfo() -> dict[str, int]:
    out = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            out[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def runc_version(runc: str) -> str:
    try:
        out = subprocess.run([runc, "--version"], capture_output=True, text=True, timeout=5)
        return "runc://" + out.stdout.split()[2]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "runc://unknown"


def capacity(settings: NodeSettings) -> dict[str, str]:
    disk = shutil.disk_usage(settings.data_dir)
    mem = _meminfo().get("MemTotal", 0)
    return {"cpu": str(os.cpu_count() or 1), "memory": f"{mem // 1024}Ki",
            "ephemeral-storage": f"{disk.total // 1024}Ki", "pods": str(settings.max_pods)}


def allocatable(settings: NodeSettings) -> dict[str, str]:
    cap = capacity(settings)
    mem = _meminfo().get("MemTotal", 0)
    reserved = min(mem // 10, 1 << 30)  # keep memory for the host itself
    cap["memory"] = f"{(mem - reserved) // 1024}Ki"
    return cap


def conditions(previous: list[dict[str, Any]], settings: NodeSettings) -> list[dict[str, Any]]:
    mem = _meminfo()
    available = mem.get("MemAvailable", 1)
    total = mem.get("MemTotal", 1)
    disk = shutil.disk_usage(settings.data_dir)
    pid_max = _read_int("/proc/sys/kernel/pid_max", 32768)
    pids = len([p for p in os.listdir("/proc") if p.isdigit()])
    checks = [
        ("MemoryPressure", available < total * 0.05, "KubeletHasInsufficientMemory",
         "KubeletHasSufficientMemory", "memory available"),
        ("DiskPressure", disk.free < disk.total * 0.10, "KubeletHasDiskPressure",
         "KubeletHasNoDiskPressure", "no disk pressure"),
        ("PIDPressure", pids > pid_max * 0.9, "KubeletHasInsufficientPID",
         "KubeletHasSufficientPID", "sufficient PID available"),
    ]
    before = {c.get("type"): c for c in previous}
    now = rfc3339()
    out = []
    for type_, bad, bad_reason, ok_reason, ok_message in checks:
        status = "True" if bad else "False"
        out.append(_condition(before.get(type_), type_, status, bad_reason if bad else ok_reason,
                              f"atoll agent has {ok_message}" if not bad else
                              f"atoll agent reports {type_}", now))
    out.append(_condition(before.get("Ready"), "Ready", "True", "KubeletReady",
                          "atoll agent is posting ready status", now))
    return out


def runtime_handlers(names: tuple[str, ...]) -> list[dict[str, Any]]:
    """``status.runtimeHandlers`` as kubelet reports its CRI's (1.30+): neither recursive
    read-only mounts nor user namespaces are offered to pods here."""
    return [{"name": name, "features": {"recursiveReadOnlyMounts": False,
                                        "userNamespaces": False}} for name in names]


def _condition(old: dict[str, Any] | None, type_: str, status: str, reason: str, message: str,
               now: str) -> dict[str, Any]:
    transition = old.get("lastTransitionTime", now) if old and old.get("status") == status \
        else now
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": transition}


def _read_int(path: str, default: int) -> int:
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return default


class NodeAgent:
    """Registers the Node, posts its status, renews its Lease."""

    def __init__(self, client: ApiClient, settings: NodeSettings,
                 images: ImageStore | None = None) -> None:
        self.client = client
        self.settings = settings
        self.images = images
        self.uid = ""
        #: called once when the Lease has not been renewed for ``isolation_seconds`` (the
        #: host must assume others take its HA-protected VMs), and once when it is again
        self.on_isolated: list[Callable[[], Awaitable[None]]] = []
        self.on_reconnected: list[Callable[[], Awaitable[None]]] = []
        #: after the Node was deleted and registered again: what hangs off it is gone too
        self.on_registered_again: list[Callable[[], Awaitable[None]]] = []
        self.isolated = False
        #: kubelet's node Events (Starting, NodeReady, NodeNotReady); its sender task runs
        #: from the first registration on
        self.events = EventRecorder(client, "kubelet")
        self._events_task: asyncio.Task[None] | None = None
        self._was_ready: bool | None = None
        #: conditions set by other parts of the agent: type -> (status, reason, message)
        self.own_conditions: dict[str, tuple[str, str, str]] = {}
        self._status_due = False

    def set_condition(self, type_: str, status: str, reason: str, message: str) -> None:
        """Report condition ``type_`` on this Node from now on; a change is posted soon."""
        if self.own_conditions.get(type_) != (status, reason, message):
            self.own_conditions[type_] = (status, reason, message)
            self._status_due = True

    def _node_event(self, type_: str, reason: str, message: str) -> None:
        if self._events_task is None or self._events_task.done():
            self._events_task = asyncio.get_running_loop().create_task(
                self.events.run(), name="node-events")
        # kubelet's reference to its Node: the name stands in for the uid
        ref = {"kind": "Node", "apiVersion": "v1",
               "metadata": {"name": self.settings.name, "uid": self.settings.name}}
        self.events.record(ref, type_, reason, message)

    def _note_readiness(self, status: dict[str, Any]) -> None:
        """NodeReady / NodeNotReady when the Ready condition this host posts changes."""
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in status.get("conditions") or [])
        if ready != self._was_ready:
            state = "NodeReady" if ready else "NodeNotReady"
            self._node_event("Normal", state,
                             f"Node {self.settings.name} status is now: {state}")
        self._was_ready = ready

    @property
    def isolation_seconds(self) -> float:
        """Past this, the node lifecycle controller is about to declare the host gone
        (lease + 1 s grace) and HA to restart its VMs elsewhere: fence well before."""
        return max(self.settings.lease_interval, self.settings.lease_seconds -
                   self.settings.lease_interval)

    def labels(self) -> dict[str, str]:
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
        labels = {"kubernetes.io/hostname": self.settings.name, "kubernetes.io/os": "linux",
                  "kubernetes.io/arch": arch, "beta.kubernetes.io/os": "linux",
                  "beta.kubernetes.io/arch": arch}
        labels.update(dict(self.settings.labels))
        return labels

    def status(self, previous: dict[str, Any]) -> dict[str, Any]:
        s = self.settings
        uname = os.uname()
        return {
            "capacity": capacity(s),
            "allocatable": allocatable(s),
            "conditions": self._conditions(previous.get("conditions") or []),
            "addresses": [{"type": "InternalIP", "address": s.host_ip},
                          {"type": "Hostname", "address": s.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": s.port}},
            "images": self._images(),
            "nodeInfo": {
                "machineID": _machine_id(), "systemUUID": _machine_id(), "bootID": _boot_id(),
                "kernelVersion": uname.release, "osImage": _os_image(),
                "containerRuntimeVersion": s.runtime_version, "kubeletVersion": AGENT_VERSION,
                "kubeProxyVersion": "", "operatingSystem": "linux",
                "architecture": self.labels()["kubernetes.io/arch"],
            },
            "runtimeHandlers": runtime_handlers(s.runtime_handlers),
        }

    def _conditions(self, previous: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = conditions(previous, self.settings)
        before = {c.get("type"): c for c in previous}
        now = out[-1]["lastHeartbeatTime"]
        for type_, (status, reason, message) in sorted(self.own_conditions.items()):
            out.append(_condition(before.get(type_), type_, status, reason, message, now))
        return out

    def _images(self) -> list[dict[str, Any]]:
        """The images this host can run, as ``kubectl describe node`` lists them."""
        if self.images is None:
            return []
        by_id: dict[str, dict[str, Any]] = {}
        for image in self.images.list():
            name = image.ref.rsplit(":", 1)[0] if "@" not in image.ref else image.ref
            entry = by_id.setdefault(image.id, {"names": [f"{name}@{image.id}"],
                                                "sizeBytes": self.images.size(image)})
            entry["names"].append(image.ref)
        return list(by_id.values())

    async def register(self) -> dict[str, Any]:
        path = f"/api/v1/nodes/{self.settings.name}"
        try:
            node = await self.client.get(path)
        except errors.NotFound:
            body = {"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": self.settings.name, "labels": self.labels()},
                    "spec": {"podCIDR": self.settings.pod_cidr,
                             "podCIDRs": [self.settings.pod_cidr]}}
            try:
                node = await self.client.create("/api/v1/nodes", body)
            except errors.AlreadyExists:
                node = await self.client.get(path)
        else:
            patch: dict[str, Any] = {"metadata": {"labels": self.labels()},
                                     "spec": {"podCIDR": self.settings.pod_cidr,
                                              "podCIDRs": [self.settings.pod_cidr]}}
            node = await self.client.patch(path, patch)
        self.uid = node["metadata"]["uid"]
        self._node_event("Normal", "Starting", "Starting kubelet.")
        await self.post_status(node.get("status") or {})
        await self.renew_lease()
        log.info("registered node %s (%s)", self.settings.name, self.settings.host_ip)
        return node

    async def keep_lease(self) -> None:
        """Renew an existing Lease first thing after a restart: the previous process's last
        renewal is up to ``lease_interval`` old, and the start-up work before ``register``
        (network, TLS, the agent's server) must not let the host count as gone, which would
        evict its pods.  A host without a Lease yet gets one from ``register``."""
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/" \
               f"{self.settings.name}"
        try:
            await self.client.patch(path, {"spec": {
                "holderIdentity": self.settings.name,
                "leaseDurationSeconds": self.settings.lease_seconds,
                "renewTime": rfc3339(digits=6)}})
        except (errors.ApiError, OSError, asyncio.TimeoutError, aiohttp.ClientError) as e:
            log.debug("no early Lease renewal: %s", e)

    async def post_status(self, previous: dict[str, Any]) -> dict[str, Any]:
        self._status_due = False
        status = self.status(previous)
        node = await self.client.patch(f"/api/v1/nodes/{self.settings.name}/status",
                                       {"status": status})
        self._note_readiness(status)
        return node

    async def renew_lease(self) -> None:
        now = rfc3339(digits=6)  # MicroTime
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/" \
               f"{self.settings.name}"
        spec = {"holderIdentity": self.settings.name,
                "leaseDurationSeconds": self.settings.lease_seconds, "renewTime": now}
        try:
            await self.client.patch(path, {"spec": spec})
        except errors.NotFound:
            await self._ensure_lease_namespace()
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.settings.name, "namespace": LEASE_NAMESPACE,
                                 "ownerReferences": [{"apiVersion": "v1", "kind": "Node",
                                                      "name": self.settings.name,
                                                      "uid": self.uid}] if self.uid else []},
                    "spec": dict(spec, acquireTime=now)}
            try:
                await self.client.create(
                    f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases", body)
            except errors.AlreadyExists:
                await self.client.patch(path, {"spec": spec})

    async def _ensure_lease_namespace(self) -> None:
        try:
            await self.client.create("/api/v1/namespaces", {
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": LEASE_NAMESPACE}})
        except (errors.AlreadyExists, errors.Forbidden):
            pass  # the server makes it; an agent signed in as its host may not

    async def heartbeat(self) -> None:
        """Renew the Lease every interval; post the full status less often."""
        loop = asyncio.get_running_loop()
        next_status = loop.time() + self.settings.status_interval
        previous: dict[str, Any] = {}
        last_renewed = loop.time()
        while True:
            await asyncio.sleep(self.settings.lease_interval)
            try:
                # a renewal stuck behind a dead connection counts as failed, not as pending
                await asyncio.wait_for(self.renew_lease(), self.settings.lease_interval * 1.5)
                last_renewed = loop.time()
                if self.isolated:
                    self.isolated = False
                    log.warning("node %s: the API server answers again", self.settings.name)
                    await _call_all(self.on_reconnected)
                if loop.time() >= next_status or self._status_due:
                    node = await self.post_status(previous)
                    previous = node.get("status") or {}
                    next_status = loop.time() + self.settings.status_interval
            except errors.NotFound:
                log.warning("node %s was deleted; registering it again", self.settings.name)
                try:
                    node = await self.register()
                    previous = node.get("status") or {}
                    await _call_all(self.on_registered_again)
                except (errors.ApiError, OSError, aiohttp.ClientError) as e:
                    log.warning("cannot register node again: %s", e)
            except errors.ApiError as e:
                log.warning("node heartbeat failed: %s", e)
            except (OSError, asyncio.TimeoutError, aiohttp.ClientError) as e:
                # ClientError: a connection dropped mid-request (not an OSError in aiohttp)
                log.warning("node heartbeat failed (API server unreachable?): %s", e or "timeout")
            if not self.isolated and loop.time() - last_renewed >= self.isolation_seconds:
                self.isolated = True
                log.warning("node %s: no Lease renewal for %.0f s: fencing", self.settings.name,
                            loop.time() - last_renewed)
                await _call_all(self.on_isolated)


async def _call_all(callbacks: list[Callable[[], Awaitable[None]]]) -> None:
    for callback in callbacks:
        try:
            await callback()
        except Exception:  # one failing hook must not stop the heartbeat
            log.exception("node hook failed")


def _machine_id() -> str:
    for p in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            return Path(p).read_text().strip()
        except OSError:
            continue
    return ""


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _os_image() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return "Linux"
