"""The VM Operator's CRDs as data: valid definitions, and schemas that take a vSphere manifest
as written, default what upstream defaults and refuse what upstream's enums refuse."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from atoll.api import crdschema, vmoperator

BY_KIND = {c["spec"]["names"]["kind"]: c for c in vmoperator.definitions()}

VSPHERE_VM = yaml.safe_load("""
apiVersion: vmoperator.vmware.com/v1alpha3
kind: VirtualMachine
metadata: {name: web, namespace: ns}
spec:
  className: best-effort-small
  imageName: ubuntu-22.04
  storageClass: wcpglobal-storage-profile
  bootstrap:
    cloudInit:
      cloudConfig:
        users: [{name: dev, sudo: "ALL=(ALL) NOPASSWD:ALL", ssh_authorized_keys: [ssh-ed25519 AAAA]}]
        runcmd: [echo hello, [sh, -c, "date > /tmp/up"]]
        write_files: [{path: /etc/motd, content: hi}]
  network:
    interfaces:
    - name: eth0
      network: {apiVersion: netoperator.vmware.com/v1alpha1, kind: Network, name: primary}
      addresses: [192.168.1.10/24]
      gateway4: 192.168.1.1
      nameservers: [8.8.8.8]
      routes: [{to: 0.0.0.0/0, via: 192.168.1.1, metric: 10}]
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: web-data}
  readinessProbe:
    tcpSocket: {port: 22}
    periodSeconds: 5
  advanced:
    bootDiskCapacity: 20Gi
""")


def version(kind: str, name: str = "v1alpha3") -> dict[str, Any]:
    return next(v for v in BY_KIND[kind]["spec"]["versions"] if v["name"] == name)


def schema(kind: str) -> crdschema.StructuralSchema:
    return crdschema.StructuralSchema(version(kind)["schema"]["openAPIV3Schema"])


def admitted(kind: str, obj: dict[str, Any]) -> tuple[dict[str, Any], list[str], list[str]]:
    """What the server does to a custom resource: prune, default, validate."""
    obj = copy.deepcopy(obj)
    s = schema(kind)
    unknown = s.unknown_fields(obj)
    s.prune(obj)
    s.apply_defaults(obj)
    return obj, unknown, [c.field for c in s.validate(obj)]


def test_every_kind_valid_and_structural() -> None:
    assert set(BY_KIND) == {"VirtualMachine", "VirtualMachineClass", "VirtualMachineImage",
                            "ClusterVirtualMachineImage", "VirtualMachineService",
                            "VirtualMachineSnapshot", "VirtualMachineReplicaSet",
                            "VirtualMachineWebConsoleRequest", "VirtualMachineGroup"}
    first_version = {"VirtualMachineSnapshot": 5, "VirtualMachineReplicaSet": 3,  # upstream's
                     "VirtualMachineWebConsoleRequest": 2, "VirtualMachineGroup": 3}
    for kind, crd in BY_KIND.items():
        assert crdschema.check_crd(crd) == [], kind
        spec = crd["spec"]
        assert spec["group"] == "vmoperator.vmware.com"
        assert spec["names"]["categories"] == ["vmoperator"]
        served = [(v["name"], v["served"], v["storage"]) for v in spec["versions"]]
        first = first_version.get(kind, 1)
        assert served == [(f"v1alpha{i}", True, i == 6) for i in range(first, 7)], kind
        scale = {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
                 "labelSelectorPath": ".status.selector"}
        assert all(v["subresources"] == ({"status": {}, "scale": scale}
                                         if kind == "VirtualMachineReplicaSet" else {"status": {}})
                   for v in spec["versions"]), kind
    short = {k: c["spec"]["names"]["shortNames"] for k, c in BY_KIND.items()}
    assert short == {"VirtualMachine": ["vm"], "VirtualMachineClass": ["vmclass"],
                     "VirtualMachineImage": ["vmi"], "ClusterVirtualMachineImage": ["cvmi"],
                     "VirtualMachineService": ["vmservice"],
                     "VirtualMachineSnapshot": ["vmsnapshot"],
                     "VirtualMachineReplicaSet": ["vmrs", "vmreplicaset"],
                     "VirtualMachineWebConsoleRequest": ["vmwebconsole"],
                     "VirtualMachineGroup": ["vmg"]}
    assert BY_KIND["ClusterVirtualMachineImage"]["spec"]["scope"] == "Cluster"


def test_definitions_are_fresh_copies() -> None:
    first = vmoperator.definitions()
    first[0]["spec"]["group"] = "changed"
    assert vmoperator.definitions()[0]["spec"]["group"] == "vmoperator.vmware.com"


@pytest.mark.parametrize("kind,columns", [
    ("VirtualMachine", ["Power-State", "Class", "Image", "Primary-IP4", "Age"]),
    ("VirtualMachineClass", ["CPU", "Memory", "Age"]),
    ("VirtualMachineImage", ["Display-Name", "Type", "Ready", "Age"]),
    ("ClusterVirtualMachineImage", ["Display-Name", "Type", "Ready", "Age"]),
    ("VirtualMachineService", ["Type", "Age"]),
    ("VirtualMachineReplicaSet", ["Desired", "Replicas", "Ready", "Available", "Age"]),
])
def test_printer_columns(kind: str, columns: list[str]) -> None:
    cols = version(kind)["additionalPrinterColumns"]
    assert [c["name"] for c in cols if not c.get("priority")] == columns


def test_vsphere_manifest_is_kept_whole_and_defaulted() -> None:
    obj, unknown, invalid = admitted("VirtualMachine", VSPHERE_VM)
    assert unknown == [] and invalid == []
    spec = obj["spec"]
    assert spec["bootstrap"] == VSPHERE_VM["spec"]["bootstrap"]  # cloud-config untouched
    assert spec["network"] == VSPHERE_VM["spec"]["network"]
    assert (spec["powerState"], spec["powerOffMode"], spec["suspendMode"],
            spec["restartMode"]) == ("PoweredOn", "TrySoft", "TrySoft", "TrySoft")


def test_unknown_fields_outside_cloud_config_are_pruned() -> None:
    vm = copy.deepcopy(VSPHERE_VM)
    vm["spec"]["bogus"] = 1
    vm["spec"]["network"]["interfaces"][0]["colour"] = "red"
    obj, unknown, _ = admitted("VirtualMachine", vm)
    assert sorted(unknown) == ["spec.bogus", "spec.network.interfaces[0].colour"]
    assert "bogus" not in obj["spec"]


@pytest.mark.parametrize("field,value,path", [
    ("powerState", "Sleeping", "spec.powerState"),
    ("powerOffMode", "Gentle", "spec.powerOffMode"),
    ("restartMode", "hard", "spec.restartMode"),
    ("nextRestartTime", 5, "spec.nextRestartTime"),
])
def test_bad_vm_values_name_their_field(field: str, value: Any, path: str) -> None:
    vm = copy.deepcopy(VSPHERE_VM)
    vm["spec"][field] = value
    assert admitted("VirtualMachine", vm)[2] == [path]


def test_atoll_extensions_are_in_the_schemas() -> None:
    vm_status = {"powerState": "PoweredOn", "nodeName": "n1", "accelerator": "tcg",
                 "network": {"primaryIP4": "10.0.0.5"},
                 "conditions": [{"type": "Ready", "status": "True",
                                 "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    obj, unknown, invalid = admitted("VirtualMachine", dict(VSPHERE_VM, status=vm_status))
    assert unknown == [] and invalid == [] and obj["status"] == vm_status
    image = {"apiVersion": "vmoperator.vmware.com/v1alpha3", "kind": "ClusterVirtualMachineImage",
             "metadata": {"name": "vmi-0123"},
             "spec": {"providerRef": {"apiVersion": "content.atoll.dev/v1",
                                      "kind": "ContentLibraryItem", "name": "tiny"},
                      "content": {"kernel": {"digest": "sha256:" + "a" * 64, "size": 8},
                                  "disk": {"digest": "sha256:" + "b" * 64, "size": 123,
                                           "format": "qcow2", "virtualSize": 2147483648},
                                  "kernelArgs": "ro"}},
             "status": {"name": "tiny", "type": "OVF", "firmware": "BIOS",
                        "capabilities": ["cloud-init"], "diskInfo": {"capacity": "2Gi"},
                        "osInfo": {"id": "other", "type": "linux", "version": "6.1"}}}
    assert admitted("ClusterVirtualMachineImage", image)[1:] == ([], [])
    image["spec"]["content"]["kernel"]["digest"] = "md5:abc"
    assert admitted("ClusterVirtualMachineImage", image)[2] == ["spec.content.kernel.digest"]


def test_vmservice_and_class_shapes() -> None:
    svc = {"apiVersion": "vmoperator.vmware.com/v1alpha3", "kind": "VirtualMachineService",
           "metadata": {"name": "db", "namespace": "ns"},
           "spec": {"type": "LoadBalancer", "selector": {"app": "db"}, "clusterIp": "None",
                    "loadBalancerSourceRanges": ["10.0.0.0/8"],
                    "ports": [{"name": "pg", "protocol": "TCP", "port": 5432,
                               "targetPort": 5432}]}}
    assert admitted("VirtualMachineService", svc)[1:] == ([], [])
    svc["spec"]["type"] = "NodePort"
    assert admitted("VirtualMachineService", svc)[2] == ["spec.type"]
    klass = {"apiVersion": "vmoperator.vmware.com/v1alpha3", "kind": "VirtualMachineClass",
             "metadata": {"name": "c", "namespace": "ns"},
             "spec": {"hardware": {"cpus": 2, "memory": "4Gi"},
                      "policies": {"resources": {"requests": {"cpu": "2", "memory": "4Gi"},
                                                 "limits": {"cpu": 2, "memory": "4Gi"}}}}}
    assert admitted("VirtualMachineClass", klass)[1:] == ([], [])
    klass["spec"]["hardware"]["memory"] = "lots"
    assert admitted("VirtualMachineClass", klass)[2] == ["spec.hardware.memory"]
