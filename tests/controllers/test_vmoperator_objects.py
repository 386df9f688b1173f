"""What the default-classes and VirtualMachineService controllers write, from their pure parts."""

from __future__ import annotations

from typing import Any

from atoll.controllers.vmoperator.classes import default_classes
from atoll.controllers.vmoperator.vmservice import endpoints_for, service_for

VMS = {"apiVersion": "vmoperator.vmware.com/v1alpha3", "kind": "VirtualMachineService",
       "metadata": {"name": "db", "namespace": "ns", "uid": "u-svc"},
       "spec": {"type": "ClusterIP", "selector": {"app": "db"},
                "ports": [{"name": "pg", "protocol": "TCP", "port": 15432, "targetPort": 5432}]}}


def vm(name: str, *, ns: str = "ns", labels: dict[str, str] | None = None, ip: str = "",
       ready: bool | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if ip:
        status["network"] = {"primaryIP4": ip}
    if ready is not None:
        status["conditions"] = [{"type": "Ready", "status": str(ready)}]
    return {"metadata": {"name": name, "namespace": ns, "uid": f"u-{name}",
                         "labels": {"app": "db"} if labels is None else labels},
            "status": status}


def test_default_classes() -> None:
    classes = {c["metadata"]["name"]: c["spec"] for c in default_classes("team")}
    sizes = {"xsmall": (2, "2Gi"), "small": (2, "4Gi"), "medium": (2, "8Gi"),
             "large": (4, "16Gi"), "xlarge": (4, "32Gi")}
    assert set(classes) == {f"{p}-{s}" for p in ("best-effort", "guaranteed") for s in sizes}
    for size, (cpus, memory) in sizes.items():
        best, guaranteed = classes[f"best-effort-{size}"], classes[f"guaranteed-{size}"]
        assert best["hardware"] == guaranteed["hardware"] == {"cpus": cpus, "memory": memory}
        assert "policies" not in best
        amount = {"cpu": str(cpus), "memory": memory}
        assert guaranteed["policies"] == {"resources": {"requests": amount, "limits": amount}}


def test_service_is_selectorless_and_owned() -> None:
    svc = service_for(VMS)
    assert svc["metadata"]["name"] == "db" and "selector" not in svc["spec"]
    assert svc["spec"] == {"type": "ClusterIP", "ports": [
        {"name": "pg", "protocol": "TCP", "port": 15432, "targetPort": 5432}]}
    (owner,) = svc["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("VirtualMachineService",
                                                                   "u-svc", True)
    headless = service_for({**VMS, "spec": {**VMS["spec"], "clusterIp": "None"}})
    assert headless["spec"]["clusterIP"] == "None"
    external = service_for({**VMS, "spec": {"type": "ExternalName", "externalName": "db.example"}})
    assert external["spec"]["externalName"] == "db.example"


def test_endpoints_list_matching_vms_by_readiness() -> None:
    vms = [vm("b-ready", ip="10.0.0.2", ready=True),
           vm("a-ready", ip="10.0.0.1", ready=True),
           vm("booting", ip="10.0.0.3", ready=False),
           vm("no-ip", ready=True),
           vm("other-app", labels={"app": "web"}, ip="10.0.0.4", ready=True),
           vm("other-ns", ns="elsewhere", ip="10.0.0.5", ready=True)]
    ep = endpoints_for(VMS, vms)
    (subset,) = ep["subsets"]
    assert [a["ip"] for a in subset["addresses"]] == ["10.0.0.1", "10.0.0.2"]
    assert [a["ip"] for a in subset["notReadyAddresses"]] == ["10.0.0.3"]
    assert subset["addresses"][0]["targetRef"] == {
        "apiVersion": "vmoperator.vmware.com/v1alpha3", "kind": "VirtualMachine",
        "namespace": "ns", "name": "a-ready", "uid": "u-a-ready"}
    assert subset["ports"] == [{"name": "pg", "protocol": "TCP", "port": 5432}]
    assert endpoints_for(VMS, [vm("no-ip", ready=True)])["subsets"] == []


def test_an_empty_selector_picks_nothing() -> None:
    empty = {**VMS, "spec": {**VMS["spec"], "selector": {}}}
    assert endpoints_for(empty, [vm("a", ip="10.0.0.1", ready=True)])["subsets"] == []
