"""Local volumes (``storage.atoll.dev/local``) on the real platform: pods keep a claim's data,
its size is enforced, a deleted PV's data goes, and the host reports its capacity.

Each test makes its PersistentVolume itself (the provisioner's contract: csi driver, handle,
capacity, nodeAffinity to the test node) and a claim pre-bound to it (``spec.volumeName`` and
the PV's ``claimRef`` with the claim's uid), and marks both Bound through the status
subresource, as the PV controller would: nothing here waits on the binder or the scheduler
(pods name their node).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from tests.conftest import TEST_NODE, Platform, kubectl_binary, wait_until
from tests.e2e.test_pods import get_pod, log_of, phase, pod_yaml, wait_pod
from tests.e2e.test_vms import tiny_image, wait_console  # noqa: F401 (a fixture)

DRIVER = "storage.atoll.dev/local"


def bound_claim(platform: Platform, ns: str, name: str, size: str, *,
                mode: str = "Filesystem", reclaim: str = "Delete") -> str:
    """A claim and a local PV on the test node bound to each other; the PV's name."""
    platform.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                 "volumeMode": mode, "resources": {"requests": {"storage": size}},
                 "volumeName": f"pv-{ns}-{name}"}}))
    claim = json.loads(platform.kubectl("get", "pvc", name, "-n", ns, "-o", "json").stdout)
    pv = f"pv-{ns}-{name}"
    csi: dict[str, Any] = {"driver": DRIVER, "volumeHandle": pv}
    if mode == "Filesystem":
        csi["fsType"] = "ext4"
    platform.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
        "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": reclaim, "storageClassName": "",
                 "volumeMode": mode, "csi": csi,
                 "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                              "namespace": ns, "name": name, "uid": claim["metadata"]["uid"]},
                 "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                     {"key": "kubernetes.io/hostname", "operator": "In",
                      "values": [TEST_NODE]}]}]}}}}))
    mark_bound(platform, ns, name, pv, size)
    return pv


def mark_bound(platform: Platform, ns: str, claim: str, pv: str, size: str) -> None:
    """Both sides Bound, as the PV controller leaves a pre-bound pair (idempotent)."""
    platform.kubectl("patch", "pv", pv, "--subresource=status", "--type=merge", "-p",
                     json.dumps({"status": {"phase": "Bound"}}))
    platform.kubectl("patch", "pvc", claim, "-n", ns, "--subresource=status", "--type=merge",
                     "-p", json.dumps({"status": {"phase": "Bound",
                                                  "accessModes": ["ReadWriteOnce"],
                                                  "capacity": {"storage": size}}}))


def stdout_of(platform: Platform, pod: dict[str, Any]) -> str:
    """What the container wrote to its stdout (CRI log lines: time, stream, tag, text)."""
    lines = [line.split(" ", 3) for line in log_of(platform, pod).splitlines()]
    return "\n".join(f[3] for f in lines if len(f) == 4 and f[1] == "stdout")


def volume_dir(platform: Platform, pv: str) -> Path:
    return platform.data_dir / "agent" / "volumes" / pv


def mounted(path: Path) -> bool:
    return any(line.split()[1] == str(path)
               for line in Path("/proc/mounts").read_text().splitlines())


def claim_pod(ns: str, name: str, claim: str, script: str, read_only: bool = False) -> str:
    ro = ", readOnly: true" if read_only else ""
    return pod_yaml(ns, name, script,
                    extra=f"  volumes: [{{name: data, persistentVolumeClaim: "
                          f"{{claimName: {claim}{ro}}}}}]",
                    container_extra="    volumeMounts: [{name: data, mountPath: /data}]")


def delete_and_wait(platform: Platform, *what: str, ns: str = "") -> None:
    args = ["-n", ns] if ns else []
    platform.kubectl(*args, "delete", *what, "--wait=false", "--ignore-not-found")
    wait_until(f"{' '.join(what)} gone", lambda: platform.kubectl(
        *args, "get", *what, check=False).returncode != 0, timeout=60)


def test_a_claims_data_outlives_its_pods_and_goes_with_its_pv(platform: Platform,
                                                              namespace: str) -> None:
    pv = bound_claim(platform, namespace, "data", "32Mi")
    platform.kubectl("apply", "-f", "-", input=claim_pod(
        namespace, "writer", "data",
        "echo kept-$(id -u) > /data/file && df -k /data | tail -1"))
    pod = wait_pod(platform, namespace, "writer", phase("Succeeded"), timeout=90)
    df = stdout_of(platform, pod).split()
    assert 20_000 < int(df[1]) <= 32 * 1024  # the container sees the claim's own filesystem
    disk = volume_dir(platform, pv) / "disk.img"
    assert disk.stat().st_size == 32 << 20 and disk.stat().st_blocks * 512 < 16 << 20
    # the pod is done: nobody on the host uses the volume, so it is unmounted
    wait_until("the volume unmounted", lambda: not mounted(volume_dir(platform, pv) / "mount"))
    delete_and_wait(platform, "pod", "writer", ns=namespace)
    platform.kubectl("apply", "-f", "-", input=claim_pod(
        namespace, "reader", "data", "cat /data/file; touch /data/nope || echo read-only",
        read_only=True))
    pod = wait_pod(platform, namespace, "reader", phase("Succeeded"), timeout=90)
    assert stdout_of(platform, pod).split() == ["kept-0", "read-only"]
    delete_and_wait(platform, "pod", "reader", ns=namespace)
    # a Retain volume's data outlives its PV; the Delete one's goes (the PV controller, where
    # it runs, deletes a released Delete PV itself; its watch event comes after the other's)
    kept = bound_claim(platform, namespace, "kept", "16Mi", reclaim="Retain")
    platform.kubectl("apply", "-f", "-", input=claim_pod(namespace, "keeper", "kept",
                                                         "echo mine > /data/file"))
    wait_pod(platform, namespace, "keeper", phase("Succeeded"), timeout=90)
    delete_and_wait(platform, "pod", "keeper", ns=namespace)
    delete_and_wait(platform, "pvc", "kept", ns=namespace)
    delete_and_wait(platform, "pv", kept)
    delete_and_wait(platform, "pvc", "data", ns=namespace)
    delete_and_wait(platform, "pv", pv)
    wait_until("the deleted PV's data removed", lambda: not volume_dir(platform, pv).exists())
    assert (volume_dir(platform, kept) / "disk.img").exists()
    assert not mounted(volume_dir(platform, pv) / "mount")
    losetup = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    assert str(disk) not in losetup


def test_the_claims_size_is_enforced_and_pods_share_one_mount(platform: Platform,
                                                              namespace: str) -> None:
    pv = bound_claim(platform, namespace, "small", "16Mi")
    platform.kubectl("apply", "-f", "-", input=claim_pod(
        namespace, "holder", "small", "sleep 3600"))
    wait_pod(platform, namespace, "holder", phase("Running"), timeout=90)
    platform.kubectl("apply", "-f", "-", input=claim_pod(
        namespace, "filler", "small",
        "dd if=/dev/zero of=/data/big bs=1M count=64 2>&1; echo exit=$?"))
    pod = wait_pod(platform, namespace, "filler", phase("Succeeded"), timeout=90)
    out = stdout_of(platform, pod)
    assert "No space left on device" in out and "exit=1" in out, out
    mount = volume_dir(platform, pv) / "mount"
    points = [line for line in Path("/proc/mounts").read_text().splitlines()
              if line.split()[1] == str(mount)]
    assert len(points) == 1  # one mount on the host for both pods
    assert (mount / "big").stat().st_size < 16 << 20
    delete_and_wait(platform, "pod", "holder", "filler", ns=namespace)
    wait_until("the volume unmounted after its last pod", lambda: not mounted(mount))


def test_a_pod_waits_for_its_claim_to_be_bound(platform: Platform, namespace: str) -> None:
    platform.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "later", "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                 "resources": {"requests": {"storage": "16Mi"}},
                 "volumeName": f"pv-{namespace}-later"}}))
    platform.kubectl("apply", "-f", "-", input=claim_pod(namespace, "waiter", "later",
                                                         "cat /data/x"))

    def waiting() -> str:
        status = (get_pod(platform, namespace, "waiter").get("status") or {})
        for c in status.get("containerStatuses") or []:
            w = (c.get("state") or {}).get("waiting") or {}
            if w.get("reason") == "ContainerCreating" and "not bound" in w.get("message", ""):
                return w["message"]
        return ""
    assert "later" in wait_until("the pod waiting on its claim", waiting, timeout=60)
    events = platform.kubectl("-n", namespace, "get", "events", "--field-selector",
                              "involvedObject.name=waiter", "-o",
                              "jsonpath={.items[*].reason}").stdout
    assert "FailedMount" in events
    # bound now: the pod's next try mounts it
    bound_claim(platform, namespace, "later", "16Mi")
    pv = f"pv-{namespace}-later"
    wait_until("the volume made", lambda: (volume_dir(platform, pv) / "meta.json").exists(),
               timeout=90)
    delete_and_wait(platform, "pod", "waiter", ns=namespace)


def test_the_host_reports_its_capacity_and_overcommit_is_not_hidden(
        platform: Platform, namespace: str) -> None:
    def capacity() -> dict[str, Any]:
        out = platform.kubectl("-n", "kube-system", "get", "csistoragecapacity",
                               f"atoll-local-{TEST_NODE}", "-o", "json", check=False)
        return json.loads(out.stdout) if out.returncode == 0 else {}
    obj = wait_until("the host's CSIStorageCapacity", capacity, timeout=60)
    assert obj["storageClassName"] == "atoll-local"
    assert obj["nodeTopology"] == {"matchLabels": {"kubernetes.io/hostname": TEST_NODE}}
    assert int(obj["capacity"]) > 0 and obj["maximumVolumeSize"] == obj["capacity"]
    assert obj["metadata"]["ownerReferences"][0]["kind"] == "Node"
    # a volume provisioned for this host but not made yet counts in full
    huge = f"pv-{namespace}-huge"
    platform.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": huge},
        "spec": {"capacity": {"storage": "1Pi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "",
                 "csi": {"driver": DRIVER, "volumeHandle": huge},
                 "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                     {"key": "kubernetes.io/hostname", "operator": "In",
                      "values": [TEST_NODE]}]}]}}}}))
    wait_until("capacity 0 with a 1Pi volume promised", lambda: capacity()["capacity"] == "0",
               timeout=30)
    delete_and_wait(platform, "pv", huge)
    wait_until("the capacity back", lambda: int(capacity()["capacity"]) > 0, timeout=30)


def test_a_host_writes_only_its_own_capacity(platform: Platform, tmp_path: Path) -> None:
    kc = tmp_path / "intruder.kubeconfig"
    out = subprocess.run([sys.executable, "-m", "atoll.cli.main", "kubeconfig", "--data-dir",
                          str(platform.data_dir), "--node", "intruder"],
                         capture_output=True, text=True, timeout=60, check=True)
    kc.write_text(out.stdout)
    env = dict(os.environ, KUBECONFIG=str(kc), KUBECACHEDIR=str(tmp_path / "cache"))

    def k(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([kubectl_binary(), *args], capture_output=True, text=True,
                              env=env, timeout=60, input=input)

    def cap(name: str, host: str) -> str:
        return json.dumps({"apiVersion": "storage.k8s.io/v1", "kind": "CSIStorageCapacity",
                           "metadata": {"name": name, "namespace": "kube-system"},
                           "storageClassName": "atoll-local", "capacity": "1Gi",
                           "nodeTopology": {"matchLabels": {"kubernetes.io/hostname": host}}})
    assert k("get", "csistoragecapacities", "-A").returncode == 0
    wait_until("this host's capacity published", lambda: platform.kubectl(
        "-n", "kube-system", "get", "csistoragecapacity", f"atoll-local-{TEST_NODE}",
        check=False).returncode == 0, 60)
    mine = f"cap-{uuid.uuid4().hex[:6]}"
    for bad in (cap(f"atoll-local-{TEST_NODE}-x", TEST_NODE), cap("atoll-local-intruder", mine),
                cap(mine, "intruder")):
        out = k("create", "-f", "-", input=bad)
        assert out.returncode != 0 and "its own storage capacity" in out.stderr, out.stderr
    out = k("-n", "kube-system", "delete", "csistoragecapacity", f"atoll-local-{TEST_NODE}")
    assert out.returncode != 0 and "its own storage capacity" in out.stderr, out.stderr
    out = k("create", "-f", "-", input=cap("atoll-local-intruder", "intruder"))
    assert out.returncode == 0, out.stderr
    assert k("-n", "kube-system", "delete", "csistoragecapacity",
             "atoll-local-intruder").returncode == 0
    # reading PVs is allowed to every host
    assert k("get", "pv").returncode == 0
    # a claim none of its workloads uses: its status is not this host's to write
    claim = f"other-{uuid.uuid4().hex[:6]}"
    platform.kubectl("-n", "default", "apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim, "namespace": "default"},
        "spec": {"accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Mi"}}}}))
    try:
        out = k("-n", "default", "patch", "pvc", claim, "--subresource=status", "--type",
                "merge", "-p", '{"status": {"phase": "Lost"}}')
        assert out.returncode != 0 and "forbidden" in out.stderr.lower(), out.stderr
    finally:
        platform.kubectl("-n", "default", "delete", "pvc", claim, "--wait=false")


def test_a_vm_disk_on_a_filesystem_claim_outlives_the_vm(platform: Platform, namespace: str,
                                                         tiny_image: str) -> None:
    pv = bound_claim(platform, namespace, "vmdata", "64Mi")

    def vm(name: str, script: str) -> str:
        return json.dumps({
            "apiVersion": "v1", "kind": "List", "items": [
                {"apiVersion": "v1", "kind": "Secret",
                 "metadata": {"name": name, "namespace": namespace},
                 "stringData": {"user-data": f"#!/bin/sh\n{script}\n"}},
                {"apiVersion": "vmoperator.vmware.com/v1alpha3", "kind": "VirtualMachine",
                 "metadata": {"name": name, "namespace": namespace},
                 "spec": {"className": "best-effort-xsmall", "imageName": "tiny",
                          "bootstrap": {"cloudInit": {"rawCloudConfig": {
                              "name": name, "key": "user-data"}}},
                          "volumes": [{"name": "data",
                                       "persistentVolumeClaim": {"claimName": "vmdata"}}]}}]})
    platform.kubectl("apply", "-f", "-", input=vm(
        "w", "echo from-the-first-vm | dd of=/dev/vda conv=fsync 2>/dev/null; "
             "echo wrote-$(cat /sys/block/vda/size)"))
    log = wait_console(platform, namespace, "w", "wrote-")
    sectors = int(log.split("wrote-")[1].split()[0])
    assert 40 << 11 < sectors < 64 << 11  # the image inside the 64Mi filesystem fills it
    image = volume_dir(platform, pv) / "mount" / "disk.img"
    assert image.stat().st_size == sectors * 512
    platform.kubectl("delete", "vm", "w", "-n", namespace, "--timeout=90s")
    wait_until("the volume unmounted with the VM",
               lambda: not mounted(volume_dir(platform, pv) / "mount"))
    platform.kubectl("apply", "-f", "-", input=vm(
        "r", "echo read-$(dd if=/dev/vda bs=18 count=1 2>/dev/null)"))
    assert "read-from-the-first-vm" in wait_console(platform, namespace, "r", "read-")
    platform.kubectl("delete", "vm", "r", "-n", namespace, "--timeout=90s")
