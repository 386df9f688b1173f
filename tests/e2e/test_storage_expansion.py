"""Volume expansion end to end: a claim of the default class (``allowVolumeExpansion``) grows
under a running pod and under a running VM; a class without expansion, an unbound claim and
a shrink are refused as upstream refuses them.

The claims here are provisioned the real way (the default class, WaitForFirstConsumer: the
scheduler or VM placement picks the host, the provisioner makes the PV, the binder binds).
A host whose agent lacks CAP_SYS_RESOURCE cannot grow a mounted ext4 (the kernel refuses the
online resize): there the claim says so in ``FileSystemResizePending`` and the filesystem
grows when the next pod mounts it; both paths end with the same claim status.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from atoll.agent.storage import localvolumes as lv
from tests.conftest import Platform, wait_until
from tests.e2e import test_vms
from tests.e2e.test_vms import wait_console

tiny_image = test_vms.tiny_image  # the session's image fixture, used here

ONLINE = lv.has_capability(lv.CAP_SYS_RESOURCE)  # the agent runs as this user, on this host

CLAIM = """apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {name}, namespace: {ns}}}
spec:
  accessModes: [ReadWriteOnce]
  {klass}volumeMode: {mode}
  resources: {{requests: {{storage: {size}}}}}
"""

POD = """apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: [sh, -c, "echo ok > /data/keep && exec sleep 3600"]
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes: [{{name: data, persistentVolumeClaim: {{claimName: {claim}}}}}]
"""


def claim_yaml(ns: str, name: str, size: str, mode: str = "Filesystem",
               klass: str | None = None) -> str:
    sc = f"storageClassName: {klass}\n  " if klass is not None else ""
    return CLAIM.format(ns=ns, name=name, size=size, mode=mode, klass=sc)


def get(platform: Platform, *args: str) -> dict[str, Any]:
    return json.loads(platform.kubectl("get", *args, "-o", "json").stdout)


def claim(platform: Platform, ns: str, name: str) -> dict[str, Any]:
    return get(platform, "pvc", name, "-n", ns)


def running(platform: Platform, ns: str, pod: str) -> bool:
    out = platform.kubectl("-n", ns, "get", "pod", pod, "-o", "json", check=False)
    return out.returncode == 0 and \
        (json.loads(out.stdout).get("status") or {}).get("phase") == "Running"


def df_kib(platform: Platform, ns: str, pod: str) -> int:
    out = platform.kubectl("-n", ns, "exec", pod, "--", "df", "-k", "/data").stdout
    return int(out.strip().splitlines()[-1].split()[1])


def grow(platform: Platform, ns: str, name: str, size: str, check: bool = True) -> Any:
    return platform.kubectl("-n", ns, "patch", "pvc", name, "--type=merge", "-p", json.dumps(
        {"spec": {"resources": {"requests": {"storage": size}}}}), check=check)


def conditions(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {x["type"]: x for x in (c.get("status") or {}).get("conditions") or []}


def resized(platform: Platform, ns: str, name: str, size: str) -> bool:
    status = claim(platform, ns, name).get("status") or {}
    return (status.get("capacity") or {}).get("storage") == size and \
        not status.get("conditions") and not status.get("allocatedResourceStatuses")


def events_of(platform: Platform, ns: str, name: str) -> list[str]:
    items = get(platform, "events", "-n", ns, "--field-selector",
                f"involvedObject.name={name}")["items"]
    return [e["reason"] for e in items]


def test_a_claim_grows_under_a_running_pod(platform: Platform, namespace: str) -> None:
    ns = namespace
    platform.kubectl("apply", "-f", "-", input=claim_yaml(ns, "data", "32Mi") + "---\n" +
                     POD.format(ns=ns, name="p1", claim="data"))
    wait_until("the pod running on its claim", lambda: running(platform, ns, "p1"), 120)
    before = df_kib(platform, ns, "p1")
    assert 24 << 10 < before <= 32 << 10
    pv = claim(platform, ns, "data")["spec"]["volumeName"]
    grow(platform, ns, "data", "96Mi")
    wait_until("the PV grown by the controller", lambda: get(platform, "pv", pv)["spec"][
        "capacity"]["storage"] == "96Mi", 30)
    assert claim(platform, ns, "data")["status"]["allocatedResources"] == {"storage": "96Mi"}
    if ONLINE:
        wait_until("df inside the pod grown", lambda: df_kib(platform, ns, "p1") > 80 << 10, 60)
    else:
        waiting = wait_until("the claim saying why the mounted filesystem waits", lambda: (
            conditions(claim(platform, ns, "data")).get("FileSystemResizePending") or {}
        ).get("reason") == "OnlineResizeNotPermitted", 60)
        assert waiting
        c = claim(platform, ns, "data")
        assert c["status"]["capacity"] == {"storage": "32Mi"}  # not grown yet: not told so
        assert "CAP_SYS_RESOURCE" in conditions(c)["FileSystemResizePending"]["message"]
        assert c["status"]["allocatedResourceStatuses"] == {"storage": "NodeResizePending"}
        platform.kubectl("-n", ns, "delete", "pod", "p1", "--timeout=60s")
        platform.kubectl("apply", "-f", "-", input=POD.format(ns=ns, name="p2", claim="data"))
        wait_until("the next pod running", lambda: running(platform, ns, "p2"), 120)
        assert df_kib(platform, ns, "p2") > 80 << 10
        assert platform.kubectl("-n", ns, "exec", "p2", "--", "cat",
                                "/data/keep").stdout.strip() == "ok"
    wait_until("the claim's status grown, its conditions gone",
               lambda: resized(platform, ns, "data", "96Mi"), 60)
    reasons = wait_until("the resize Events", lambda: (lambda r: r if {
        "Resizing", "FileSystemResizeRequired", "FileSystemResizeSuccessful"} <= set(r)
        else None)(events_of(platform, ns, "data")), 30)
    assert "VolumeResizeSuccessful" in reasons
    # growing again is the same path; the PV and the file follow the claim, never shrink
    out = platform.kubectl("-n", ns, "patch", "pvc", "data", "--type=merge", "-p", json.dumps(
        {"spec": {"resources": {"requests": {"storage": "64Mi"}}}}), check=False)
    assert out.returncode != 0 and "spec.resources.requests.storage" in out.stderr


def test_expansion_is_refused_where_upstream_refuses_it(platform: Platform,
                                                        namespace: str) -> None:
    ns = namespace
    klass = f"fixed-{uuid.uuid4().hex[:6]}"
    platform.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": klass}, "provisioner": "storage.atoll.dev/local",
        "volumeBindingMode": "WaitForFirstConsumer", "allowVolumeExpansion": False}))
    try:
        platform.kubectl("apply", "-f", "-", input=claim_yaml(ns, "fixed", "16Mi", klass=klass)
                         + "---\n" + POD.format(ns=ns, name="p", claim="fixed") + "---\n" +
                         claim_yaml(ns, "waiting", "16Mi"))
        wait_until("the pod running", lambda: running(platform, ns, "p"), 120)
        out = grow(platform, ns, "fixed", "32Mi", check=False)
        assert out.returncode != 0
        assert "Forbidden" in out.stderr or "forbidden" in out.stderr, out.stderr
        assert "only dynamically provisioned pvc can be resized and the storageclass that " \
               "provisions the pvc must support resize" in out.stderr, out.stderr
        # a claim nobody uses yet (WaitForFirstConsumer: not bound) cannot grow either: its
        # spec is still immutable (upstream's 422)
        out = grow(platform, ns, "waiting", "32Mi", check=False)
        assert out.returncode != 0 and "spec is immutable after creation except " \
            "resources.requests" in out.stderr, out.stderr
        assert claim(platform, ns, "fixed")["spec"]["resources"]["requests"]["storage"] == \
            "16Mi"
    finally:
        platform.kubectl("delete", "pod", "p", "-n", ns, "--wait=false", check=False)
        platform.kubectl("delete", "storageclass", klass, check=False)


def test_a_block_claim_grows_under_a_running_vm(platform: Platform, namespace: str,
                                                tiny_image: str) -> None:
    ns = namespace
    platform.kubectl("apply", "-f", "-", input=claim_yaml(ns, "disk", "16Mi", mode="Block"))
    script = ("s=$(cat /sys/block/vda/size); echo size1-$s; "
              "while [ $(cat /sys/block/vda/size) = $s ]; do sleep 0.2; done; "
              "echo size2-$(cat /sys/block/vda/size)-end")
    platform.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "vm", "namespace": ns},
             "stringData": {"user-data": f"#!/bin/sh\n{script}\n"}},
            {"apiVersion": "vmoperator.vmware.com/v1alpha3", "kind": "VirtualMachine",
             "metadata": {"name": "vm", "namespace": ns},
             "spec": {"className": "best-effort-xsmall", "imageName": "tiny",
                      "bootstrap": {"cloudInit": {"rawCloudConfig": {"name": "vm",
                                                                     "key": "user-data"}}},
                      "volumes": [{"name": "data",
                                   "persistentVolumeClaim": {"claimName": "disk"}}]}}]}))
    try:
        log = wait_console(platform, ns, "vm", "size1-", timeout=180)
        assert int(re.search(r"size1-(\d+)", log).group(1)) == 16 << 11
        vm = get(platform, "vm", "vm", "-n", ns)
        vols = wait_until("status.volumes", lambda: (get(platform, "vm", "vm", "-n", ns).get(
            "status") or {}).get("volumes"), 30)
        assert vols[0]["name"] == "data" and vols[0]["type"] == "Managed"
        assert vols[0]["limit"] == "16Mi", vols
        grow(platform, ns, "disk", "48Mi")
        log = wait_console(platform, ns, "vm", "-end", timeout=60)
        assert int(re.search(r"size2-(\d+)-end", log).group(1)) == 48 << 11
        wait_until("the claim's status grown", lambda: resized(platform, ns, "disk", "48Mi"), 30)
        wait_until("status.volumes showing the new size", lambda: (get(
            platform, "vm", "vm", "-n", ns).get("status") or {}).get("volumes", [{}])[0].get(
            "limit") == "48Mi", 30)
        assert vm["metadata"]["labels"]  # placed (on the claim's host)
    finally:
        platform.kubectl("delete", "vm", "vm", "-n", ns, "--timeout=90s", check=False)
