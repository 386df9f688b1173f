"""A node whose Lease expires is marked unreachable and its pods are evicted; renewal heals it."""

from __future__ import annotations

import datetime as dt
import time
import uuid

from kubernetes.client.rest import ApiException


def micro_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def wait_for(check, timeout: float = 30.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


def test_expired_lease_taints_node_and_evicts_pods(k8s, namespace: str) -> None:
    client, api = k8s
    v1 = client.CoreV1Api(api)
    coord = client.CoordinationV1Api(api)
    name = f"sim-{uuid.uuid4().hex[:6]}"
    v1.create_node({"metadata": {"name": name}, "status": {"conditions": [
        {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ok"}]}})
    lease = {"metadata": {"name": name, "namespace": "kube-node-lease"},
             "spec": {"holderIdentity": name, "leaseDurationSeconds": 2,
                      "renewTime": micro_now()}}
    try:
        coord.create_namespaced_lease("kube-node-lease", lease)
    except ApiException as e:
        if e.status != 404:
            raise
        v1.create_namespace({"metadata": {"name": "kube-node-lease"}})
        coord.create_namespaced_lease("kube-node-lease", lease)
    v1.create_namespaced_pod(namespace, {"metadata": {"name": "victim"}, "spec": {
        "nodeName": name, "containers": [{"name": "c", "image": "busybox"}]}})
    v1.create_namespaced_pod(namespace, {"metadata": {"name": "stayer"}, "spec": {
        "nodeName": name, "containers": [{"name": "c", "image": "busybox"}],
        "tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                         "effect": "NoExecute"}]}})
    try:
        node = wait_for(lambda: (n := v1.read_node(name)).spec and n.spec.taints and n,
                        what="taints")
        assert {(t.key, t.effect) for t in node.spec.taints} == {
            ("node.kubernetes.io/unreachable", "NoSchedule"),
            ("node.kubernetes.io/unreachable", "NoExecute")}
        ready = next(c for c in node.status.conditions if c.type == "Ready")
        assert ready.status == "Unknown" and ready.reason == "NodeStatusUnknown"
        # the default toleration (3 s) runs out, then the pod is evicted
        wait_for(lambda: v1.read_namespaced_pod("victim", namespace).metadata.deletion_timestamp,
                 timeout=30, what="eviction")
        assert v1.read_namespaced_pod("stayer", namespace).metadata.deletion_timestamp is None
        # the agent is back: renewing the Lease removes the taints
        coord.patch_namespaced_lease(name, "kube-node-lease",
                                     {"spec": {"renewTime": micro_now(),
                                               "leaseDurationSeconds": 60}})
        wait_for(lambda: not (v1.read_node(name).spec and v1.read_node(name).spec.taints),
                 what="taints removed")
        # the node controller tells the story in Events, on the node and on its pods
        def reasons(obj_name: str, ns: str) -> set[str]:
            return {e.reason for e in v1.list_namespaced_event(
                ns, field_selector=f"involvedObject.name={obj_name}").items}
        wait_for(lambda: {"NodeNotReady", "NodeReady"} <= reasons(name, "default"),
                 what="node events")
        wait_for(lambda: {"NodeNotReady", "TaintManagerEviction"} <= reasons("victim", namespace),
                 what="pod events")
    finally:
        v1.delete_node(name)
        coord.delete_namespaced_lease(name, "kube-node-lease")
