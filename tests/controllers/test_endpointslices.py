"""The endpoint controllers' pure parts: slice packing, endpoint content, Endpoints subsets,
mirroring, and the trackers; then the reconciles against a fake client (no server).

tests/e2e/test_endpoints.py drives the same controllers on a real platform.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from atoll.api.resources.discovery_v1 import MANAGED_BY_LABEL, SERVICE_NAME_LABEL
from atoll.api.timestamps import rfc3339
from atoll.client.factory import InformerFactory
from atoll.controllers import endpointslicemirroring as mirroring
from atoll.controllers import endpointutil as eu
from atoll.controllers import slicepacking as sp
from atoll.controllers.endpoints import (EndpointsController, desired_labels, desired_subsets,
                                         truncate)
from atoll.controllers.endpointslice import EndpointSliceController
from atoll.controllers.endpointslicemirroring import EndpointSliceMirroringController
from atoll.settings import ReconcileSettings
from tests.client.fakes import FakeClient, feed

NS = "ns"
NODE = {"metadata": {"name": "n1", "labels": {eu.ZONE_LABEL: "zone-a"}}}


def service(name: str = "web", *, selector: dict | None = None, ports: list | None = None,
            **spec: Any) -> dict[str, Any]:
    body = {"metadata": {"name": name, "namespace": NS, "uid": f"svc-{name}",
                         "labels": {"team": "a"}, "creationTimestamp": rfc3339(1000)},
            "spec": {"selector": {"app": name} if selector is None else selector,
                     "clusterIP": "10.96.0.5",
                     "ports": ports if ports is not None else [
                         {"name": "http", "port": 80, "protocol": "TCP",
                          "targetPort": "http"}], **spec}}
    return body


def pod(name: str, ip: str | None = "10.88.0.10", *, app: str = "web", ready: bool = True,
        port: int = 8080, phase: str = "Running", deleting: bool = False,
        **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": NS, "uid": f"uid-{name}",
                            "labels": {"app": app}, "resourceVersion": "1"}
    if deleting:
        meta["deletionTimestamp"] = rfc3339(2000)
    status: dict[str, Any] = {"phase": phase, "conditions": [
        {"type": "Ready", "status": "True" if ready else "False",
         "lastTransitionTime": rfc3339(1500)}]}
    if ip:
        status.update(podIP=ip, podIPs=[{"ip": ip}])
    return {"metadata": meta,
            "spec": {"nodeName": "n1", "containers": [
                {"name": "c", "ports": [{"name": "http", "containerPort": port,
                                         "protocol": "TCP"}]}], **spec},
            "status": status}


def pods(n: int) -> list[dict[str, Any]]:
    return [pod(f"p{i:03d}", f"10.88.{i // 250}.{i % 250 + 1}") for i in range(n)]


def desired(svc: dict[str, Any], ps: list[dict[str, Any]]) -> dict:
    groups, skipped = sp.desired_endpoints(svc, ps, lambda name: NODE if name == "n1" else None)
    assert not skipped
    return groups


def named(plan: sp.Plan, prefix: str = "web-") -> list[dict[str, Any]]:
    """The plan's creates given names and uids, as the server would."""
    out = []
    for i, body in enumerate(plan.create):
        s = copy.deepcopy(body)
        s["metadata"]["name"] = f"{prefix}{i}"
        s["metadata"]["uid"] = f"slice-{i}"
        s["metadata"].pop("generateName", None)
        out.append(s)
    return out


# -- packing -------------------------------------------------------------------------------------
def test_more_than_100_endpoints_go_into_several_slices() -> None:
    svc = service()
    plan = sp.plan_slices(svc, [], desired(svc, pods(250)))
    assert not plan.update and not plan.delete
    assert sorted(len(s["endpoints"]) for s in plan.create) == [50, 100, 100]
    ips = [ep["addresses"][0] for s in plan.create for ep in s["endpoints"]]
    assert len(set(ips)) == 250
    for s in plan.create:
        assert s["metadata"]["generateName"] == "web-"
        assert s["addressType"] == "IPv4"
        assert s["ports"] == [{"name": "http", "protocol": "TCP", "port": 8080}]
    # a smaller limit (--max-endpoints-per-slice) packs tighter
    assert len(sp.plan_slices(svc, [], desired(svc, pods(250)), most=10).create) == 25


def test_a_new_endpoint_fills_the_slice_it_fits_best_and_nothing_else_is_written() -> None:
    svc = service()
    slices = named(sp.plan_slices(svc, [], desired(svc, pods(250))))
    plan = sp.plan_slices(svc, slices, desired(svc, pods(251)))
    assert not plan.create and not plan.delete
    assert len(plan.update) == 1 and len(plan.update[0]["endpoints"]) == 51
    # unchanged pods: no writes at all
    assert not sp.plan_slices(svc, slices, desired(svc, pods(250)))


def test_a_changed_endpoint_rewrites_only_its_slice() -> None:
    svc = service()
    slices = named(sp.plan_slices(svc, [], desired(svc, pods(150))))
    changed = pods(150)
    changed[3]["status"]["conditions"][0]["status"] = "False"
    plan = sp.plan_slices(svc, slices, desired(svc, changed))
    assert not plan.create and not plan.delete and len(plan.update) == 1
    ep = next(e for e in plan.update[0]["endpoints"] if e["targetRef"]["name"] == "p003")
    assert ep["conditions"] == {"ready": False, "serving": False, "terminating": False}


def test_an_emptied_slice_is_reused_for_what_would_be_created() -> None:
    svc = service()
    slices = named(sp.plan_slices(svc, [], desired(svc, pods(2))))
    slices[0]["metadata"]["resourceVersion"] = "7"
    others = [pod("q1", "10.88.9.1", port=9090)]  # another port set, the old pods gone
    plan = sp.plan_slices(svc, slices, desired(svc, others))
    assert not plan.create and not plan.delete
    (update,) = plan.update
    assert update["metadata"]["name"] == "web-0" and update["metadata"]["resourceVersion"] == "7"
    assert update["ports"][0]["port"] == 9090


def test_named_target_ports_resolve_per_pod_into_one_slice_per_port_set() -> None:
    svc = service()
    ps = [pod("a", "10.88.0.1", port=8080), pod("b", "10.88.0.2", port=9090),
          pod("c", "10.88.0.3", port=8080)]
    ps[2]["spec"]["containers"][0]["ports"][0]["protocol"] = "UDP"  # no TCP "http": no port
    plan = sp.plan_slices(svc, [], desired(svc, ps))
    by_port = {tuple(p["port"] for p in s["ports"]): [e["targetRef"]["name"]
                                                       for e in s["endpoints"]]
               for s in plan.create}
    assert by_port == {(8080,): ["a"], (9090,): ["b"], (): ["c"]}


def test_no_endpoints_leave_one_placeholder_slice() -> None:
    svc = service()
    plan = sp.plan_slices(svc, [], desired(svc, []))
    (placeholder,) = plan.create
    assert placeholder["endpoints"] == [] and placeholder["ports"] == []
    assert not sp.plan_slices(svc, named(plan), desired(svc, []))  # kept, not rewritten
    # the last endpoint going turns its slice into the placeholder in one write
    slices = named(sp.plan_slices(svc, [], desired(svc, pods(1))))
    plan = sp.plan_slices(svc, slices, desired(svc, []))
    assert not plan.create and not plan.delete
    assert plan.update[0]["endpoints"] == [] and plan.update[0]["ports"] == []


def test_slices_of_an_old_service_of_that_name_are_replaced() -> None:
    svc = service()
    slices = named(sp.plan_slices(svc, [], desired(svc, pods(1))))
    reborn = copy.deepcopy(svc)
    reborn["metadata"]["uid"] = "svc-web-2"
    plan = sp.plan_slices(reborn, slices, desired(reborn, pods(1)))
    assert plan.delete == slices and len(plan.create) == 1
    assert plan.create[0]["metadata"]["ownerReferences"][0]["uid"] == "svc-web-2"


def test_labels_copy_the_services_and_mark_headless_ones() -> None:
    svc = service()
    svc["metadata"]["labels"].update({SERVICE_NAME_LABEL: "forged", MANAGED_BY_LABEL: "me"})
    assert sp.slice_labels(svc) == {"team": "a", SERVICE_NAME_LABEL: "web",
                                    MANAGED_BY_LABEL: "endpointslice-controller.k8s.io"}
    svc["spec"]["clusterIP"] = "None"
    assert sp.slice_labels(svc)[eu.HEADLESS_LABEL] == ""
    slices = named(sp.plan_slices(service(), [], desired(service(), pods(1))))
    relabelled = service()
    relabelled["metadata"]["labels"]["team"] = "b"
    plan = sp.plan_slices(relabelled, slices, desired(relabelled, pods(1)))
    assert [s["metadata"]["labels"]["team"] for s in plan.update] == ["b"]
    owner = slices[0]["metadata"]["ownerReferences"][0]
    assert owner == {"apiVersion": "v1", "kind": "Service", "name": "web", "uid": "svc-web",
                     "controller": True, "blockOwnerDeletion": True}


# -- endpoint content -----------------------------------------------------------------------------
def test_endpoint_conditions_topology_and_reference() -> None:
    svc = service()
    ep = sp.pod_to_endpoint(pod("a"), NODE, svc)
    assert ep == {"addresses": ["10.88.0.10"],
                  "conditions": {"ready": True, "serving": True, "terminating": False},
                  "targetRef": {"kind": "Pod", "namespace": NS, "name": "a", "uid": "uid-a"},
                  "nodeName": "n1", "zone": "zone-a"}
    assert sp.pod_to_endpoint(pod("a", ready=False), NODE, svc)["conditions"] == {
        "ready": False, "serving": False, "terminating": False}
    # terminating: kept, never ready, serving while Ready
    assert sp.pod_to_endpoint(pod("a", deleting=True), NODE, svc)["conditions"] == {
        "ready": False, "serving": True, "terminating": True}
    publish = service(publishNotReadyAddresses=True)
    assert sp.pod_to_endpoint(pod("a", ready=False), NODE, publish)["conditions"]["ready"]


def test_pods_without_an_ip_or_finished_are_left_out() -> None:
    svc = service()
    groups = desired(svc, [pod("noip", None), pod("done", phase="Succeeded"),
                           pod("failed", phase="Failed"), pod("ok", "10.88.0.9"),
                           pod("bye", "10.88.0.8", deleting=True)])
    names = sorted(ep["targetRef"]["name"] for g in groups.values() for ep in g.endpoints.values())
    assert names == ["bye", "ok"]


def test_hostname_only_for_the_subdomain_service() -> None:
    svc = service("db", clusterIP="None")
    mine = pod("db-0", app="db", hostname="db-0", subdomain="db")
    other = pod("x-0", app="db", hostname="x-0", subdomain="elsewhere")
    assert sp.pod_to_endpoint(mine, None, svc)["hostname"] == "db-0"
    assert "hostname" not in sp.pod_to_endpoint(other, None, svc)


def test_pods_on_unknown_nodes_are_skipped_unless_not_ready_ones_are_published() -> None:
    ps = [pod("a")]
    groups, skipped = sp.desired_endpoints(service(), ps, lambda name: None)
    assert skipped == ["a"] and not groups
    groups, skipped = sp.desired_endpoints(service(publishNotReadyAddresses=True), ps,
                                           lambda name: None)
    assert not skipped and len(groups) == 1


def test_find_port_by_number_name_and_sidecar() -> None:
    p = pod("a")
    assert eu.find_port(p, {"port": 80, "targetPort": 8081}) == 8081
    assert eu.find_port(p, {"port": 80}) == 80
    assert eu.find_port(p, {"port": 80, "targetPort": "http"}) == 8080
    assert eu.find_port(p, {"port": 80, "targetPort": "http", "protocol": "UDP"}) is None
    p["spec"]["initContainers"] = [{"name": "side", "restartPolicy": "Always",
                                    "ports": [{"name": "metrics", "containerPort": 9100}]}]
    assert eu.find_port(p, {"port": 80, "targetPort": "metrics"}) == 9100


def test_only_relevant_pod_changes_wake_services() -> None:
    before = pod("a")
    noisy = copy.deepcopy(before)
    noisy["status"]["containerStatuses"] = [{"name": "c", "restartCount": 1}]
    assert not eu.pod_endpoints_changed(noisy, before)
    unready = copy.deepcopy(before)
    unready["status"]["conditions"][0]["status"] = "False"
    assert eu.pod_endpoints_changed(unready, before)


# -- Endpoints ------------------------------------------------------------------------------------
def test_endpoints_subsets_ready_and_not_ready_with_ports() -> None:
    svc = service(ports=[{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"},
                         {"name": "raw", "port": 81, "protocol": "TCP", "targetPort": 7000}])
    subsets = desired_subsets(svc, [pod("b", "10.88.0.2"), pod("a", "10.88.0.1"),
                                    pod("c", "10.88.0.3", ready=False),
                                    pod("gone", "10.88.0.4", deleting=True)])
    assert len(subsets) == 1
    (subset,) = subsets
    assert [a["ip"] for a in subset["addresses"]] == ["10.88.0.1", "10.88.0.2"]
    assert [a["ip"] for a in subset["notReadyAddresses"]] == ["10.88.0.3"]
    assert subset["addresses"][0] == {"ip": "10.88.0.1", "nodeName": "n1", "targetRef": {
        "kind": "Pod", "namespace": NS, "name": "a", "uid": "uid-a"}}
    assert subset["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"},
                               {"name": "raw", "port": 7000, "protocol": "TCP"}]
    published = desired_subsets(service(publishNotReadyAddresses=True),
                                [pod("c", "10.88.0.3", ready=False),
                                 pod("gone", "10.88.0.4", deleting=True)])
    assert [a["ip"] for a in published[0]["addresses"]] == ["10.88.0.3", "10.88.0.4"]


def test_endpoints_group_addresses_by_their_ports() -> None:
    subsets = desired_subsets(service(), [pod("a", "10.88.0.1", port=8080),
                                          pod("b", "10.88.0.2", port=9090)])
    assert [(s["addresses"][0]["ip"], s["ports"][0]["port"]) for s in subsets] == [
        ("10.88.0.1", 8080), ("10.88.0.2", 9090)]
    headless = service(clusterIP="None", ports=[])
    assert desired_subsets(headless, [pod("a", "10.88.0.1")]) == [
        {"addresses": [{"ip": "10.88.0.1", "nodeName": "n1", "targetRef": {
            "kind": "Pod", "namespace": NS, "name": "a", "uid": "uid-a"}}]}]
    assert desired_labels(headless) == {"team": "a", eu.HEADLESS_LABEL: ""}


def test_repack_is_canonical_and_not_ready_wins() -> None:
    a = {"ip": "10.0.0.1"}
    b = {"ip": "10.0.0.2"}
    port = {"port": 80, "protocol": "TCP"}
    messy = [{"addresses": [b], "ports": [port]}, {"addresses": [a], "ports": [port]},
             {"notReadyAddresses": [a], "ports": [port]}]
    assert eu.repack_subsets(messy) == [{"addresses": [b], "notReadyAddresses": [a],
                                         "ports": [port]}]
    assert eu.repack_subsets(eu.repack_subsets(messy)) == eu.repack_subsets(messy)


def test_endpoints_beyond_1000_addresses_are_truncated() -> None:
    ready = [{"ip": f"10.0.{i // 250}.{i % 250}"} for i in range(900)]
    not_ready = [{"ip": f"10.1.{i // 250}.{i % 250}"} for i in range(300)]
    subsets = [{"addresses": ready[:600], "notReadyAddresses": not_ready[:200], "ports": [1]},
               {"addresses": ready[600:], "notReadyAddresses": not_ready[200:], "ports": [2]}]
    assert truncate(subsets)
    assert sum(len(s.get("addresses") or []) for s in subsets) == 900
    assert sum(len(s.get("notReadyAddresses") or []) for s in subsets) == 100
    few = [{"addresses": ready[:10]}]
    assert not truncate(few) and len(few[0]["addresses"]) == 10


# -- mirroring ------------------------------------------------------------------------------------
def endpoints(name: str = "ext", **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS, "uid": f"ep-{name}",
                         "labels": {"team": "a"}, **meta},
            "subsets": [{"addresses": [{"ip": "192.168.1.10", "nodeName": "n1"},
                                       {"ip": "fd00::1"}],
                         "notReadyAddresses": [{"ip": "192.168.1.11",
                                                "targetRef": {"kind": "VirtualMachine",
                                                              "name": "vm1", "namespace": NS}}],
                         "ports": [{"name": "ssh", "port": 22, "protocol": "TCP"}]}]}


def test_mirrored_slices_per_address_type_with_readiness() -> None:
    ep = endpoints(annotations={eu.LAST_APPLIED_ANNOTATION: "{}", "note": "x"})
    groups, invalid, skipped = mirroring.desired_groups(ep)
    assert (invalid, skipped) == (0, 0)
    plan = mirroring.plan_mirror(ep, [], groups)
    by_family = {s["addressType"]: s for s in plan.create}
    assert set(by_family) == {"IPv4", "IPv6"}
    v4 = by_family["IPv4"]
    assert v4["ports"] == [{"name": "ssh", "protocol": "TCP", "port": 22}]
    assert sorted((e["addresses"][0], e["conditions"]["ready"]) for e in v4["endpoints"]) == [
        ("192.168.1.10", True), ("192.168.1.11", False)]
    assert v4["metadata"]["labels"] == {
        "team": "a", SERVICE_NAME_LABEL: "ext",
        MANAGED_BY_LABEL: "endpointslicemirroring-controller.k8s.io"}
    assert v4["metadata"]["annotations"] == {"note": "x"}
    assert v4["metadata"]["ownerReferences"][0]["kind"] == "Endpoints"
    # mirrored again unchanged: nothing to write
    assert not mirroring.plan_mirror(ep, named(plan, "ext-"), groups)


def test_mirroring_caps_each_subset_and_skips_what_it_must() -> None:
    ep = endpoints()
    ep["subsets"][0]["addresses"] = [{"ip": f"10.0.0.{i}"} for i in range(1, 11)]
    ep["subsets"][0]["notReadyAddresses"] = []
    groups, invalid, skipped = mirroring.desired_groups(ep, most=4)
    assert (invalid, skipped) == (0, 6)
    assert [len(g.endpoints) for g in groups.values()] == [4]
    ep["subsets"][0]["addresses"] = [{"ip": "10.0.0.1"}, {"ip": "not-an-ip"}]
    groups, invalid, skipped = mirroring.desired_groups(ep, most=4)
    assert (invalid, skipped) == (1, 1)
    assert mirroring.should_mirror(ep)
    assert not mirroring.should_mirror(endpoints(labels={eu.SKIP_MIRROR_LABEL: "true"}))
    kube = endpoints("kubernetes")
    kube["metadata"]["namespace"] = "default"
    assert not mirroring.should_mirror(kube)


# -- trackers -------------------------------------------------------------------------------------
def test_slice_tracker_waits_for_the_cache_to_see_its_writes() -> None:
    now = [0.0]
    tracker = eu.SliceTracker(patience=30, clock=lambda: now[0])
    written = {"metadata": {"uid": "u1", "resourceVersion": "5"}}
    tracker.wrote("ns/web", written)
    assert tracker.stale("ns/web", [])  # not in the cache yet
    assert tracker.stale("ns/web", [{"metadata": {"uid": "u1", "resourceVersion": "4"}}])
    assert not tracker.stale("ns/web", [{"metadata": {"uid": "u1", "resourceVersion": "5"}}])
    assert tracker.own_write("ns/web", written)
    tracker.deleted("ns/web", written)
    assert tracker.stale("ns/web", [written])
    assert not tracker.stale("ns/web", [])
    tracker.wrote("ns/web", {"metadata": {"uid": "u2", "resourceVersion": "9"}})
    now[0] = 31.0
    assert not tracker.stale("ns/web", [])  # given up: it went away before we saw it


def test_trigger_time_is_the_earliest_change_since_the_last_sync() -> None:
    tracker = eu.TriggerTimeTracker()
    svc = service()
    a, b = pod("a"), pod("b")
    assert tracker.compute("k", svc, [a, b]) == 1000  # first sight: the Service's creation
    assert tracker.compute("k", svc, [a, b]) is None  # nothing changed
    b["status"]["conditions"][0]["lastTransitionTime"] = rfc3339(1700)
    c = pod("c")
    c["status"]["conditions"][0]["lastTransitionTime"] = rfc3339(1600)
    assert tracker.compute("k", svc, [a, b, c]) == 1600


# -- reconciles against a fake client ----------------------------------------------------------
class Client(FakeClient):
    """Names generateName objects, numbers resource versions, keeps every write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, str, Any]] = []
        self.rv = 10

    def _stamp(self, body: Any) -> Any:
        body = copy.deepcopy(body)
        self.rv += 1
        meta = body["metadata"]
        if not meta.get("name"):
            meta["name"] = f"{meta.pop('generateName')}{self.rv}"
        meta.setdefault("uid", f"uid-{meta['name']}")
        meta["resourceVersion"] = str(self.rv)
        return body

    async def create(self, path: str, body: Any, **params: Any) -> Any:
        body = self._stamp(body)
        self.writes.append(("POST", path, body))
        await super().create(path, body)
        return body

    async def update(self, path: str, body: Any, **params: Any) -> Any:
        body = self._stamp(body)
        self.writes.append(("PUT", path, body))
        return await super().update(path, body)

    async def delete(self, path: str, body: Any = None, **params: Any) -> Any:
        self.writes.append(("DELETE", path, body))
        self._check("DELETE", path)
        self.objects.pop(path, None)
        return {"kind": "Status", "status": "Success"}


def build(cls: type) -> tuple[Any, Client]:
    client = Client()
    ctrl = cls(client, InformerFactory(client), settings=ReconcileSettings())  # type: ignore
    for inf in ctrl.informers:
        inf.synced.set()
    return ctrl, client


async def test_slice_controller_writes_then_waits_for_its_cache() -> None:
    ctrl, client = build(EndpointSliceController)
    feed(ctrl.nodes, NODE)
    feed(ctrl.services, service())
    for p in pods(3):
        feed(ctrl.pods, p)
    feed(ctrl.pods, pod("other", "10.88.5.5", app="db"))
    await ctrl.reconcile("ns/web")
    (verb, path, body), = client.writes
    assert (verb, path) == ("POST", "/apis/discovery.k8s.io/v1/namespaces/ns/endpointslices")
    assert len(body["endpoints"]) == 3
    assert body["metadata"]["annotations"] == {eu.TRIGGER_TIME_ANNOTATION: rfc3339(1000)}
    # the informer has not seen the new slice: a second look must not create another
    with pytest.raises(Exception, match="out of date"):
        await ctrl.reconcile("ns/web")
    queued = len(ctrl.queue)
    feed(ctrl.slices, body)
    assert len(ctrl.queue) == queued  # the controller's own write wakes nobody
    assert len(client.writes) == 1
    await ctrl.reconcile("ns/web")
    assert len(client.writes) == 1  # up to date
    # a pod's readiness flips: the Service is woken and its slice rewritten
    changed = pod("p001", "10.88.0.2", ready=False)
    changed["status"]["conditions"][0]["lastTransitionTime"] = rfc3339(1800)
    assert eu.services_selecting(ctrl.services.by_index, NS,
                                 [changed["metadata"]["labels"]]) == {"ns/web"}
    feed(ctrl.pods, changed, "MODIFIED")
    await ctrl.reconcile("ns/web")
    verb, _, body = client.writes[-1]
    assert verb == "PUT"
    assert body["metadata"]["annotations"][eu.TRIGGER_TIME_ANNOTATION] == rfc3339(1800)
    assert sorted(e["conditions"]["ready"] for e in body["endpoints"]) == [False, True, True]


async def test_slice_controller_leaves_other_managers_slices_and_selectorless_services() -> None:
    ctrl, client = build(EndpointSliceController)
    feed(ctrl.services, service("ext", selector={}))
    foreign = {"metadata": {"name": "ext-abc", "namespace": NS, "uid": "f1",
                            "labels": {SERVICE_NAME_LABEL: "ext", MANAGED_BY_LABEL: "someone"}},
               "addressType": "IPv4", "endpoints": []}
    feed(ctrl.slices, foreign)
    await ctrl.reconcile("ns/ext")
    assert client.writes == []


async def test_endpoints_controller_creates_updates_and_deletes() -> None:
    ctrl, client = build(EndpointsController)
    feed(ctrl.services, service())
    for p in pods(2):
        feed(ctrl.pods, p)
    await ctrl.reconcile("ns/web")
    (verb, path, body), = client.writes
    assert (verb, path) == ("POST", "/api/v1/namespaces/ns/endpoints")
    assert body["metadata"]["labels"] == {"team": "a"}
    assert [a["ip"] for a in body["subsets"][0]["addresses"]] == ["10.88.0.1", "10.88.0.2"]
    feed(ctrl.endpoints, body)
    await ctrl.reconcile("ns/web")
    assert len(client.writes) == 1
    feed(ctrl.services, service(), "DELETED")
    await ctrl.reconcile("ns/web")
    assert client.writes[-1][:2] == ("DELETE", "/api/v1/namespaces/ns/endpoints/web")


async def test_endpoints_of_selectorless_services_are_not_touched() -> None:
    ctrl, client = build(EndpointsController)
    feed(ctrl.services, service("ext", selector={}))
    feed(ctrl.endpoints, endpoints())
    assert list(ctrl._service_of_endpoints("MODIFIED", endpoints(), None)) == []
    await ctrl.reconcile("ns/ext")
    assert client.writes == []


async def test_mirroring_controller_mirrors_and_cleans_up() -> None:
    ctrl, client = build(EndpointSliceMirroringController)
    feed(ctrl.services, service("ext", selector={}))
    feed(ctrl.endpoints, endpoints())
    await ctrl.reconcile("ns/ext")
    assert sorted(b["addressType"] for v, _, b in client.writes) == ["IPv4", "IPv6"]
    for _, _, b in client.writes:
        feed(ctrl.slices, b)
    await ctrl.reconcile("ns/ext")
    assert len(client.writes) == 2
    # the Service gains a selector: the mirrored slices go
    feed(ctrl.services, service("ext"), "MODIFIED")
    await ctrl.reconcile("ns/ext")
    assert [v for v, _, _ in client.writes[2:]] == ["DELETE", "DELETE"]
