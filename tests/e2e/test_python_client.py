"""The API server driven by the official `kubernetes` Python client."""

from __future__ import annotations

import json
import threading
import time

import pytest
from kubernetes.client.rest import ApiException


def test_crud_conflict_and_errors(k8s, namespace: str) -> None:
    client, api = k8s
    v1 = client.CoreV1Api(api)
    cm = v1.create_namespaced_config_map(namespace, {"metadata": {"name": "cm1"},
                                                     "data": {"a": "1"}})
    assert cm.metadata.uid and cm.metadata.resource_version and cm.metadata.creation_timestamp
    old = cm.metadata.resource_version
    cm.data["x"] = "1"
    v1.replace_namespaced_config_map("cm1", namespace, cm)
    cm.metadata.resource_version = old
    with pytest.raises(ApiException) as exc:
        v1.replace_namespaced_config_map("cm1", namespace, cm)
    assert exc.value.status == 409
    with pytest.raises(ApiException) as exc:
        v1.read_namespaced_config_map("nope", namespace)
    assert exc.value.status == 404
    with pytest.raises(ApiException) as exc:
        v1.create_namespaced_config_map(namespace, {"metadata": {"name": "Bad_Name"}})
    assert exc.value.status == 422
    with pytest.raises(ApiException) as exc:
        v1.create_namespaced_config_map(namespace, {"metadata": {}})
    assert exc.value.status == 422
    gen = v1.create_namespaced_config_map(namespace, {"metadata": {"generateName": "gen-"}})
    assert gen.metadata.name.startswith("gen-") and len(gen.metadata.name) == 9


def test_generation_bumps_on_spec_only(k8s, namespace: str) -> None:
    client, api = k8s
    apps = client.AppsV1Api(api)
    body = {"metadata": {"name": "g"}, "spec": {
        "replicas": 0, "selector": {"matchLabels": {"app": "g"}},
        "template": {"metadata": {"labels": {"app": "g"}},
                     "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}
    d = apps.create_namespaced_deployment(namespace, body)
    assert d.metadata.generation == 1
    d = apps.patch_namespaced_deployment("g", namespace, {"metadata": {"labels": {"x": "y"}}})
    assert d.metadata.generation == 1
    d = apps.patch_namespaced_deployment("g", namespace, {"spec": {"replicas": 2}})
    assert d.metadata.generation == 2
    # status writes go through /status and do not touch spec or generation
    d = apps.patch_namespaced_deployment_status("g", namespace,
                                                {"status": {"observedGeneration": 2}})
    assert d.status.observed_generation == 2 and d.metadata.generation == 2
    d = apps.patch_namespaced_deployment("g", namespace, {"status": {"replicas": 5}})
    assert d.status.replicas != 5  # the main resource ignores status (the controller owns it)


def test_list_pagination(k8s, namespace: str) -> None:
    client, api = k8s
    v1 = client.CoreV1Api(api)
    for i in range(25):
        v1.create_namespaced_config_map(namespace, {"metadata": {"name": f"p{i:02d}"}})
    names: list[str] = []
    cont = None
    pages = 0
    while True:
        page = v1.list_namespaced_config_map(namespace, limit=10, _continue=cont)
        pages += 1
        names += [c.metadata.name for c in page.items]
        cont = page.metadata._continue
        if not cont:
            break
    assert pages == 3
    assert [n for n in names if n.startswith("p")] == [f"p{i:02d}" for i in range(25)]
    with pytest.raises(ApiException) as exc:
        v1.list_namespaced_config_map(namespace, _continue="garbage!")
    assert exc.value.status == 400


def test_watch_from_resource_version(k8s, namespace: str) -> None:
    client, api = k8s
    from kubernetes import watch

    v1 = client.CoreV1Api(api)
    listing = v1.list_namespaced_config_map(namespace)
    rv = listing.metadata.resource_version

    def writer() -> None:
        v1.create_namespaced_config_map(namespace, {"metadata": {"name": "w1"}})
        v1.patch_namespaced_config_map("w1", namespace, {"data": {"a": "b"}})
        v1.delete_namespaced_config_map("w1", namespace)

    threading.Thread(target=writer).start()
    seen = []
    w = watch.Watch()
    for event in w.stream(v1.list_namespaced_config_map, namespace, resource_version=rv,
                          timeout_seconds=20):
        seen.append((event["type"], event["object"].metadata.name))
        if event["type"] == "DELETED":
            w.stop()
    assert seen == [("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w1")]


def test_watch_ends_at_timeout_and_sends_initial_events(k8s, namespace: str) -> None:
    client, api = k8s
    v1 = client.CoreV1Api(api)
    v1.create_namespaced_config_map(namespace, {"metadata": {"name": "first"}})
    started = time.monotonic()
    resp = v1.list_namespaced_config_map(namespace, watch=True, timeout_seconds=1,
                                         allow_watch_bookmarks=True, send_initial_events=True,
                                         resource_version_match="NotOlderThan",
                                         resource_version="", _preload_content=False)
    lines = [line for line in resp.read().decode().splitlines() if line]
    elapsed = time.monotonic() - started
    events = [json.loads(line) for line in lines]
    # every namespace holds kube-root-ca.crt, as upstream's
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events[:2]] == [
        ("ADDED", "first"), ("ADDED", "kube-root-ca.crt")]
    assert events[2]["type"] == "BOOKMARK"
    assert events[2]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert 0.9 <= elapsed < 10, elapsed  # the server closes the stream at timeoutSeconds


def test_finalizers_hold_deletion(k8s, namespace: str) -> None:
    client, api = k8s
    v1 = client.CoreV1Api(api)
    v1.create_namespaced_config_map(namespace, {"metadata": {"name": "f",
                                                             "finalizers": ["example.com/hold"]}})
    v1.delete_namespaced_config_map("f", namespace)
    cm = v1.read_namespaced_config_map("f", namespace)
    assert cm.metadata.deletion_timestamp is not None
    with pytest.raises(ApiException) as exc:
        v1.patch_namespaced_config_map("f", namespace, {"metadata": {"finalizers": [
            "example.com/hold", "example.com/new"]}})
    assert exc.value.status == 422
    v1.patch_namespaced_config_map("f", namespace, {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as exc:
        v1.read_namespaced_config_map("f", namespace)
    assert exc.value.status == 404


def _wait_gone(read, deadline_s: float = 20.0) -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            read()
        except ApiException as e:
            if e.status == 404:
                return True
            raise
        time.sleep(0.1)
    return False


def test_garbage_collection_background(k8s, namespace: str) -> None:
    client, api = k8s
    v1 = client.CoreV1Api(api)
    owner = v1.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    v1.create_namespaced_config_map(namespace, {"metadata": {"name": "child", "ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}]}})
    v1.delete_namespaced_config_map("owner", namespace)
    assert _wait_gone(lambda: v1.read_namespaced_config_map("child", namespace))


def test_garbage_collection_orphan(k8s, namespace: str) -> None:
    client, api = k8s
    v1 = client.CoreV1Api(api)
    owner = v1.create_namespaced_config_map(namespace, {"metadata": {"name": "o2"}})
    v1.create_namespaced_config_map(namespace, {"metadata": {"name": "c2", "ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "o2", "uid": owner.metadata.uid}]}})
    v1.delete_namespaced_config_map("o2", namespace, propagation_policy="Orphan")
    assert _wait_gone(lambda: v1.read_namespaced_config_map("o2", namespace))
    child = v1.read_namespaced_config_map("c2", namespace)
    assert not child.metadata.owner_references


def test_garbage_collection_foreground(k8s, namespace: str) -> None:
    client, api = k8s
    v1 = client.CoreV1Api(api)
    owner = v1.create_namespaced_config_map(namespace, {"metadata": {"name": "o3"}})
    v1.create_namespaced_config_map(namespace, {"metadata": {"name": "c3", "ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "o3", "uid": owner.metadata.uid,
         "blockOwnerDeletion": True}]}})
    v1.delete_namespaced_config_map("o3", namespace, propagation_policy="Foreground")
    assert _wait_gone(lambda: v1.read_namespaced_config_map("o3", namespace))
    assert _wait_gone(lambda: v1.read_namespaced_config_map("c3", namespace), 1.0)


def test_dynamic_client(k8s, namespace: str) -> None:
    client, api = k8s
    from kubernetes import dynamic

    dyn = dynamic.DynamicClient(api)
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
    cms.create(body={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dyn"},
                     "data": {"a": "b"}}, namespace=namespace)
    got = cms.get(name="dyn", namespace=namespace)
    assert got.data.a == "b"
    deps = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    assert deps.namespaced
