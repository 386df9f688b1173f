"""One pod on this host, driven to its spec: kubelet's pod worker.

A worker wakes on any change (the pod object, a container exit, a back-off
timer, a probe result) and runs ``sync`` once per wake, serially:

1. a pod being deleted: stop its containers (SIGTERM, SIGKILL after the
   grace period), release network and volumes, then delete the pod object
   for good (``gracePeriodSeconds=0``);
2. otherwise: volumes, then the pod's network namespace, then init
   containers one by one, then the containers; exited containers restart per
   ``restartPolicy`` with exponential back-off (``CrashLoopBackOff``);
3. report the status if it changed.

Everything needed after an agent restart is on disk (container records,
``network.json``), so a new worker adopts running containers untouched.

The container's OCI spec is built by ``containerspec``, the status view by ``report`` (rules
in ``status``); the runtime is any ``PodRuntime``, so the state machine runs in tests too.

The worker runs only what it first admitted: the pod spec it first saw is kept
(``admitted.json`` in the pod's directory, so an agent restart keeps it too) and
every container (re)start uses that snapshot.  A later stored spec contributes
only what upstream lets a pod update change (container images,
``activeDeadlineSeconds`` downwards, ``terminationGracePeriodSeconds``,
tolerations); the API server refuses other changes, and this is the second line.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from atoll.agent.host.network import CNI, NetworkError, PodNetwork
from atoll.agent.host.node import RUNC_HANDLERS
from atoll.agent.images.puller import ImagePuller, shared_puller
from atoll.agent.images.store import ImageStore
from atoll.agent.pods import containerspec, ephemeral, report, volumes
from atoll.agent.pods import env as podenv
from atoll.agent.pods import status as podstatus
from atoll.agent.pods.attempts import Attempt, should_restart
from atoll.agent.pods.imagepull import PullsImages
from atoll.agent.pods.probes import ProbeRunner
from atoll.agent.runtime import mounts as host_mounts
from atoll.agent.runtime.containers import ContainerError, ContainerMeta, container_id
from atoll.agent.runtime.interface import PodRuntime
from atoll.api import errors
from atoll.api.qos import qos_class
from atoll.api.resources.node_v1 import handler_of
from atoll.client.events import NORMAL, WARNING, EventRecorder
from atoll.client.rest import ApiClient

log = logging.getLogger(__name__)
ADMITTED_FILE = "admitted.json"


@dataclass(frozen=True)
class WorkerSettings:
    node_name: str
    host_ip: str
    pods_dir: Path
    backoff_base: float = 10.0
    backoff_max: float = 300.0
    #: a container that ran this long without failing has its back-off reset
    backoff_reset_after: float = 600.0
    #: the API server as pods reach it (KUBERNETES_SERVICE_HOST/PORT); empty: not told
    api_host: str = ""
    api_port: int = 0
    #: the DNS server pods with dnsPolicy ClusterFirst use, and its domain; "": the host's
    cluster_dns: str = ""
    cluster_domain: str = "cluster.local"
    #: the RuntimeClass handlers this host has a runtime for; a pod whose class names another
    #: fails its sandbox, as with a CRI that has no such runtime configured
    runtime_handlers: tuple[str, ...] = RUNC_HANDLERS


class PodWorker(PullsImages):
    def __init__(self, pod: dict[str, Any], *, client: ApiClient, runtime: PodRuntime,
                 images: ImageStore, cni: CNI, settings: WorkerSettings,
                 events: EventRecorder | None = None,
                 puller: ImagePuller | None = None) -> None:
        self.uid: str = pod["metadata"]["uid"]
        self.client = client
        self.runtime = runtime
        self.images = images
        self.puller = puller or shared_puller(images)
        #: image pulls under way, by container: (image ref, task)
        self.pulls: dict[str, tuple[str, asyncio.Task[Any]]] = {}
        self.cni = cni
        self.settings = settings
        self.dir = settings.pods_dir / self.uid
        self._events = events
        saved = _read_json(self.dir / ADMITTED_FILE)
        self._admitted_saved = bool(saved and saved.get("uid") == self.uid
                                    and isinstance(saved.get("spec"), dict))
        self.admitted: dict[str, Any] = copy.deepcopy(
            saved["spec"] if saved and self._admitted_saved else pod.get("spec") or {})
        self.pod = with_admitted_spec(pod, self.admitted)
        self.deleted_from_api = False
        self.network: PodNetwork | None = None
        self.volumes: dict[str, volumes.HostVolume] | None = None
        self.attempts: dict[str, list[Attempt]] = {}  # oldest..newest, at most two kept
        self.waiting: dict[str, tuple[str, str]] = {}
        self.not_before: dict[str, float] = {}
        self.setup_error = ""
        #: the handler of the pod's RuntimeClass ("" for none), once looked up
        self.runtime_handler: str | None = None
        self.released = False
        self.reported: dict[str, Any] | None = None
        self.start_time: float | None = None
        self.probes = ProbeRunner(key=self.key, runtime=runtime, wake=self.wake,
                                  pod_ip=self._pod_ip, event=self._event)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.finished = asyncio.Event()

    # -- driving --------------------------------------------------------------------------------
    def start(self, existing: list[ContainerMeta] | None = None) -> None:
        """Run the worker; ``existing`` are this pod's containers found on disk at agent start."""
        self.keep_admitted()
        self._adopt(existing or [])
        self._task = asyncio.create_task(self._loop(), name=f"pod-{self.uid[:8]}")
        self.wake()

    def keep_admitted(self) -> None:
        """Persist the admitted spec (once): a restarted agent runs the same snapshot."""
        if not self._admitted_saved:
            _write_json(self.dir / ADMITTED_FILE, {"uid": self.uid, "spec": self.admitted})
            self._admitted_saved = True

    def wake(self) -> None:
        self._wake.set()

    def update(self, pod: dict[str, Any] | None) -> None:
        if pod is None:
            self.deleted_from_api = True
        else:
            self.pod = with_admitted_spec(pod, self.admitted)
        self.wake()

    def _event(self, type_: str, reason: str, message: str) -> None:
        """A core/v1 Event about this pod (queued: never waits for the API)."""
        if self._events is None:
            self._events = _shared_recorder(self.client)
        self._events.record(self.pod, type_, reason, message)

    async def _loop(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                try:
                    done = await self.sync()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("pod %s: sync failed", self.key)
                    self._wake_later(2.0)
                    continue
                if done:
                    return
        finally:
            self.probes.stop()
            self.finished.set()

    def _wake_later(self, delay: float) -> None:
        asyncio.get_running_loop().call_later(max(0.0, delay), self.wake)

    @property
    def key(self) -> str:
        return f"{self.pod['metadata'].get('namespace')}/{self.pod['metadata'].get('name')}"

    @property
    def spec(self) -> dict[str, Any]:
        return self.pod.get("spec") or {}

    def _pod_ip(self) -> str:
        """The address probes reach the pod on: its own, or the host's (hostNetwork)."""
        return self.network.ip if self.network else self.settings.host_ip

    # -- adoption --------------------------------------------------------------------------------
    def _adopt(self, existing: list[ContainerMeta]) -> None:
        """Pick up what a previous agent left: containers and the network of this pod."""
        net = _read_json(self.dir / "network.json")
        if net and "netns" in net and "ip" in net:
            self.network = PodNetwork(net["netns"], net["ip"])
        started = _read_json(self.dir / "started.json")
        if started:
            self.start_time = float(started.get("startTime") or time.time())
        for meta in sorted(existing, key=lambda m: m.attempt):
            attempt = Attempt(meta, exit=self.runtime.exit_info(meta.id))
            info = self.runtime.started(meta.id)
            if info:
                attempt.pid = int(info.get("pid") or 0)
            self.attempts.setdefault(meta.name, []).append(attempt)
            if attempt.exit is None:
                self._watch_exit(attempt)

    # -- sync -------------------------------------------------------------------------------------
    async def sync(self) -> bool:
        """Drive the pod one step; True once the worker is finished."""
        meta = self.pod["metadata"]
        if self.deleted_from_api or meta.get("deletionTimestamp"):
            await self._terminate()
            return True
        if self.reported and self.reported.get("phase") in ("Succeeded", "Failed"):
            await self._stop_all(grace=0)
            await self._release()
            return False
        if self.start_time is None:
            self.start_time = time.time()
            _write_json(self.dir / "started.json", {"startTime": self.start_time})
        deadline = self.spec.get("activeDeadlineSeconds")
        if isinstance(deadline, int) and time.time() - self.start_time > deadline:
            await self._stop_all(grace=0)
            await self._report(deadline_exceeded=True)
            return False
        if isinstance(deadline, int):
            self._wake_later(self.start_time + deadline - time.time() + 0.05)
        if await self._prepare():
            if await self._run_init_containers():
                await self._run_containers()
                for c in ephemeral.pending(self.spec, self.attempts):
                    await self._start_if_due(c)  # once each: never restarted
        await self._report()
        return False

    async def _prepare(self) -> bool:
        """Volumes and network; False (with a reason in status) while they are not ready."""
        if not await self._runtime_configured():
            return False
        try:
            if self.volumes is None:
                self.volumes = await volumes.setup(self.pod, self.dir, self._fetch,
                                                   self._request_token)
            else:
                due = await volumes.refresh_tokens(self.dir, self._request_token)
                if due is not None:
                    self._wake_later(due)
            if self.network is None and not self.spec.get("hostNetwork"):
                self.network = await self.cni.setup(self.uid, self.pod["metadata"]["namespace"],
                                                    self.pod["metadata"]["name"],
                                                    self._port_mappings())
                _write_json(self.dir / "network.json",
                            {"netns": self.network.netns, "ip": self.network.ip})
            containerspec.write_pod_files(
                self.pod, self.dir, self.network.ip if self.network else self.settings.host_ip,
                containerspec.DNSSettings(self.settings.cluster_dns,
                                          self.settings.cluster_domain))
        except volumes.VolumeError as e:
            self.setup_error = str(e)
            self._event(WARNING, "FailedMount", f"MountVolume.SetUp failed: {e}")
            self._set_all_waiting("ContainerCreating", str(e))
            self._wake_later(self._retry_delay("__setup__"))
            return False
        except (NetworkError, OSError) as e:
            self.setup_error = f"failed to set up the pod network: {e}"
            self._event(WARNING, "FailedCreatePodSandBox",
                        f"Failed to create pod sandbox: {self.setup_error}")
            self._set_all_waiting("ContainerCreating", self.setup_error)
            self._wake_later(self._retry_delay("__setup__"))
            return False
        self.setup_error = ""
        self.not_before.pop("__setup__", None)
        return True

    async def _runtime_configured(self) -> bool:
        """Whether this host has a runtime for the pod's RuntimeClass handler (kubelet's
        LookupRuntimeHandler, then the CRI's runtime lookup); if not, the sandbox fails with
        their words and is tried again with back-off."""
        if self.runtime_handler is None:
            name = self.spec.get("runtimeClassName")
            if not name:
                self.runtime_handler = ""
            else:
                path = "/apis/node.k8s.io/v1/runtimeclasses/" + quote(str(name), safe="")
                try:
                    self.runtime_handler = handler_of(await self.client.get(path))
                except errors.NotFound:
                    return self._sandbox_failed(f'runtimeclass.node.k8s.io "{name}" not found')
                except errors.ApiError as e:
                    return self._sandbox_failed(f"failed to lookup RuntimeClass {name}: {e}")
        if self.runtime_handler not in self.settings.runtime_handlers:
            return self._sandbox_failed(
                "rpc error: code = Unknown desc = failed to get sandbox runtime: no runtime for "
                f'"{self.runtime_handler}" is configured')
        return True

    def _sandbox_failed(self, why: str) -> bool:
        self.setup_error = f"Failed to create pod sandbox: {why}"
        self._event(WARNING, "FailedCreatePodSandBox", self.setup_error)
        self._set_all_waiting("CreatePodSandboxError", self.setup_error)
        self._wake_later(self._retry_delay("__setup__"))
        return False

    def _retry_delay(self, key: str) -> float:
        n = int(self.not_before.get(key + "#n", 0)) + 1
        self.not_before[key + "#n"] = n
        return min(self.settings.backoff_base * 2 ** (n - 1), self.settings.backoff_max)

    def _set_all_waiting(self, reason: str, message: str) -> None:
        for c in self._all_containers():
            if not self._current(c["name"]):
                self.waiting[c["name"]] = (reason, message)

    async def _run_init_containers(self) -> bool:
        """True once every init container has succeeded."""
        for c in self.spec.get("initContainers") or []:
            current = self._current(c["name"])
            if current is not None and current.exit is None:
                return False  # still running
            if current is not None and int(current.exit.get("exitCode", 1)) == 0:
                continue
            if current is not None and self.spec.get("restartPolicy") == "Never":
                return False  # the pod failed
            await self._start_if_due(c)
            return False
        return True

    async def _run_containers(self) -> None:
        policy = self.spec.get("restartPolicy") or "Always"
        for c in self.spec.get("containers") or []:
            current = self._current(c["name"])
            if current is None:
                await self._start_if_due(c)
            elif current.exit is not None and should_restart(policy, current.exit):
                await self._start_if_due(c)

    async def _start_if_due(self, container: dict[str, Any]) -> None:
        name = container["name"]
        due = self.not_before.get(name, 0.0)
        now = time.time()
        if now < due:
            current = self._current(name)
            if current is not None and current.exit is not None:
                self.waiting[name] = ("CrashLoopBackOff",
                                      f"back-off {int(due - (current.exit.get('finishedAt') or now))}s"
                                      f" restarting failed container={name} pod={self._pod_id()}")
            self._wake_later(due - now)
            return
        await self._start(container)

    def _pod_id(self) -> str:
        return f"{self.pod['metadata']['name']}_{self.pod['metadata']['namespace']}({self.uid})"

    # -- images ------------------------------------------------------------------------------------
    async def _start(self, container: dict[str, Any]) -> None:
        name = container["name"]
        image_ref = str(container.get("image") or "")
        image = self._image_for(container)
        if image is None:
            return
        previous = self.attempts.get(name, [])
        attempt_no = previous[-1].meta.attempt + 1 if previous else 0
        try:
            env = await podenv.environment(self.pod, container, image.env, self._fetch,
                                           podenv.api_service_env(self.settings.api_host,
                                                                  self.settings.api_port))
            spec = containerspec.runtime_spec(
                self.pod, container, image.config, env, pod_dir=self.dir,
                pod_volumes=self.volumes or {},
                netns_path=self.network.netns_path if self.network else "",
                cgroups_path=f"/atoll/{self.settings.node_name}/{self.uid}-{name}",
                join_namespaces=ephemeral.namespaces(self.spec, container, self.attempts))
        except podenv.ConfigError as e:
            self.waiting[name] = ("CreateContainerConfigError", str(e))
            self._event(WARNING, "Failed", f"Error: {e}")
            self.not_before[name] = time.time() + self._retry_delay(f"config:{name}")
            self._wake_later(self.not_before[name] - time.time())
            return
        cid = container_id(self.uid, name, attempt_no)
        meta = ContainerMeta(id=cid, pod_uid=self.uid, name=name, attempt=attempt_no,
                             image=image_ref,
                             image_id=image.repo_digests[0] if image.repo_digests else image.id,
                             log_path=str(self.dir / "logs" / name / f"{attempt_no}.log"),
                             created=time.time())
        self.waiting.pop(name, None)
        attempt = Attempt(meta)
        self.attempts.setdefault(name, []).append(attempt)
        self._event(NORMAL, "Created", f"Created container: {name}")
        try:
            attempt.pid = await self.runtime.run(meta, image, spec,
                                                 stdin=bool(container.get("stdin")))
        except ContainerError as e:
            attempt.exit = {"exitCode": 128, "reason": e.reason, "message": e.message,
                            "finishedAt": time.time()}
            self._event(WARNING, "Failed", f"Error: {e.message}")
            self._after_exit(name, attempt)
        else:
            self._event(NORMAL, "Started", f"Started container {name}")
            self._watch_exit(attempt)
            self.probes.start(container, attempt)
        await self._prune_attempts(name)

    def _watch_exit(self, attempt: Attempt) -> None:
        fut = self.runtime.wait(attempt.meta.id)

        def done(f: asyncio.Future[dict[str, Any]]) -> None:
            if f.cancelled():
                return
            attempt.exit = f.result()
            self._after_exit(attempt.meta.name, attempt)
            self.wake()
        fut.add_done_callback(done)

    def _after_exit(self, name: str, attempt: Attempt) -> None:
        """Schedule the next start: back-off doubles per failure, resets after a long run."""
        info = attempt.exit or {}
        ran = float(info.get("finishedAt") or time.time()) - float(info.get("startedAt") or
                                                                   time.time())
        key = f"restart:{name}"
        if ran >= self.settings.backoff_reset_after:
            self.not_before.pop(key + "#n", None)
        first = self.not_before.get(key + "#n", 0) == 0
        delay = 0.0 if first else self._retry_delay(key)
        if first:
            self.not_before[key + "#n"] = 1
        self.not_before[name] = time.time() + delay
        self.probes.forget(name)

    async def _prune_attempts(self, name: str) -> None:
        """Keep the current attempt and the one before (for ``logs --previous``)."""
        attempts = self.attempts.get(name, [])
        while len(attempts) > 2:
            old = attempts.pop(0)
            await self.runtime.remove(old.meta.id)
            try:
                os.unlink(old.meta.log_path)
            except OSError:
                pass

    def _current(self, name: str) -> Attempt | None:
        attempts = self.attempts.get(name)
        return attempts[-1] if attempts else None

    def _all_containers(self) -> list[dict[str, Any]]:
        return list(self.spec.get("initContainers") or []) + list(self.spec.get("containers")
                                                                  or [])

    def _port_mappings(self) -> list[dict[str, Any]]:
        out = []
        for c in self.spec.get("containers") or []:
            for p in c.get("ports") or []:
                if p.get("hostPort"):
                    out.append({"hostPort": p["hostPort"], "containerPort": p.get("containerPort"),
                                "protocol": str(p.get("protocol") or "TCP").lower()})
        return out

    async def _request_token(self, audience: str | None, seconds: int) -> tuple[str, float]:
        """A token of the pod's ServiceAccount, bound to the pod (TokenRequest, as kubelet)."""
        meta = self.pod["metadata"]
        spec: dict[str, Any] = {"expirationSeconds": seconds, "boundObjectRef": {
            "apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]}}
        if audience:
            spec["audiences"] = [audience]
        sa = self.spec.get("serviceAccountName") or "default"
        answer = await self.client.create(
            f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{sa}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
        status = answer.get("status") or {}
        expires = dt.datetime.fromisoformat(
            str(status["expirationTimestamp"]).replace("Z", "+00:00")).timestamp()
        return str(status["token"]), expires

    async def _fetch(self, kind: str, name: str) -> dict[str, Any] | None:
        if kind == "PersistentVolume":  # the one cluster-scoped kind a pod's volumes name
            path = f"/api/v1/persistentvolumes/{name}"
        else:
            plural = {"ConfigMap": "configmaps", "Secret": "secrets",
                      "PersistentVolumeClaim": "persistentvolumeclaims"}[kind]
            path = f"/api/v1/namespaces/{self.pod['metadata']['namespace']}/{plural}/{name}"
        try:
            return await self.client.get(path)
        except errors.NotFound:
            return None

    # -- stopping ---------------------------------------------------------------------------------
    async def _stop_all(self, grace: float) -> None:
        running = [a for attempts in self.attempts.values() for a in attempts[-1:]
                   if a.exit is None]
        self.probes.stop()
        for a in running:  # kubelet's words when it stops a container
            self._event(NORMAL, "Killing", f"Stopping container {a.meta.name}")
        await asyncio.gather(*(self.runtime.stop(a.meta.id, grace) for a in running))

    async def _release(self) -> None:
        if self.released:
            return
        self.released = True
        if not self.spec.get("hostNetwork"):
            # also after a failed setup: the namespace or an IP lease may exist without a record
            await self.cni.teardown(self.uid, self._port_mappings())
            self.network = None
            try:
                (self.dir / "network.json").unlink()
            except OSError:
                pass
        try:
            await volumes.teardown(self.dir)
        except volumes.TeardownError:
            self.released = False  # tried again at the next sync; nothing deleted meanwhile
            raise
        self.volumes = None

    async def _terminate(self) -> None:
        meta = self.pod["metadata"]
        grace = meta.get("deletionGracePeriodSeconds")
        if not isinstance(grace, int):
            grace = self.spec.get("terminationGracePeriodSeconds", 30)
        await self._stop_all(grace=float(grace if isinstance(grace, int) else 30))
        for attempts in self.attempts.values():
            for a in attempts:
                await self.runtime.remove(a.meta.id)
        await self._release()
        left = host_mounts.mount_points_under(str(self.dir))
        if left:  # never delete through a mount (a claim's files would go with it)
            log.error("pod %s: still mounted, its directory is kept: %s", self.key, left)
        else:
            await asyncio.to_thread(shutil.rmtree, self.dir, True)
        if not self.deleted_from_api:
            ns, name = meta["namespace"], meta["name"]
            try:
                await self.client.delete(f"/api/v1/namespaces/{ns}/pods/{name}",
                                         {"apiVersion": "v1", "kind": "DeleteOptions",
                                          "gracePeriodSeconds": 0,
                                          "preconditions": {"uid": self.uid}})
            except (errors.NotFound, errors.Conflict):
                pass

    # -- status --------------------------------------------------------------------------------------
    def _terminal(self) -> bool:
        return bool(self.reported and self.reported.get("phase") in ("Succeeded", "Failed"))

    async def _report(self, deadline_exceeded: bool = False) -> None:
        view = report.pod_view(self.spec, self.attempts, self.waiting, runtime=self.runtime,
                               probes=self.probes,
                               network_ip=self.network.ip if self.network else None,
                               host_ip=self.settings.host_ip, start_time=self.start_time,
                               terminal=self._terminal(), deadline_exceeded=deadline_exceeded)
        status = podstatus.pod_status(view, self.pod.get("status") or {}, qos_class(self.pod))
        if self.spec.get("ephemeralContainers"):
            status["ephemeralContainerStatuses"] = ephemeral.statuses(
                self.spec, self.attempts, self.waiting, runtime=self.runtime, probes=self.probes)
        if status == self.reported:
            return
        ns, name = self.pod["metadata"]["namespace"], self.pod["metadata"]["name"]
        try:
            updated = await self.client.patch(f"/api/v1/namespaces/{ns}/pods/{name}/status",
                                              {"metadata": {"uid": self.uid}, "status": status})
        except errors.NotFound:
            return
        except errors.ApiError as e:
            log.warning("pod %s: status update failed: %s", self.key, e)
            self._wake_later(1.0)
            return
        self.reported = status
        if isinstance(updated, dict):
            self.pod["status"] = updated.get("status") or status
        if status["phase"] in ("Succeeded", "Failed"):
            self.wake()  # release network and volumes now that the pod is done


def with_admitted_spec(pod: dict[str, Any], admitted: dict[str, Any]) -> dict[str, Any]:
    """``pod`` (metadata and status as stored now) with the admitted spec, taking from the
    stored spec only the fields upstream lets a pod update change."""
    new = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
    spec = copy.deepcopy(admitted)
    for key in ("containers", "initContainers"):
        images = {c.get("name"): c.get("image") for c in new.get(key) or []
                  if isinstance(c, dict)}
        for c in spec.get(key) or []:
            image = images.get(c.get("name"))
            if isinstance(image, str) and image:
                c["image"] = image
    deadline, old_deadline = new.get("activeDeadlineSeconds"), spec.get("activeDeadlineSeconds")
    if isinstance(deadline, int) and deadline > 0 and (
            not isinstance(old_deadline, int) or deadline <= old_deadline):
        spec["activeDeadlineSeconds"] = deadline
    grace = new.get("terminationGracePeriodSeconds")
    if isinstance(grace, int) and grace >= 0:
        spec["terminationGracePeriodSeconds"] = grace
    if isinstance(new.get("tolerations"), list):
        spec["tolerations"] = copy.deepcopy(new["tolerations"])
    ephemeral.carry(spec, new)  # added through pods/ephemeralcontainers, never changed
    return {**pod, "spec": spec}


_recorders: dict[int, tuple[ApiClient, EventRecorder, asyncio.Task[None]]] = {}


def _shared_recorder(client: ApiClient) -> EventRecorder:
    """One event recorder (and its sender task) per API client, for workers not given one."""
    entry = _recorders.get(id(client))
    if entry is None or entry[0] is not client or entry[2].done():
        recorder = EventRecorder(client, "kubelet")
        task = asyncio.get_running_loop().create_task(recorder.run(), name="pod-events")
        entry = _recorders[id(client)] = (client, recorder, task)
    return entry[1]


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)
