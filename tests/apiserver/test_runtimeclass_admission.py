"""RuntimeClass admission on a real API server (store, watch cache, the whole admission chain):
the built-in ``atoll-vm`` class, overhead and scheduling copied into pods with upstream's
refusals, namespace and platform defaults, what a pod-VM cannot honour, and the overhead in
ResourceQuota but not in LimitRange."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from atoll.api import errors, quotausage
from atoll.api.resources.core_v1 import LIMITRANGES, NAMESPACES, RESOURCEQUOTAS
from atoll.api.resources.core_v1_pods import PODS
from atoll.api.resources.node_v1 import RUNTIMECLASSES
from atoll.apiserver.app import ApiServer
from atoll.apiserver.objects import WriteOptions
from atoll.settings import ServerSettings
from tests.conftest import free_port

OPTS = WriteOptions(field_manager="test")
PRIVILEGED = {"pod-security.kubernetes.io/enforce": "privileged"}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ApiServer]:
    s = ApiServer(ServerSettings(data_dir=tmp_path, port=free_port(), bind_address="127.0.0.1"))
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


async def namespace(s: ApiServer, name: str, labels: dict[str, str] | None = None) -> None:
    await s.svc.create(NAMESPACES, "", {"metadata": {"name": name, "labels": labels or {}}},
                       OPTS)


async def runtime_class(s: ApiServer, name: str, **fields: Any) -> None:
    await s.svc.create(RUNTIMECLASSES, "", {"apiVersion": "node.k8s.io/v1",
                                            "kind": "RuntimeClass", "metadata": {"name": name},
                                            **fields}, OPTS)


def pod_body(name: str, **spec: Any) -> dict[str, Any]:
    container = {"name": "c", "image": "busybox"}
    if "resources" in spec:
        container["resources"] = spec.pop("resources")
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [container], **spec}}


async def pod(s: ApiServer, ns: str, name: str, **spec: Any) -> dict[str, Any]:
    return await s.svc.create(PODS, ns, pod_body(name, **spec), OPTS)


async def refused(s: ApiServer, ns: str, name: str, **spec: Any) -> errors.Forbidden:
    with pytest.raises(errors.Forbidden) as info:
        await pod(s, ns, name, **spec)
    return info.value


async def test_builtin_class_and_its_overhead(server: ApiServer) -> None:
    stored = server.svc.read(RUNTIMECLASSES, "", "atoll-vm")
    assert stored is not None
    assert stored.obj["handler"] == "atoll-vm"
    assert stored.obj["overhead"] == {"podFixed": {"cpu": "100m", "memory": "64Mi"}}
    created = await pod(server, "default", "vm", runtimeClassName="atoll-vm")
    assert created["spec"]["overhead"] == {"cpu": "100m", "memory": "64Mi"}
    plain = await pod(server, "default", "plain")
    assert "overhead" not in plain["spec"] and "runtimeClassName" not in plain["spec"]


async def test_unknown_class_and_foreign_overhead_refused_as_upstream(server: ApiServer) -> None:
    e = await refused(server, "default", "p1", runtimeClassName="nope")
    assert e.message == 'pods "p1" is forbidden: pod rejected: RuntimeClass "nope" not found'
    assert e.code == 403
    e = await refused(server, "default", "p2", runtimeClassName="atoll-vm",
                      overhead={"cpu": "1"})
    assert e.message == ('pods "p2" is forbidden: pod rejected: Pod\'s Overhead doesn\'t match '
                         "RuntimeClass's defined Overhead")
    e = await refused(server, "default", "p3", overhead={"cpu": "1"})
    assert e.message == ('pods "p3" is forbidden: pod rejected: Pod Overhead set without '
                         "corresponding RuntimeClass defined Overhead")
    await runtime_class(server, "bare", handler="runc")
    await refused(server, "default", "p4", runtimeClassName="bare", overhead={"cpu": "1"})
    # the same amounts spelt otherwise are the same overhead
    same = await pod(server, "default", "p5", runtimeClassName="atoll-vm",
                     overhead={"cpu": "0.1", "memory": "65536Ki"})
    assert same["spec"]["overhead"] == {"cpu": "100m", "memory": "64Mi"}


async def test_scheduling_merged_conflicts_refused(server: ApiServer) -> None:
    await runtime_class(server, "edge", handler="runc", scheduling={
        "nodeSelector": {"zone": "edge", "disk": "ssd"},
        "tolerations": [{"key": "edge", "operator": "Exists", "effect": "NoSchedule"},
                        {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                         "effect": "NoExecute", "tolerationSeconds": 3}]})
    created = await pod(server, "default", "s1", runtimeClassName="edge",
                        nodeSelector={"disk": "ssd", "rack": "7"},
                        tolerations=[{"key": "edge", "operator": "Equal", "value": "a",
                                      "effect": "NoSchedule"}])
    spec = created["spec"]
    assert spec["nodeSelector"] == {"disk": "ssd", "rack": "7", "zone": "edge"}
    keys = [(t.get("key"), t.get("operator")) for t in spec["tolerations"]]
    # the pod's Equal toleration is covered by the class's Exists one; the not-ready default
    # (added before this plugin) equals the class's and is kept once
    assert keys == [("node.kubernetes.io/not-ready", "Exists"),
                    ("node.kubernetes.io/unreachable", "Exists"), ("edge", "Exists")]
    e = await refused(server, "default", "s2", runtimeClassName="edge",
                      nodeSelector={"zone": "core"})
    assert e.message == ('pods "s2" is forbidden: conflict: '
                         "runtimeClass.scheduling.nodeSelector[zone] = edge; "
                         "pod.spec.nodeSelector[zone] = core")
    bare = await pod(server, "default", "s3", runtimeClassName="edge")
    assert bare["spec"]["nodeSelector"] == {"zone": "edge", "disk": "ssd"}


async def test_namespace_label_sets_the_default_class(server: ApiServer) -> None:
    await namespace(server, "vms", {"atoll.dev/default-runtime-class": "atoll-vm"})
    created = await pod(server, "vms", "d1")
    assert created["spec"]["runtimeClassName"] == "atoll-vm"
    assert created["spec"]["overhead"] == {"cpu": "100m", "memory": "64Mi"}
    await runtime_class(server, "other", handler="runc")
    chosen = await pod(server, "vms", "d2", runtimeClassName="other")
    assert chosen["spec"]["runtimeClassName"] == "other"
    assert (await pod(server, "default", "d3"))["spec"].get("runtimeClassName") is None


async def test_platform_default_for_tenant_namespaces(tmp_path: Path) -> None:
    settings = ServerSettings(data_dir=tmp_path, port=free_port(), bind_address="127.0.0.1",
                              default_runtime_class="atoll-vm")
    s = ApiServer(dataclasses.replace(settings))
    await s.start()
    try:
        assert (await pod(s, "default", "t1"))["spec"]["runtimeClassName"] == "atoll-vm"
        assert (await pod(s, "kube-system", "t2"))["spec"].get("runtimeClassName") is None
        await namespace(s, "optout", {"atoll.dev/default-runtime-class": ""})
        assert (await pod(s, "optout", "t3"))["spec"].get("runtimeClassName") is None
    finally:
        await s.stop()


@pytest.mark.parametrize("spec, field", [
    ({"hostNetwork": True}, "spec.hostNetwork"),
    ({"hostPID": True}, "spec.hostPID"),
    ({"hostIPC": True}, "spec.hostIPC"),
    ({"shareProcessNamespace": True}, "spec.shareProcessNamespace"),
    ({"initContainers": [{"name": "i", "image": "busybox",
                          "securityContext": {"privileged": True}}]},
     "spec.initContainers[0].securityContext.privileged"),
    ({"volumes": [{"name": "kvm", "hostPath": {"path": "/dev/kvm"}}]},
     "spec.volumes[0].hostPath.path"),
    ({"volumes": [{"name": "d", "hostPath": {"path": "/srv/disk", "type": "BlockDevice"}}]},
     "spec.volumes[0].hostPath.type"),
])
async def test_what_a_pod_vm_cannot_honour(server: ApiServer, spec: dict[str, Any],
                                           field: str) -> None:
    await namespace(server, "priv", PRIVILEGED)
    e = await refused(server, "priv", "v", runtimeClassName="atoll-vm", **spec)
    assert [c.field for c in e.causes] == [field]
    assert e.message.startswith('pods "v" is forbidden: a pod-VM (RuntimeClass "atoll-vm", '
                                f'handler "atoll-vm") cannot honour {field}: ')
    # the same pod under runc is fine
    await pod(server, "priv", "r", **spec)


async def test_what_a_pod_vm_allows_and_privileged_containers(server: ApiServer) -> None:
    await namespace(server, "priv", PRIVILEGED)
    await pod(server, "priv", "ports", runtimeClassName="atoll-vm",
              volumes=[{"name": "data", "hostPath": {"path": "/srv/data"}}])
    body = pod_body("priv", runtimeClassName="atoll-vm")
    body["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    body["spec"]["containers"][0]["ports"] = [{"containerPort": 80, "hostPort": 8080}]
    with pytest.raises(errors.Forbidden) as info:
        await server.svc.create(PODS, "priv", body, OPTS)
    assert [c.field for c in info.value.causes] == ["spec.containers[0].securityContext.privileged"]
    # another class with the atoll-vm handler is held to the same rules
    await runtime_class(server, "vm-small", handler="atoll-vm")
    e = await refused(server, "priv", "v2", runtimeClassName="vm-small", hostNetwork=True)
    assert 'RuntimeClass "vm-small"' in e.message


async def test_quota_counts_overhead_limitrange_does_not(server: ApiServer) -> None:
    await namespace(server, "q")
    await server.svc.create(RESOURCEQUOTAS, "q", {
        "metadata": {"name": "budget"},
        "spec": {"hard": {"requests.cpu": "2", "requests.memory": "1Gi",
                          "limits.memory": "1Gi"}}}, OPTS)
    await server.svc.create(LIMITRANGES, "q", {
        "metadata": {"name": "pods"},
        "spec": {"limits": [{"type": "Pod", "max": {"memory": "900Mi"}}]}}, OPTS)
    # 900Mi is the Pod maximum: the 64Mi overhead does not count against it (as upstream)
    await pod(server, "q", "a", runtimeClassName="atoll-vm",
              resources={"requests": {"cpu": "100m", "memory": "900Mi"},
                         "limits": {"memory": "900Mi"}})
    used = (server.svc.read(RESOURCEQUOTAS, "q", "budget").obj.get("status") or {})["used"]
    assert used["requests.cpu"] == "200m"
    assert used["requests.memory"] == "964Mi"
    assert used["limits.memory"] == "964Mi"
    small = {"requests": {"cpu": "10m", "memory": "50Mi"}, "limits": {"memory": "50Mi"}}
    with pytest.raises(errors.Forbidden) as info:  # over the quota only with the overhead
        await pod(server, "q", "b", runtimeClassName="atoll-vm", resources=small)
    assert "exceeded quota: budget" in info.value.message
    await pod(server, "q", "c", resources=small)


def test_overhead_joins_every_request_but_only_the_limits_set() -> None:
    spec = {"containers": [{"name": "c", "resources": {"limits": {"memory": "100Mi"}}}],
            "overhead": {"cpu": "100m", "memory": "64Mi"}}
    usage = quotausage.pod_compute(spec)
    assert usage["requests.cpu"] == Decimal("0.1")
    assert usage["requests.memory"] == 164 * 2**20
    assert usage["limits.memory"] == 164 * 2**20
    assert "limits.cpu" not in usage  # an unlimited pod stays unlimited
    # quota scopes read the QoS class, which ignores the overhead
    best_effort = {"containers": [{"name": "c"}], "overhead": {"cpu": "100m"}}
    assert quotausage.pod_matches_scopes({"spec": best_effort}, ["BestEffort"])
