"""The cluster-wide controllers' reconciles against a fake client and a fake clock: garbage
collection, namespace deletion, node lifecycle, quota, role aggregation, service accounts."""

from __future__ import annotations

from typing import Any

from atoll.api import errors
from atoll.api.timestamps import rfc3339
from atoll.client.controller import DONE, requeue_after
from atoll.client.factory import InformerFactory
from atoll.controllers import garbagecollector as gc
from atoll.controllers.clusterroleaggregation import ClusterRoleAggregationController
from atoll.controllers.namespace import NamespaceController
from atoll.controllers.nodelifecycle import GRACE_SECONDS, NodeLifecycleController
from atoll.controllers.resourcequota import ResourceQuotaController
from atoll.controllers.serviceaccounts import ROOT_CA, ServiceAccountsController
from tests.client.fakes import FakeClient, FakeClock, feed

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


class Client(FakeClient):
    """FakeClient that keeps delete bodies and lets collection deletes leave what is listed."""

    def __init__(self) -> None:
        super().__init__()
        self.deleted: list[tuple[str, Any]] = []

    async def delete(self, path: str, body: Any = None, **params: Any) -> Any:
        self.deleted.append((path, body if body is not None else params))
        if path.rsplit("/", 1)[-1] in ("configmaps", "pods"):  # a collection: finalizers stay
            self._check("DELETE", path)
            return {"kind": "Status", "status": "Success"}
        return await super().delete(path, body, **params)


def serve_discovery(client: FakeClient) -> None:
    client.objects["/apis"] = {"groups": [{"name": "apps", "versions": [{"version": "v1"}],
                                           "preferredVersion": {"version": "v1"}}]}
    client.objects["/api/v1"] = {"resources": [
        {"name": "pods", "kind": "Pod", "namespaced": True, "verbs": VERBS},
        {"name": "configmaps", "kind": "ConfigMap", "namespaced": True, "verbs": VERBS},
        {"name": "pods/status", "kind": "Pod", "namespaced": True, "verbs": ["get"]}]}
    client.objects["/apis/apps/v1"] = {"resources": [
        {"name": "replicasets", "kind": "ReplicaSet", "namespaced": True, "verbs": VERBS}]}


def meta_obj(kind: str, name: str, *, owner: str | None = None, block: bool = False,
             finalizers: list[str] | None = None, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "uid": f"uid-{name}",
                            "resourceVersion": "1"}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner,
                                    "uid": f"uid-{owner}", "controller": True,
                                    "blockOwnerDeletion": block}]
    if finalizers:
        meta["finalizers"] = finalizers
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"apiVersion": "v1", "kind": kind, "metadata": meta}


def gc_setup() -> tuple[Client, InformerFactory, gc.GarbageCollector]:
    client = Client()
    serve_discovery(client)
    factory = InformerFactory(client)  # type: ignore[arg-type]
    return client, factory, gc.GarbageCollector(client, factory)  # type: ignore[arg-type]


async def test_gc_monitors_listed_resources_and_deletes_orphans() -> None:
    client, factory, collector = gc_setup()
    pods = factory.informer("", "v1", "pods", metadata_only=True)
    sets = factory.informer("apps", "v1", "replicasets", metadata_only=True)
    feed(pods, meta_obj("Pod", "orphan", owner="gone"))
    feed(pods, meta_obj("Pod", "kept", owner="live"))
    feed(sets, meta_obj("ReplicaSet", "live"))
    collector.sync_timeout = 0.01
    # configmaps have not listed yet: the graph waits for them, and looks again
    assert await collector.reconcile(gc.RESOURCES) == requeue_after(gc.PENDING_RECHECK)
    assert set(collector.monitors) == {("", "v1", "pods"), ("apps", "v1", "replicasets")}
    assert set(collector.pending) == {("", "v1", "configmaps")}
    configmaps = factory.informer("", "v1", "configmaps", metadata_only=True)
    assert configmaps.index_keys(gc.UID, "x") == set()  # the GC's uid index is on it
    feed(configmaps, meta_obj("ConfigMap", "cm", owner="live"))
    assert await collector.reconcile(gc.RESOURCES) == DONE
    assert not collector.pending
    assert {"uid-orphan", "uid-kept", "uid-cm"} <= collector.queue._dirty

    assert await collector.reconcile("uid-orphan") == DONE  # owner gone on the server too
    assert ("GET", "/apis/apps/v1/namespaces/ns/replicasets/gone") in client.calls
    path, body = client.deleted[-1]
    assert path == "/api/v1/namespaces/ns/pods/orphan"
    assert body["propagationPolicy"] == "Background"
    assert body["preconditions"] == {"uid": "uid-orphan"}
    client.deleted.clear()
    assert await collector.reconcile("uid-kept") == DONE  # owner in the cache: solid
    assert client.deleted == []


async def test_gc_foreground_waits_for_blocking_dependents() -> None:
    client, factory, collector = gc_setup()
    pods = factory.informer("", "v1", "pods", metadata_only=True)
    sets = factory.informer("apps", "v1", "replicasets", metadata_only=True)
    configmaps = factory.informer("", "v1", "configmaps", metadata_only=True)
    owner = meta_obj("ReplicaSet", "rs", finalizers=["foregroundDeletion"], deleting=True)
    rs_path = "/apis/apps/v1/namespaces/ns/replicasets/rs"
    client.objects[rs_path] = owner
    feed(sets, owner)
    dep = meta_obj("Pod", "p", owner="rs", block=True)
    feed(pods, dep)
    client.objects["/api/v1/namespaces/ns/pods/p"] = dep
    configmaps.synced.set()
    assert await collector.reconcile(gc.RESOURCES) == DONE
    assert await collector.reconcile("uid-rs") == DONE
    assert client.deleted[-1][0] == "/api/v1/namespaces/ns/pods/p"
    assert client.deleted[-1][1]["propagationPolicy"] == "Foreground"
    assert ("PATCH", rs_path) not in client.calls  # still blocked
    collector.queue._dirty.clear()
    feed(pods, dep, "DELETED")
    assert "uid-rs" in collector.queue._dirty  # the owner may finish now
    assert await collector.reconcile("uid-rs") == DONE
    assert ("PATCH", rs_path) in client.calls


async def test_gc_orphan_releases_dependents() -> None:
    client, factory, collector = gc_setup()
    pods = factory.informer("", "v1", "pods", metadata_only=True)
    sets = factory.informer("apps", "v1", "replicasets", metadata_only=True)
    factory.informer("", "v1", "configmaps", metadata_only=True).synced.set()
    owner = meta_obj("ReplicaSet", "rs", finalizers=["orphan"], deleting=True)
    client.objects["/apis/apps/v1/namespaces/ns/replicasets/rs"] = owner
    client.objects["/api/v1/namespaces/ns/pods/p"] = meta_obj("Pod", "p", owner="rs")
    feed(sets, owner)
    feed(pods, meta_obj("Pod", "p", owner="rs"))
    assert await collector.reconcile(gc.RESOURCES) == DONE
    assert await collector.reconcile("uid-rs") == DONE
    assert ("PATCH", "/api/v1/namespaces/ns/pods/p") in client.calls
    assert ("PATCH", "/apis/apps/v1/namespaces/ns/replicasets/rs") in client.calls


async def test_namespace_emptied_then_finalized() -> None:
    client = Client()
    serve_discovery(client)
    factory = InformerFactory(client)  # type: ignore[arg-type]
    ctrl = NamespaceController(client, factory)  # type: ignore[arg-type]
    feed(ctrl.namespaces, {"metadata": {"name": "ns", "deletionTimestamp": "2026-01-01T00:00:00Z",
                                        "resourceVersion": "2"},
                           "spec": {"finalizers": ["kubernetes"]}})
    client.objects["/api/v1/namespaces/ns/configmaps"] = {"items": [{"metadata": {"name": "c"}}]}
    assert await ctrl.reconcile("ns") == requeue_after(0.4)  # a finalizer holds one object
    assert ("/api/v1/namespaces/ns/configmaps", {"propagationPolicy": "Background"}) \
        in client.deleted
    client.objects["/api/v1/namespaces/ns/configmaps"] = {"items": []}
    assert await ctrl.reconcile("ns") == DONE
    assert client.objects["/api/v1/namespaces/ns/finalize"]["spec"]["finalizers"] == []
    assert await ctrl.reconcile("other") == DONE  # not in the cache: nothing to do


def node_setup() -> tuple[Client, FakeClock, NodeLifecycleController]:
    client, clock = Client(), FakeClock()
    factory = InformerFactory(client)  # type: ignore[arg-type]
    ctrl = NodeLifecycleController(client, factory, clock=clock)  # type: ignore[arg-type]
    return client, clock, ctrl


def node_pod(name: str, node: str, tolerate: float | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"nodeName": node}
    if tolerate is not None:
        spec["tolerations"] = [{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                                "effect": "NoExecute", "tolerationSeconds": tolerate}]
    return {"metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}",
                         "resourceVersion": "1"}, "spec": spec, "status": {"phase": "Running"}}


async def test_node_lease_expiry_taints_and_evicts_at_due_time() -> None:
    client, clock, ctrl = node_setup()
    node = {"metadata": {"name": "n1", "resourceVersion": "5"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    feed(ctrl.nodes, node)
    client.objects["/api/v1/nodes/n1"] = node
    client.objects["/api/v1/nodes/n1/status"] = node
    lease = {"metadata": {"name": "n1", "namespace": "kube-node-lease", "resourceVersion": "1"},
             "spec": {"renewTime": rfc3339(clock() - 10), "leaseDurationSeconds": 40}}
    feed(ctrl.leases, lease)
    assert ctrl._lease_changed("ADDED", lease, None) == ["n1"]
    assert ctrl._lease_changed("ADDED", {"metadata": {"name": "n1", "namespace": "x"}}, None) == []
    # a fresh Lease: look again exactly when it would expire
    assert await ctrl.reconcile("n1") == requeue_after(30 + GRACE_SECONDS + 0.05)
    feed(ctrl.pods, node_pod("short", "n1"))
    feed(ctrl.pods, node_pod("patient", "n1", tolerate=300))
    feed(ctrl.pods, node_pod("elsewhere", "n2"))
    clock.advance(31 + GRACE_SECONDS)
    tainted_at = clock()
    assert await ctrl.reconcile("n1") == requeue_after(300.05)
    assert ("PATCH", "/api/v1/nodes/n1/status") in client.calls
    assert ("PATCH", "/api/v1/nodes/n1") in client.calls
    assert [p for p, _ in client.deleted] == ["/api/v1/namespaces/ns/pods/short"]
    # the taint is in the cache now: a pod arriving on the node wakes it
    feed(ctrl.nodes, dict(node, metadata={"name": "n1", "resourceVersion": "6"}, spec={"taints": [
        {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule",
         "timeAdded": rfc3339(tainted_at)},
        {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute",
         "timeAdded": rfc3339(tainted_at)}]}), "MODIFIED")
    assert ctrl._pod_changed("ADDED", node_pod("new", "n1"), None) == ["n1"]
    assert ctrl._pod_changed("ADDED", node_pod("new", "n2"), None) == []
    feed(ctrl.pods, node_pod("short", "n1"), "DELETED")
    clock.advance(300)
    assert await ctrl.reconcile("n1") == DONE
    assert [p for p, _ in client.deleted][-1] == "/api/v1/namespaces/ns/pods/patient"
    assert "/api/v1/namespaces/ns/pods/elsewhere" not in [p for p, _ in client.deleted]


async def test_node_gone_pods_collected() -> None:
    client, _, ctrl = node_setup()
    feed(ctrl.pods, node_pod("p", "gone"))
    feed(ctrl.pods, node_pod("q", "other"))
    assert await ctrl.reconcile("gone") == DONE
    assert client.deleted == [("/api/v1/namespaces/ns/pods/p",
                               {"apiVersion": "v1", "kind": "DeleteOptions",
                                "gracePeriodSeconds": 0, "preconditions": {"uid": "uid-p"}})]


async def test_quota_recounted_and_released_by_namespace() -> None:
    client = Client()
    factory = InformerFactory(client)  # type: ignore[arg-type]
    ctrl = ResourceQuotaController(client, factory)  # type: ignore[arg-type]
    quota = {"metadata": {"name": "q", "namespace": "ns", "resourceVersion": "3"},
             "spec": {"hard": {"pods": "5", "configmaps": "3"}},
             "status": {"hard": {"pods": "5", "configmaps": "3"},
                        "used": {"pods": "2", "configmaps": "1"}}}
    feed(ctrl.quotas, quota)
    feed(factory.informer("", "v1", "resourcequotas"),
         dict(quota, metadata={"name": "q2", "namespace": "other", "resourceVersion": "1"}))
    services = factory.informer("", "v1", "services", metadata_only=True)
    assert ctrl._released("DELETED", {"metadata": {"name": "c", "namespace": "ns"}}, None,
                          is_pod=False) == {"ns/q"}
    assert ctrl._released("MODIFIED", {"metadata": {"name": "c", "namespace": "ns"}}, {},
                          is_pod=False) == []
    done = {"metadata": {"name": "p", "namespace": "ns"}, "status": {"phase": "Succeeded"}}
    assert ctrl._released("MODIFIED", done, {"metadata": done["metadata"], "status": {}},
                          is_pod=True) == {"ns/q"}
    assert services in ctrl.informers  # shared with the garbage collector's metadata cache
    assert factory.informer("", "v1", "configmaps") in ctrl.informers  # as the CA publisher's
    path = "/api/v1/namespaces/ns/resourcequotas/q"
    client.objects[path] = quota
    client.objects["/api/v1/namespaces/ns/pods"] = {"items": [
        {"metadata": {"name": "p1"}, "spec": {}, "status": {"phase": "Running"}}]}
    client.objects["/api/v1/namespaces/ns/configmaps"] = {"items": []}
    client.objects["/apis/vmoperator.vmware.com/v1alpha3/namespaces/ns/virtualmachines"] = {
        "items": []}
    client.objects["/apis/vmoperator.vmware.com/v1alpha3/namespaces/ns/virtualmachineclasses"] = {
        "items": []}
    client.fail_next[path + "/status"] = errors.Conflict("a charge landed")
    await ctrl.process("ns/q")
    assert ctrl.outcomes["error"] == 1 and ctrl.queue.stats.retries == 1
    assert await ctrl.reconcile("ns/q") == DONE
    assert client.objects[path + "/status"]["status"]["used"] == {"pods": "1", "configmaps": "0"}


async def test_quota_admission_charges_not_recounted() -> None:
    client = Client()
    ctrl = ResourceQuotaController(client, InformerFactory(client))  # type: ignore[arg-type]
    hard = {"pods": "5"}
    old = {"metadata": {"name": "q", "namespace": "ns"}, "spec": {"hard": hard},
           "status": {"hard": hard, "used": {"pods": "1"}}}
    charged = dict(old, status={"hard": hard, "used": {"pods": "2"}})
    assert ctrl._quota_changed("MODIFIED", charged, old) == []
    assert ctrl._quota_changed("ADDED", dict(old, status={}), None) == ["ns/q"]


async def test_clusterrole_aggregation_collects_matching_rules() -> None:
    client = Client()
    factory = InformerFactory(client)  # type: ignore[arg-type]
    ctrl = ClusterRoleAggregationController(client, factory)  # type: ignore[arg-type]
    agg = {"metadata": {"name": "edit", "resourceVersion": "1"},
           "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"agg": "true"}}]},
           "rules": []}
    rule = {"apiGroups": ["x"], "resources": ["y"], "verbs": ["get"]}
    part = {"metadata": {"name": "part", "labels": {"agg": "true"}, "resourceVersion": "1"},
            "rules": [rule]}
    feed(ctrl.roles, agg)
    feed(ctrl.roles, part)
    feed(ctrl.roles, {"metadata": {"name": "plain", "resourceVersion": "1"}, "rules": [rule]})
    assert ctrl._aggregating("MODIFIED", part, None) == {"edit"}
    assert await ctrl.reconcile("edit") == DONE
    path = "/apis/rbac.authorization.k8s.io/v1/clusterroles/edit"
    assert client.objects[path]["rules"] == [rule]
    assert await ctrl.reconcile("part") == DONE  # not aggregating: nothing written
    assert [c for c in client.calls if c[0] == "PUT"] == [("PUT", path)]


async def test_serviceaccounts_default_account_and_root_ca() -> None:
    client = Client()
    factory = InformerFactory(client)  # type: ignore[arg-type]
    ctrl = ServiceAccountsController(client, factory, ca_pem=b"CA")  # type: ignore[arg-type]
    assert ctrl.accounts is factory.informer("", "v1", "serviceaccounts", metadata_only=True)
    feed(ctrl.namespaces, {"metadata": {"name": "ns", "resourceVersion": "1"}})
    feed(ctrl.namespaces, {"metadata": {"name": "gone", "resourceVersion": "1",
                                        "deletionTimestamp": "2026-01-01T00:00:00Z"}})
    assert await ctrl.reconcile("ns") == DONE
    assert client.objects["/api/v1/namespaces/ns/serviceaccounts/default"]["metadata"] == {
        "name": "default"}
    assert client.objects[f"/api/v1/namespaces/ns/configmaps/{ROOT_CA}"]["data"] == {
        "ca.crt": "CA"}
    assert await ctrl.reconcile("gone") == DONE
    assert not any("/namespaces/gone/" in p for _, p in client.calls)
    # a changed CA is put back; another account's deletion is not our business
    stale = {"metadata": {"name": ROOT_CA, "namespace": "ns", "resourceVersion": "2"},
             "data": {"ca.crt": "OLD"}}
    assert ctrl._configmap_changed("MODIFIED", stale, None) == ["ns"]
    feed(ctrl.configmaps, stale)
    feed(ctrl.accounts, {"metadata": {"name": "default", "namespace": "ns",
                                      "resourceVersion": "1"}})
    assert ctrl._account_changed("DELETED", {"metadata": {"name": "x", "namespace": "ns"}},
                                 None) == []
    assert ctrl._account_changed("DELETED", {"metadata": {"name": "default",
                                                          "namespace": "ns"}}, None) == ["ns"]
    await ctrl.reconcile("ns")
    assert ("PATCH", f"/api/v1/namespaces/ns/configmaps/{ROOT_CA}") in client.calls
    client.fail_next[f"/api/v1/namespaces/ns/configmaps/{ROOT_CA}"] = errors.Forbidden("quota")
    assert await ctrl.reconcile("ns") == requeue_after(30.0)


async def test_shared_informers_across_controllers() -> None:
    client = Client()
    factory = InformerFactory(client)  # type: ignore[arg-type]
    nodes = NodeLifecycleController(client, factory)  # type: ignore[arg-type]
    quota = ResourceQuotaController(client, factory)  # type: ignore[arg-type]
    accounts = ServiceAccountsController(client, factory, ca_pem=b"CA")  # type: ignore[arg-type]
    spaces = NamespaceController(client, factory)  # type: ignore[arg-type]
    assert nodes.pods is factory.informer("", "v1", "pods")
    assert nodes.pods in quota.informers
    assert nodes.nodes is factory.informer("", "v1", "nodes")
    assert accounts.namespaces is spaces.namespaces


async def test_gc_uses_the_full_informer_another_controller_caches() -> None:
    client = Client()
    serve_discovery(client)
    factory = InformerFactory(client)  # type: ignore[arg-type]
    nodes = NodeLifecycleController(client, factory)  # type: ignore[arg-type]
    collector = gc.GarbageCollector(client, factory)  # type: ignore[arg-type]
    collector.sync_timeout = 0.01
    assert await collector.reconcile(gc.RESOURCES) == requeue_after(gc.PENDING_RECHECK)
    assert collector.pending[("", "v1", "pods")][1] is nodes.pods
    assert collector.pending[("", "v1", "configmaps")][1] is factory.informer(
        "", "v1", "configmaps", metadata_only=True)
    feed(nodes.pods, node_pod("p", "n1"))
    assert await collector.reconcile(gc.RESOURCES) == requeue_after(gc.PENDING_RECHECK)
    assert set(collector.monitors) == {("", "v1", "pods")}
