"""The VM Operator API through kubectl: discovery, a vSphere manifest applied unchanged,
printer columns, explain, 422s with field paths, default classes, VirtualMachineServices.

No VM here is ever placed (their image does not exist), so no QEMU starts: the tests set VM
status themselves through the status subresource, as the agent would.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from typing import Any, Callable

import yaml

from tests.conftest import Platform

GROUP = "vmoperator.vmware.com"
API = f"/apis/{GROUP}/v1alpha3"
MISSING_IMAGE = "photon-5-not-uploaded"

VSPHERE_VM = """apiVersion: vmoperator.vmware.com/v1alpha3
kind: VirtualMachine
metadata:
  name: {name}
  namespace: {ns}
  labels: {{app: {app}}}
spec:
  className: best-effort-small
  imageName: {image}
  storageClass: wcpglobal-storage-profile
  powerState: PoweredOn
  bootstrap:
    cloudInit:
      cloudConfig:
        users:
        - name: dev
          sudo: ALL=(ALL) NOPASSWD:ALL
          ssh_authorized_keys: [ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample dev@example]
        runcmd:
        - echo hello > /tmp/hello
        - [sh, -c, "date > /tmp/booted"]
        write_files:
        - {{path: /etc/motd, content: "managed by vm-operator\\n"}}
      sshAuthorizedKeys: [ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample dev@example]
  network:
    hostName: {name}
    interfaces:
    - name: eth0
      network: {{apiVersion: netoperator.vmware.com/v1alpha1, kind: Network, name: primary}}
      addresses: [192.168.10.20/24]
      gateway4: 192.168.10.1
      nameservers: [192.168.10.2]
      mtu: 1500
      routes: [{{to: 10.0.0.0/8, via: 192.168.10.1, metric: 100}}]
  volumes:
  - name: data
    persistentVolumeClaim: {{claimName: {name}-data}}
  readinessProbe:
    tcpSocket: {{port: 22}}
    periodSeconds: 10
    timeoutSeconds: 5
  advanced:
    bootDiskCapacity: 20Gi
"""


def vm_manifest(ns: str, name: str, app: str = "web") -> str:
    return VSPHERE_VM.format(ns=ns, name=name, app=app, image=MISSING_IMAGE)


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 30) -> Any:
    """Polls ``probe`` until it returns something truthy; fails with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def get_json(platform: Platform, *args: str) -> dict[str, Any] | None:
    out = platform.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def request(platform: Platform, method: str, path: str, body: dict[str, Any],
            content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(platform.url + path, data=json.dumps(body).encode(),
                                 method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, context=platform.ssl_context(), timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def causes(status: dict[str, Any]) -> list[str]:
    return [c.get("field", "") for c in (status.get("details") or {}).get("causes") or []]


def vm_body(ns: str, name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/v1alpha3", "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"className": "best-effort-xsmall", "imageName": MISSING_IMAGE, **spec}}


def set_vm_status(platform: Platform, ns: str, name: str, ip: str, ready: bool) -> None:
    """What the agent reports for a running VM, written through the status subresource."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status = {"status": {"powerState": "PoweredOn", "network": {"primaryIP4": ip},
                         "conditions": [{"type": "Ready", "status": str(ready),
                                         "reason": "ProbeResult", "lastTransitionTime": now}]}}
    platform.kubectl("patch", "vm", name, "-n", ns, "--subresource=status", "--type=merge",
                     "-p", json.dumps(status))


# -- discovery, schema, printing ------------------------------------------------------------------
def test_api_resources_list_every_kind(platform: Platform) -> None:
    out = platform.kubectl("api-resources", f"--api-group={GROUP}", "--no-headers").stdout
    rows = {line.split()[-1]: line.split() for line in out.splitlines() if line.strip()}
    assert set(rows) == {"VirtualMachine", "VirtualMachineClass", "VirtualMachineImage",
                         "ClusterVirtualMachineImage", "VirtualMachineService",
                         "VirtualMachineSnapshot", "VirtualMachineReplicaSet",
                         "VirtualMachineWebConsoleRequest", "VirtualMachineGroup"}
    expected = {"VirtualMachine": ("virtualmachines", "vm", "true"),
                "VirtualMachineClass": ("virtualmachineclasses", "vmclass", "true"),
                "VirtualMachineImage": ("virtualmachineimages", "vmi", "true"),
                "ClusterVirtualMachineImage": ("clustervirtualmachineimages", "cvmi", "false"),
                "VirtualMachineService": ("virtualmachineservices", "vmservice", "true"),
                "VirtualMachineSnapshot": ("virtualmachinesnapshots", "vmsnapshot", "true"),
                "VirtualMachineReplicaSet": ("virtualmachinereplicasets", "vmrs,vmreplicaset",
                                             "true"),
                "VirtualMachineWebConsoleRequest": ("virtualmachinewebconsolerequests",
                                                    "vmwebconsole", "true"),
                "VirtualMachineGroup": ("virtualmachinegroups", "vmg", "true")}
    for kind, (plural, short, namespaced) in expected.items():
        name, shortnames, apiversion, ns_col = rows[kind][:4]
        # v1alpha6 is preferred, as upstream (v1alpha1-v1alpha5 are served too)
        assert (name, shortnames, apiversion, ns_col) == (plural, short, f"{GROUP}/v1alpha6",
                                                          namespaced), rows[kind]


def test_explain_shows_the_schema(platform: Platform) -> None:
    out = platform.kubectl("explain", "vm.spec.powerState").stdout
    assert "powerState" in out and "PoweredOn" in out and "Suspended" in out, out
    out = platform.kubectl("explain", "vm.spec.bootstrap.cloudInit").stdout
    assert "cloudConfig" in out and "rawCloudConfig" in out, out
    out = platform.kubectl("explain", "cvmi.spec.content").stdout
    assert "kernel" in out and "disk" in out, out


def test_vsphere_manifest_applies_unchanged(platform: Platform, namespace: str) -> None:
    manifest = vm_manifest(namespace, "web-1")
    out = platform.kubectl("apply", "--validate=strict", "-f", "-", input=manifest)
    assert "Warning" not in out.stderr, out.stderr
    vm = get_json(platform, "vm", "web-1", "-n", namespace)
    assert vm is not None
    wanted = yaml.safe_load(manifest)["spec"]
    got = vm["spec"]
    for field, value in wanted.items():
        assert got[field] == value, field
    assert (got["powerOffMode"], got["suspendMode"], got["restartMode"]) == ("TrySoft",) * 3
    # applying the same manifest again changes nothing (nextRestartTime, powerState untouched)
    again = platform.kubectl("apply", "-f", "-", input=manifest).stdout
    assert "unchanged" in again, again
    # the category finds it with its neighbours
    listed = platform.kubectl("get", "vmoperator", "-n", namespace, "-o", "name").stdout
    assert f"virtualmachine.{GROUP}/web-1" in listed, listed


def test_printer_columns(platform: Platform, namespace: str) -> None:
    platform.kubectl("apply", "-f", "-", input=vm_manifest(namespace, "cols"))
    set_vm_status(platform, namespace, "cols", "10.77.0.9", True)
    lines = platform.kubectl("get", "vm", "cols", "-n", namespace).stdout.splitlines()
    assert lines[0].split() == ["NAME", "POWER-STATE", "CLASS", "IMAGE", "PRIMARY-IP4", "AGE"]
    assert lines[1].split()[:5] == ["cols", "PoweredOn", "best-effort-small", MISSING_IMAGE,
                                    "10.77.0.9"]
    header = platform.kubectl("get", "vmclass", "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "CPU", "MEMORY", "AGE"]
    header = platform.kubectl("get", "cvmi").stdout.splitlines()
    if header and not header[0].startswith("No resources"):
        assert header[0].split()[:4] == ["NAME", "DISPLAY-NAME", "TYPE", "READY"]


# -- what a schema cannot say: 422 with the field --------------------------------------------
def test_bad_inputs_are_422_with_field_paths(platform: Platform, namespace: str) -> None:
    path = f"{API}/namespaces/{namespace}/virtualmachines"
    code, status = request(platform, "POST", path, vm_body(namespace, "bad1",
                                                              powerState="Sleeping"))
    assert (code, status["reason"], causes(status)) == (422, "Invalid", ["spec.powerState"])
    code, status = request(platform, "POST", path, vm_body(namespace, "bad2",
                                                              powerOffMode="Gently"))
    assert (code, causes(status)) == (422, ["spec.powerOffMode"])
    code, status = request(platform, "POST", path, vm_body(namespace, "bad3",
                                                              powerState="Suspended"))
    assert (code, causes(status)) == (422, ["spec.powerState"]), status
    assert "Suspended" in status["message"]
    code, status = request(platform, "POST", path, vm_body(namespace, "bad4",
                                                              nextRestartTime="now"))
    assert (code, causes(status)) == (422, ["spec.nextRestartTime"]), status

    # kubectl shows the same to its user
    out = platform.kubectl("apply", "-f", "-", check=False,
                           input=vm_manifest(namespace, "bad5").replace(
                               "powerState: PoweredOn", "powerState: Suspended"))
    assert out.returncode != 0 and "spec.powerState" in out.stderr, out.stderr

    # on update: only "now" (any case), "" or the value already there
    code, _ = request(platform, "POST", path, vm_body(namespace, "good"))
    assert code == 201
    one = f"{path}/good"
    merge = "application/merge-patch+json"
    code, status = request(platform, "PATCH", one, {"spec": {"nextRestartTime": "tomorrow"}},
                           merge)
    assert (code, causes(status)) == (422, ["spec.nextRestartTime"]), status
    out = platform.kubectl("patch", "vm", "good", "-n", namespace, "--type=merge", "-p",
                           '{"spec":{"nextRestartTime":"2030-01-01T00:00:00Z"}}', check=False)
    assert out.returncode != 0 and "spec.nextRestartTime" in out.stderr, out.stderr
    code, vm = request(platform, "PATCH", one, {"spec": {"nextRestartTime": "now"}}, merge)
    assert code == 200, vm
    first = vm["spec"]["nextRestartTime"]
    assert time.strptime(first[:19], "%Y-%m-%dT%H:%M:%S") and first.endswith("Z"), first
    code, vm = request(platform, "PATCH", one, {"spec": {"nextRestartTime": "NOW"}}, merge)
    assert code == 200 and vm["spec"]["nextRestartTime"] not in ("NOW", first), vm["spec"]
    code, vm = request(platform, "PATCH", one, {"metadata": {"labels": {"x": "y"}}}, merge)
    assert code == 200 and vm["spec"]["nextRestartTime"] not in ("", "NOW")
    code, vm = request(platform, "PATCH", one, {"spec": {"powerState": "Suspended"}}, merge)
    assert code == 200 and vm["spec"]["powerState"] == "Suspended"  # allowed once created


# -- default classes -----------------------------------------------------------------------------
DEFAULT_CLASSES = sorted(f"{p}-{s}" for p in ("best-effort", "guaranteed")
                         for s in ("xsmall", "small", "medium", "large", "xlarge"))


def class_names(platform: Platform, ns: str) -> list[str]:
    out = platform.kubectl("get", "vmclass", "-n", ns, "-o", "name", check=False).stdout
    return sorted(line.split("/", 1)[1] for line in out.split())


def new_namespace(platform: Platform, annotations: dict[str, str] | None = None) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    platform.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "annotations": annotations or {}}}))
    return name


def test_default_classes_in_a_new_namespace(platform: Platform, namespace: str) -> None:
    wait_for("the default classes", lambda: class_names(platform, namespace) == DEFAULT_CLASSES)
    large = get_json(platform, "vmclass", "guaranteed-large", "-n", namespace)
    assert large is not None
    assert large["spec"]["hardware"] == {"cpus": 4, "memory": "16Gi"}
    amount = {"cpu": "4", "memory": "16Gi"}
    assert large["spec"]["policies"]["resources"] == {"requests": amount, "limits": amount}
    small = get_json(platform, "vmclass", "best-effort-small", "-n", namespace)
    assert small is not None and "policies" not in small["spec"]
    assert small["spec"]["hardware"] == {"cpus": 2, "memory": "4Gi"}

    # a class the user changed stays changed; a deleted one comes back
    platform.kubectl("patch", "vmclass", "best-effort-small", "-n", namespace, "--type=merge",
                     "-p", '{"spec":{"hardware":{"memory":"6Gi"}}}')
    platform.kubectl("delete", "vmclass", "best-effort-xsmall", "-n", namespace)
    wait_for("best-effort-xsmall to come back",
             lambda: "best-effort-xsmall" in class_names(platform, namespace))
    small = get_json(platform, "vmclass", "best-effort-small", "-n", namespace)
    assert small is not None and small["spec"]["hardware"]["memory"] == "6Gi"


def test_namespaces_that_opt_out_get_no_classes(platform: Platform, namespace: str) -> None:
    opted_out = new_namespace(platform, {"vmoperator.atoll.dev/default-classes": "false"})
    try:
        # the controller works through namespaces in order: once a later one has its classes,
        # it has looked at the opted-out one
        later = new_namespace(platform)
        try:
            wait_for("the later namespace's classes",
                     lambda: class_names(platform, later) == DEFAULT_CLASSES)
            assert class_names(platform, opted_out) == []
        finally:
            platform.kubectl("delete", "namespace", later, "--wait=false", check=False)

        # an administrator opts a namespace out and deletes a class: it stays deleted
        wait_for("the default classes", lambda: class_names(platform, namespace) ==
                 DEFAULT_CLASSES)
        platform.kubectl("annotate", "namespace", namespace,
                         "vmoperator.atoll.dev/default-classes=false")
        platform.kubectl("delete", "vmclass", "guaranteed-xlarge", "-n", namespace)
        sentinel = new_namespace(platform)
        try:
            wait_for("the sentinel namespace's classes",
                     lambda: class_names(platform, sentinel) == DEFAULT_CLASSES)
            assert "guaranteed-xlarge" not in class_names(platform, namespace)
        finally:
            platform.kubectl("delete", "namespace", sentinel, "--wait=false", check=False)
    finally:
        platform.kubectl("delete", "namespace", opted_out, "--wait=false", check=False)


# -- VirtualMachineService -----------------------------------------------------------------------
def endpoint_ips(platform: Platform, ns: str, name: str) -> tuple[list[str], list[str]] | None:
    ep = get_json(platform, "endpoints", name, "-n", ns)
    if ep is None:
        return None
    ready = [a["ip"] for s in ep.get("subsets") or [] for a in s.get("addresses") or []]
    not_ready = [a["ip"] for s in ep.get("subsets") or []
                 for a in s.get("notReadyAddresses") or []]
    return sorted(ready), sorted(not_ready)


def test_vmservice_gets_a_service_and_endpoints_that_follow_vms(platform: Platform,
                                                                 namespace: str) -> None:
    for name in ("db-0", "db-1", "db-2"):
        platform.kubectl("apply", "-f", "-", input=vm_manifest(namespace, name, app="db"))
    platform.kubectl("apply", "-f", "-", input=vm_manifest(namespace, "web-0", app="web"))
    platform.kubectl("apply", "-f", "-", input=f"""apiVersion: {GROUP}/v1alpha3
kind: VirtualMachineService
metadata: {{name: db, namespace: {namespace}}}
spec:
  type: ClusterIP
  selector: {{app: db}}
  ports: [{{name: pg, protocol: TCP, port: 15432, targetPort: 5432}}]
""")
    vms_uid = get_json(platform, "vmservice", "db", "-n", namespace)["metadata"]["uid"]
    svc = wait_for("the Service", lambda: get_json(platform, "service", "db", "-n", namespace))
    assert "selector" not in svc["spec"] and svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [{"name": "pg", "protocol": "TCP", "port": 15432,
                                     "targetPort": 5432}]
    assert svc["spec"]["clusterIP"] not in ("", "None")  # the API server allocates one
    (owner,) = svc["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("VirtualMachineService", "db",
                                                            vms_uid)
    assert wait_for("empty Endpoints", lambda: endpoint_ips(platform, namespace, "db")) == \
        ([], [])

    set_vm_status(platform, namespace, "db-0", "10.77.1.10", True)
    set_vm_status(platform, namespace, "db-1", "10.77.1.11", False)
    set_vm_status(platform, namespace, "web-0", "10.77.1.20", True)
    wait_for("db-0 ready and db-1 not", lambda: endpoint_ips(platform, namespace, "db") ==
             (["10.77.1.10"], ["10.77.1.11"]))
    ep = get_json(platform, "endpoints", "db", "-n", namespace)
    (subset,) = ep["subsets"]
    ref = subset["addresses"][0]["targetRef"]
    assert (ref["kind"], ref["name"], ref["namespace"]) == ("VirtualMachine", "db-0", namespace)
    assert subset["ports"] == [{"name": "pg", "protocol": "TCP", "port": 5432}]

    set_vm_status(platform, namespace, "db-1", "10.77.1.11", True)
    set_vm_status(platform, namespace, "db-2", "10.77.1.12", True)
    wait_for("three ready", lambda: endpoint_ips(platform, namespace, "db") ==
             (["10.77.1.10", "10.77.1.11", "10.77.1.12"], []))
    platform.kubectl("label", "vm", "db-2", "-n", namespace, "app=other", "--overwrite")
    platform.kubectl("delete", "vm", "db-1", "-n", namespace, "--timeout=60s")
    wait_for("relabelled and deleted VMs to leave", lambda: endpoint_ips(
        platform, namespace, "db") == (["10.77.1.10"], []))

    # the garbage collector removes what the VirtualMachineService owned
    platform.kubectl("delete", "vmservice", "db", "-n", namespace)
    wait_for("Service and Endpoints to go", lambda: get_json(
        platform, "service", "db", "-n", namespace) is None and get_json(
        platform, "endpoints", "db", "-n", namespace) is None)


def test_headless_and_load_balancer_vmservices(platform: Platform, namespace: str) -> None:
    platform.kubectl("apply", "-f", "-", input=f"""apiVersion: {GROUP}/v1alpha3
kind: VirtualMachineService
metadata: {{name: quorum, namespace: {namespace}}}
spec:
  type: ClusterIP
  clusterIp: None
  selector: {{app: etcd}}
  ports: [{{name: peer, protocol: TCP, port: 2380, targetPort: 2380}}]
---
apiVersion: {GROUP}/v1alpha3
kind: VirtualMachineService
metadata: {{name: front, namespace: {namespace}}}
spec:
  type: LoadBalancer
  selector: {{app: web}}
  loadBalancerSourceRanges: [10.0.0.0/8]
  ports: [{{name: http, protocol: TCP, port: 80, targetPort: 8080}}]
""")
    quorum = wait_for("the headless Service",
                      lambda: get_json(platform, "service", "quorum", "-n", namespace))
    assert quorum["spec"]["clusterIP"] == "None"
    front = wait_for("the LoadBalancer Service",
                     lambda: get_json(platform, "service", "front", "-n", namespace))
    assert front["spec"]["type"] == "LoadBalancer"
    assert front["spec"]["loadBalancerSourceRanges"] == ["10.0.0.0/8"]
    lines = platform.kubectl("get", "vmservice", "-n", namespace).stdout.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "AGE"]
    assert sorted(line.split()[:2] for line in lines[1:]) == [["front", "LoadBalancer"],
                                                              ["quorum", "ClusterIP"]]

