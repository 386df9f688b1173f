"""The workload controllers' reconciles against a fake client and a fake clock: no server.

Each test builds the controller on a factory of the fake client, feeds its informers as their
watches would, and calls ``reconcile`` (or reads the queue) directly.  The pod caches refuse
``list()``: owned pods and adoptable orphans must come from the indexes.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from atoll.api.timestamps import rfc3339
from atoll.client.controller import DONE, Controller, requeue_after
from atoll.client.factory import InformerFactory
from atoll.client.informer import Informer
from atoll.controllers import podcontrol
from atoll.controllers.daemonset import DaemonSetController
from atoll.controllers.deployment import HASH_LABEL, REVISION, DeploymentController
from atoll.controllers.job import JobController
from atoll.controllers.replicaset import ReplicaSetController
from atoll.controllers.statefulset import StatefulSetController
from atoll.settings import ReconcileSettings
from tests.client.fakes import FakeClient, FakeClock, feed

PODS = "/api/v1/namespaces/ns/pods"


class Client(FakeClient):
    """FakeClient that names ``generateName`` objects and keeps every write's body."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, str, Any]] = []
        self._serial = 0

    async def create(self, path: str, body: Any, **params: Any) -> Any:
        body = copy.deepcopy(body)
        meta = body["metadata"]
        self._serial += 1
        if not meta.get("name"):
            meta["name"] = f"{meta['generateName']}{self._serial}"
        if "/namespaces/" in path:  # as the server fills it in
            meta.setdefault("namespace", path.split("/namespaces/")[1].split("/")[0])
        meta.setdefault("uid", f"uid-{meta['name']}")
        meta.setdefault("resourceVersion", "1")
        self.writes.append(("POST", path, body))
        return await super().create(path, body, **params)

    async def patch(self, path: str, body: Any, **params: Any) -> Any:
        self._check("PATCH", path)
        self.writes.append(("PATCH", path, body))
        return body

    async def delete(self, path: str, body: Any = None, **params: Any) -> Any:
        self.writes.append(("DELETE", path, body))
        self._check("DELETE", path)
        self.objects.pop(path, None)
        return {"kind": "Status", "status": "Success"}

    def written(self, verb: str, prefix: str = "") -> list[Any]:
        return [b for v, p, b in self.writes if v == verb and p.startswith(prefix)]

    def paths(self, verb: str) -> list[str]:
        return [p for v, p, _ in self.writes if v == verb]


def build(cls: type[Controller], clock: FakeClock | None = None) -> tuple[Any, Client]:
    """The controller as the manager makes it (client, factory, workers, settings)."""
    client = Client()
    ctrl = cls(client, InformerFactory(client), workers=None,  # type: ignore[arg-type]
               settings=ReconcileSettings())
    if clock is not None:
        ctrl.clock = clock
    pods = getattr(ctrl, "pods", None)
    if isinstance(pods, Informer):
        def no_scan() -> list[dict[str, Any]]:
            raise AssertionError("pods are looked up by index, not by listing them all")
        pods.list = no_scan  # type: ignore[method-assign]
    return ctrl, client


def owner(kind: str, name: str, spec: dict[str, Any], api: str = "apps/v1",
          **meta: Any) -> dict[str, Any]:
    return {"apiVersion": api, "kind": kind,
            "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}",
                         "resourceVersion": "1", "generation": 1, **meta},
            "spec": spec, "status": {}}


def template(labels: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"labels": labels},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}


def pod(name: str, *, owned_by: dict[str, Any] | None = None, labels: dict[str, str] | None = None,
        phase: str = "Running", ready: bool = True, node: str = "",
        rv: str = "1", **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "uid": f"uid-{name}",
                            "resourceVersion": rv, "labels": labels or {},
                            "creationTimestamp": "2026-01-01T00:00:00Z"}
    if owned_by is not None:
        meta["ownerReferences"] = [podcontrol.owner_reference(owned_by)]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"nodeName": node, **spec},
            "status": {"phase": phase, "conditions": [
                {"type": "Ready", "status": "True" if ready else "False",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}


def drain(ctrl: Controller) -> set[str]:
    keys = set()
    while len(ctrl.queue):
        keys.add(ctrl.queue._queue.popleft())
    ctrl.queue._dirty.clear()
    return keys


# -- ReplicaSets ------------------------------------------------------------------------------

def replicaset(replicas: int = 3) -> dict[str, Any]:
    return owner("ReplicaSet", "web", {"replicas": replicas,
                                       "selector": {"matchLabels": {"app": "web"}},
                                       "template": template({"app": "web"})})


async def test_replicaset_with_no_pods_creates_them_once_until_they_are_seen() -> None:
    rs_ctrl, client = build(ReplicaSetController)
    assert rs_ctrl.workers == 4 and rs_ctrl.name == "replicaset"
    rs = replicaset(3)
    feed(rs_ctrl.sets, rs)
    feed(rs_ctrl.pods, pod("other", labels={"app": "db"}))
    assert drain(rs_ctrl) == {"ns/web"}
    assert await rs_ctrl.reconcile("ns/web") == DONE
    created = client.written("POST", PODS)
    assert len(created) == 3
    assert all(p["metadata"]["generateName"] == "web-" and
               p["metadata"]["ownerReferences"][0]["uid"] == "uid-web" for p in created)
    # the informer has not seen them yet: expectations hold back a second round
    await rs_ctrl.reconcile("ns/web")
    assert len(client.written("POST", PODS)) == 3
    for p in created:
        feed(rs_ctrl.pods, p)
    assert drain(rs_ctrl) == {"ns/web"}
    assert rs_ctrl.expectations.satisfied("ns/web")
    await rs_ctrl.reconcile("ns/web")
    assert len(client.written("POST", PODS)) == 3
    status = client.written("PATCH", "/apis/apps/v1/namespaces/ns/replicasets/web/status")
    assert status[-1]["status"]["replicas"] == 3


async def test_replicaset_adopts_a_matching_orphan_and_releases_a_stray() -> None:
    rs_ctrl, client = build(ReplicaSetController)
    rs = replicaset(2)
    feed(rs_ctrl.sets, rs)
    drain(rs_ctrl)
    # an orphan with matching labels wakes the ReplicaSet of its namespace (namespace index)
    feed(rs_ctrl.pods, pod("orphan", labels={"app": "web"}))
    assert drain(rs_ctrl) == {"ns/web"}
    feed(rs_ctrl.pods, pod("stray", owned_by=rs, labels={"app": "other"}))
    assert drain(rs_ctrl) == {"ns/web"}
    await rs_ctrl.reconcile("ns/web")
    patches = {p: b for v, p, b in client.writes if v == "PATCH" and p.startswith(PODS)}
    adopted = patches[f"{PODS}/orphan"]["metadata"]["ownerReferences"]
    assert [r["uid"] for r in adopted] == ["uid-web"]
    assert patches[f"{PODS}/stray"]["metadata"]["ownerReferences"] is None
    assert len(client.written("POST", PODS)) == 1  # the orphan counts as one of two


async def test_replicaset_scales_down_the_least_useful_pods_first() -> None:
    rs_ctrl, client = build(ReplicaSetController)
    rs = replicaset(1)
    feed(rs_ctrl.sets, rs)
    feed(rs_ctrl.pods, pod("running", owned_by=rs, labels={"app": "web"}, node="n1"))
    feed(rs_ctrl.pods, pod("pending", owned_by=rs, labels={"app": "web"}, phase="Pending",
                           ready=False))
    feed(rs_ctrl.pods, pod("unready", owned_by=rs, labels={"app": "web"}, node="n1",
                           ready=False))
    await rs_ctrl.reconcile("ns/web")
    assert sorted(client.paths("DELETE")) == [f"{PODS}/pending", f"{PODS}/unready"]
    assert not rs_ctrl.expectations.satisfied("ns/web")
    feed(rs_ctrl.pods, pod("pending", owned_by=rs, labels={"app": "web"}), kind="DELETED")
    feed(rs_ctrl.pods, pod("unready", owned_by=rs, labels={"app": "web"}), kind="DELETED")
    assert rs_ctrl.expectations.satisfied("ns/web")


async def test_replicaset_with_min_ready_seconds_looks_again_on_the_fake_clock() -> None:
    clock = FakeClock()
    rs_ctrl, client = build(ReplicaSetController, clock)
    rs = replicaset(1)
    rs["spec"]["minReadySeconds"] = 60
    feed(rs_ctrl.sets, rs)
    ready = pod("p", owned_by=rs, labels={"app": "web"})
    ready["status"]["conditions"][0]["lastTransitionTime"] = rfc3339(clock.now - 10)
    feed(rs_ctrl.pods, ready)
    assert await rs_ctrl.reconcile("ns/web") == requeue_after(30)
    assert client.written("PATCH")[-1]["status"]["availableReplicas"] == 0
    clock.advance(60)
    assert await rs_ctrl.reconcile("ns/web") == DONE
    assert client.written("PATCH")[-1]["status"]["availableReplicas"] == 1


# -- Deployments ------------------------------------------------------------------------------

async def test_deployment_creates_its_replicaset_and_owned_sets_wake_it() -> None:
    clock = FakeClock()
    dep, client = build(DeploymentController, clock)
    d = owner("Deployment", "app", {"replicas": 2, "selector": {"matchLabels": {"app": "a"}},
                                    "template": template({"app": "a"})})
    feed(dep.deployments, d)
    assert drain(dep) == {"ns/app"}
    await dep.reconcile("ns/app")
    [rs] = client.written("POST", "/apis/apps/v1/namespaces/ns/replicasets")
    h = rs["spec"]["template"]["metadata"]["labels"][HASH_LABEL]
    assert rs["metadata"]["name"] == f"app-{h}" and rs["spec"]["replicas"] == 2
    assert rs["metadata"]["annotations"][REVISION] == "1"
    assert rs["metadata"]["ownerReferences"][0]["uid"] == "uid-app"
    event = dep.events.queue.get_nowait()  # queued for the recorder, never awaited inline
    assert (event.reason, event.involved["name"]) == ("ScalingReplicaSet", "app")
    # its ReplicaSet's changes enqueue the Deployment, found again by the controller index
    feed(dep.sets, rs)
    assert drain(dep) == {"ns/app"}
    assert podcontrol.controlled_by(dep.sets, d) == [rs]
    await dep.reconcile("ns/app")
    assert len(client.written("POST", "/apis/apps/v1/namespaces/ns/replicasets")) == 1


async def test_deployment_past_its_progress_deadline_reports_it() -> None:
    clock = FakeClock()
    dep, client = build(DeploymentController, clock)
    d = owner("Deployment", "app", {"replicas": 1, "progressDeadlineSeconds": 60,
                                    "selector": {"matchLabels": {"app": "a"}},
                                    "template": template({"app": "a"})})
    feed(dep.deployments, d)
    await dep.reconcile("ns/app")
    [rs] = client.written("POST", "/apis/apps/v1/namespaces/ns/replicasets")
    feed(dep.sets, rs)
    status = client.written("PATCH", "/apis/apps/v1/namespaces/ns/deployments/app/status")[-1]
    d = {**d, "status": status["status"]}
    feed(dep.deployments, d, kind="MODIFIED")
    clock.advance(61)
    assert await dep.reconcile("ns/app") == requeue_after(30)
    status = client.written("PATCH", "/apis/apps/v1/namespaces/ns/deployments/app/status")[-1]
    progressing = [c for c in status["status"]["conditions"] if c["type"] == "Progressing"]
    assert progressing[0]["reason"] == "ProgressDeadlineExceeded"


# -- DaemonSets -------------------------------------------------------------------------------

def node(name: str, rv: str = "1", taints: list[dict[str, str]] | None = None,
         **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": rv,
                         "labels": labels},
            "spec": {"taints": taints or []}}


async def test_daemonset_runs_one_pod_per_fitting_node() -> None:
    ds_ctrl, client = build(DaemonSetController)
    assert ds_ctrl.workers == 2
    ds = owner("DaemonSet", "agent", {"selector": {"matchLabels": {"app": "agent"}},
                                      "template": template({"app": "agent"})})
    feed(ds_ctrl.sets, ds)
    feed(ds_ctrl.nodes, node("n1"))
    feed(ds_ctrl.nodes, node("n2", taints=[{"key": "gpu", "value": "x",
                                            "effect": "NoSchedule"}]))
    assert drain(ds_ctrl) == {"ns/agent"}
    await ds_ctrl.reconcile("ns/agent")
    [created] = client.written("POST", PODS)
    terms = created["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms[0]["matchFields"][0]["values"] == ["n1"]
    # a heartbeat does not wake DaemonSets; a label change does
    feed(ds_ctrl.nodes, node("n1", rv="2"), kind="MODIFIED")
    assert drain(ds_ctrl) == set()
    feed(ds_ctrl.nodes, node("n1", rv="3", zone="a"), kind="MODIFIED")
    assert drain(ds_ctrl) == {"ns/agent"}
    # the new pod is expected, then seen; a pod on a node that no longer fits goes
    assert not ds_ctrl.expectations.satisfied("ns/agent")
    feed(ds_ctrl.pods, {**created, "spec": {**created["spec"], "nodeName": "n1"}})
    assert ds_ctrl.expectations.satisfied("ns/agent")
    assert drain(ds_ctrl) == {"ns/agent"}
    stray = pod("agent-x", owned_by=ds, labels=created["metadata"]["labels"], node="n2")
    feed(ds_ctrl.pods, stray)
    await ds_ctrl.reconcile("ns/agent")
    assert client.paths("DELETE") == [f"{PODS}/agent-x"]
    assert len(client.written("POST", PODS)) == 1


# -- StatefulSets -----------------------------------------------------------------------------

async def test_statefulset_creates_pods_in_order() -> None:
    clock = FakeClock()
    sts_ctrl, client = build(StatefulSetController, clock)
    sts = owner("StatefulSet", "db", {"replicas": 2, "serviceName": "db",
                                      "selector": {"matchLabels": {"app": "db"}},
                                      "template": template({"app": "db"})})
    feed(sts_ctrl.sets, sts)
    assert await sts_ctrl.reconcile("ns/db") == DONE
    [first] = client.written("POST", PODS)
    assert first["metadata"]["name"] == "db-0" and first["spec"]["subdomain"] == "db"
    feed(sts_ctrl.pods, {**first, "status": {"phase": "Pending"}})
    assert drain(sts_ctrl) == {"ns/db"}  # owned pods wake their set
    await sts_ctrl.reconcile("ns/db")
    assert len(client.written("POST", PODS)) == 1  # db-0 is not ready yet
    feed(sts_ctrl.pods, pod("db-0", owned_by=sts, labels=first["metadata"]["labels"],
                            rv="2"), kind="MODIFIED")
    await sts_ctrl.reconcile("ns/db")
    assert [p["metadata"]["name"] for p in client.written("POST", PODS)] == ["db-0", "db-1"]


# -- Jobs -------------------------------------------------------------------------------------

def job(**spec: Any) -> dict[str, Any]:
    return owner("Job", "batch", {"parallelism": 2, "completions": 2,
                                  "selector": {"matchLabels": {"job": "batch"}},
                                  "template": template({"job": "batch"}), **spec},
                 api="batch/v1")


async def test_job_starts_parallel_pods_and_looks_again_at_its_deadline() -> None:
    clock = FakeClock()
    job_ctrl, client = build(JobController, clock)
    j = job(activeDeadlineSeconds=100)
    feed(job_ctrl.jobs, j)
    assert await job_ctrl.reconcile("ns/batch") == requeue_after(100)
    assert len(client.written("POST", PODS)) == 2
    status = client.written("PATCH", "/apis/batch/v1/namespaces/ns/jobs/batch/status")[-1]
    assert status["status"]["startTime"] == rfc3339(clock.now)


async def test_finished_job_is_deleted_when_its_ttl_runs_out() -> None:
    clock = FakeClock()
    job_ctrl, client = build(JobController, clock)
    j = job(ttlSecondsAfterFinished=300)
    j["status"] = {"conditions": [{"type": "Complete", "status": "True",
                                   "lastTransitionTime": rfc3339(clock.now - 100)}]}
    feed(job_ctrl.jobs, j)
    assert await job_ctrl.reconcile("ns/batch") == requeue_after(200)
    assert client.paths("DELETE") == []
    clock.advance(200)
    assert await job_ctrl.reconcile("ns/batch") == DONE
    assert client.paths("DELETE") == ["/apis/batch/v1/namespaces/ns/jobs/batch"]


async def test_job_completes_when_its_pods_succeeded() -> None:
    clock = FakeClock()
    job_ctrl, client = build(JobController, clock)
    j = job()
    feed(job_ctrl.jobs, j)
    for name in ("batch-a", "batch-b"):
        feed(job_ctrl.pods, pod(name, owned_by=j, labels={"job": "batch"}, phase="Succeeded"))
    assert drain(job_ctrl) == {"ns/batch"}
    await job_ctrl.reconcile("ns/batch")
    status = client.written("PATCH", "/apis/batch/v1/namespaces/ns/jobs/batch/status")[-1]
    types = [c["type"] for c in status["status"]["conditions"]]
    assert types == ["SuccessCriteriaMet", "Complete"]
    assert status["status"]["succeeded"] == 2
    assert status["status"]["completionTime"] == rfc3339(clock.now)
    assert client.written("POST", PODS) == []


@pytest.mark.parametrize("cls", [ReplicaSetController, DeploymentController,
                                 DaemonSetController, StatefulSetController, JobController])
def test_constructed_as_the_manager_does(cls: type[Controller]) -> None:
    ctrl, _ = build(cls)
    assert isinstance(ctrl, Controller) and ctrl.informers
    assert not hasattr(ctrl, "_own_pods")
