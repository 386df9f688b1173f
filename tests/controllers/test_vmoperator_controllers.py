"""The VM operator's controllers against a fake client and clock: no server, no QEMU."""

from __future__ import annotations

import copy
from typing import Any

from atoll.api import conditions as cond
from atoll.api.vmoperator import names as n
from atoll.client.controller import DONE, requeue_after
from atoll.client.factory import InformerFactory
from atoll.controllers.vmoperator import placement
from atoll.controllers.vmoperator.classes import DefaultClassesController, default_classes
from atoll.controllers.vmoperator.virtualmachine import VirtualMachineController
from atoll.controllers.vmoperator.vmservice import VirtualMachineServiceController
from tests.client.fakes import FakeClient, FakeClock, feed

NOW = "2026-01-01T00:00:00Z"  # FakeClock's start


def merge(into: dict[str, Any], patch: dict[str, Any]) -> None:
    for k, v in patch.items():
        if v is None:
            into.pop(k, None)
        elif isinstance(v, dict) and isinstance(into.get(k), dict):
            merge(into[k], v)
        else:
            into[k] = copy.deepcopy(v)


class MergingClient(FakeClient):
    """Applies merge patches (to the object, or its status subresource) and bumps its
    resourceVersion, as the API server would."""

    async def patch(self, path: str, body: Any, **params: Any) -> Any:
        self._check("PATCH", path)
        target = path.removesuffix("/status")
        obj = self.objects.get(target)
        if obj is None:
            from atoll.api import errors
            raise errors.NotFound(f"{target} not found")
        body = copy.deepcopy(body)
        body.get("metadata", {}).pop("resourceVersion", None)
        if path.endswith("/status"):
            body = {"status": body.get("status") or {}}
        merge(obj, body)
        obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
        return copy.deepcopy(obj)

    def patches(self, path: str) -> int:
        return self.calls.count(("PATCH", path))


def node(name: str, memory: str = "16Gi", taints: list[dict[str, Any]] | None = None
         ) -> dict[str, Any]:
    res = {"cpu": "4", "memory": memory, "pods": "110"}
    return {"metadata": {"name": name, "resourceVersion": "1"}, "spec": {"taints": taints or []},
            "status": {"capacity": res, "allocatable": res,
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def vm(name: str = "vm1", cls: str = "guaranteed-small", host: str = "",
       **annotations: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "uid": f"uid-{name}",
                            "resourceVersion": "1", "labels": {"app": "web"},
                            "annotations": annotations}
    if host:
        meta["labels"][n.HOST_LABEL] = host
    return {"apiVersion": n.API_VERSION, "kind": "VirtualMachine", "metadata": meta,
            "spec": {"className": cls, "imageName": "ubuntu", "powerState": n.POWERED_ON}}


def image(name: str = "ubuntu") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": "1"},
            "status": {"name": "Ubuntu 24.04",
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def classes() -> list[dict[str, Any]]:
    return [dict(c, metadata=dict(c["metadata"], resourceVersion="1"))
            for c in default_classes("ns")]


def pod(name: str, node_name: str, memory: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}",
                         "resourceVersion": "1"},
            "spec": {"nodeName": node_name, "containers": [
                {"name": "c", "resources": {"requests": {"memory": memory}}}]},
            "status": {"phase": "Running"}}


def vm_controller(*objs: tuple[str, dict[str, Any]]
                  ) -> tuple[VirtualMachineController, MergingClient, FakeClock]:
    client, clock = MergingClient(), FakeClock()
    ctrl = VirtualMachineController(client, InformerFactory(client),  # type: ignore[arg-type]
                                    clock=clock)
    for c in classes():
        feed(ctrl.classes, c)
    feed(ctrl.images, image())
    ctrl.cluster_images.synced.set()
    for kind, obj in objs:
        informer = {"vm": ctrl.vms, "node": ctrl.nodes, "pod": ctrl.pods}[kind]
        feed(informer, obj)
        if kind == "vm":
            client.objects[n.vm_path("ns", obj["metadata"]["name"])] = copy.deepcopy(obj)
    return ctrl, client, clock


async def drain(ctrl: VirtualMachineController) -> list[str]:
    """Take what is queued (without reconciling it)."""
    keys = []
    while len(ctrl.queue):
        keys.append(await ctrl.queue.get())
        ctrl.queue.done(keys[-1])
    return keys


async def test_a_vm_gets_its_finalizer_conditions_and_a_host() -> None:
    ctrl, client, _ = vm_controller(("vm", vm()), ("node", node("a")),
                                    ("node", node("b", memory="32Gi")))
    assert await ctrl.reconcile("ns/vm1") == DONE
    stored = client.objects[n.vm_path("ns", "vm1")]
    assert n.FINALIZER in stored["metadata"]["finalizers"]
    conditions = stored["status"]["conditions"]
    assert cond.is_true(conditions, n.CLASS_READY) and cond.is_true(conditions, n.IMAGE_READY)
    assert cond.find(conditions, n.PLACEMENT_READY)["reason"] == placement.SATISFIED
    assert stored["status"]["image"]["name"] == "ubuntu"
    # the host with the most unreserved memory, recorded as the label the agents watch by
    assert stored["metadata"]["labels"][n.HOST_LABEL] == "b"


async def test_pods_on_a_host_count_against_a_reservation() -> None:
    # 16Gi hosts; pods request 10Gi on a, and 2Gi on b where another guaranteed-medium VM
    # reserves 8Gi: a guaranteed-medium (8Gi) fits nowhere
    ctrl, client, _ = vm_controller(("vm", vm(cls="guaranteed-medium")),
                                    ("vm", vm("other", cls="guaranteed-medium", host="b")),
                                    ("node", node("a")), ("node", node("b")),
                                    ("pod", pod("p1", "a", "10Gi")),
                                    ("pod", pod("p2", "b", "2Gi")))
    assert await ctrl.reconcile("ns/vm1") == DONE
    stored = client.objects[n.vm_path("ns", "vm1")]
    placed = cond.find(stored["status"]["conditions"], n.PLACEMENT_READY)
    assert placed["status"] == "False" and placed["reason"] == placement.INSUFFICIENT
    assert n.HOST_LABEL not in stored["metadata"]["labels"]
    assert "6144 MiB unreserved" in placed["message"]
    # p1 leaving a makes room there
    feed(ctrl.pods, pod("p1", "a", "10Gi"), kind="DELETED")
    assert ctrl.vms.index_keys("vm-host", "") == {"ns/vm1"}
    assert await ctrl.reconcile("ns/vm1") == DONE
    assert client.objects[n.vm_path("ns", "vm1")]["metadata"]["labels"][n.HOST_LABEL] == "a"


async def test_a_class_or_node_change_wakes_only_unplaced_vms() -> None:
    ctrl, _, _ = vm_controller(("vm", vm("waiting")), ("vm", vm("placed", host="a")),
                               ("node", node("a")))
    assert set(await drain(ctrl)) == {"ns/waiting", "ns/placed"}
    feed(ctrl.classes, dict(classes()[0], metadata=dict(classes()[0]["metadata"],
                                                        resourceVersion="2")), "MODIFIED")
    assert await drain(ctrl) == ["ns/waiting"]
    feed(ctrl.nodes, node("b"))  # room may have appeared: the unplaced one
    assert await drain(ctrl) == ["ns/waiting"]
    feed(ctrl.nodes, node("a"), kind="DELETED")  # a host gone: its VMs too
    assert set(await drain(ctrl)) == {"ns/waiting", "ns/placed"}


async def test_ha_vm_moves_off_an_unreachable_host_after_the_delay() -> None:
    unreachable = node("a", taints=[{"key": "node.kubernetes.io/unreachable",
                                     "effect": "NoExecute", "timeAdded": NOW}])
    ctrl, client, clock = vm_controller(
        ("vm", vm(host="a", **{n.HA_ANNOTATION: "true"})), ("node", unreachable),
        ("node", node("b")))
    ctrl.ha_delay = 30.0
    clock.advance(10)
    assert await ctrl.reconcile("ns/vm1") == requeue_after(20.0)
    assert client.objects[n.vm_path("ns", "vm1")]["metadata"]["labels"][n.HOST_LABEL] == "a"
    clock.advance(20)
    assert await ctrl.reconcile("ns/vm1") == DONE
    moved = client.objects[n.vm_path("ns", "vm1")]["metadata"]
    assert moved["labels"][n.HOST_LABEL] == "b"
    assert moved["annotations"][n.HA_FROM_ANNOTATION] == "a"


async def test_a_deleted_vm_no_host_holds_loses_its_finalizer() -> None:
    doomed = vm(host="gone")
    doomed["metadata"]["deletionTimestamp"] = NOW
    doomed["metadata"]["finalizers"] = [n.FINALIZER]
    ctrl, client, _ = vm_controller(("vm", doomed))
    assert await ctrl.reconcile("ns/vm1") == DONE
    assert client.objects[n.vm_path("ns", "vm1")]["metadata"]["finalizers"] == []


async def test_vmservice_follows_the_vms_its_selector_picks() -> None:
    client = FakeClient()
    ctrl = VirtualMachineServiceController(client, InformerFactory(client))  # type: ignore[arg-type]
    svc = {"metadata": {"name": "web", "namespace": "ns", "uid": "uid-web",
                        "resourceVersion": "1"},
           "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]}}
    feed(ctrl.services, svc)
    assert await ctrl.queue.get() == "ns/web"
    ctrl.queue.done("ns/web")
    ready = vm("up")
    ready["status"] = {"network": {"primaryIP4": "10.0.0.5"},
                       "conditions": [{"type": n.READY, "status": "True"}]}
    feed(ctrl.vms, ready)
    other = vm("other")
    other["metadata"]["labels"] = {"app": "db"}
    feed(ctrl.vms, other)
    assert len(ctrl.queue) == 1 and await ctrl.queue.get() == "ns/web"
    assert await ctrl.reconcile("ns/web") == DONE
    endpoints = client.objects["/api/v1/namespaces/ns/endpoints/web"]
    assert [a["ip"] for a in endpoints["subsets"][0]["addresses"]] == ["10.0.0.5"]
    assert "/api/v1/namespaces/ns/services/web" in client.objects


async def test_default_classes_are_created_and_come_back() -> None:
    client = FakeClient()
    ctrl = DefaultClassesController(client, InformerFactory(client))  # type: ignore[arg-type]
    feed(ctrl.namespaces, {"metadata": {"name": "ns", "resourceVersion": "1"}})
    ctrl.classes.synced.set()
    assert await ctrl.queue.get() == "ns"
    ctrl.queue.done("ns")
    assert await ctrl.reconcile("ns") == DONE
    created = [p for v, p in client.calls if v == "POST"]
    assert len(created) == len(default_classes("ns"))
    for c in classes():
        feed(ctrl.classes, c)
    assert len(ctrl.queue) == 0
    feed(ctrl.classes, classes()[0], kind="DELETED")
    assert await ctrl.queue.get() == "ns"
    client.calls.clear()
    await ctrl.reconcile("ns")
    assert [v for v, _ in client.calls] == ["POST"]
    # opted out: nothing
    feed(ctrl.namespaces, {"metadata": {"name": "off", "resourceVersion": "1", "annotations": {
        "vmoperator.atoll.dev/default-classes": "false"}}})
    client.calls.clear()
    assert await ctrl.reconcile("off") == DONE and client.calls == []
