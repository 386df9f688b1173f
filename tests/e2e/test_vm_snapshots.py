"""VirtualMachineSnapshots on real QEMU (TCG): with memory, the guest resumes exactly where it
was (its counter goes back, same boot); disks only, the VM reverts to PoweredOff with its disk
as it was; deletes consolidate the tree; a deleted VM's snapshots are garbage-collected; bad
manifests are 422s naming the field.

The guests are the tiny image with a blank 64M qcow2 disk (`atoll image build tiny --disk`),
built once for this module: a kernel-only VM has no qcow2 to hold a snapshot."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import Platform, wait_until
from tests.e2e.test_vms import tiny_image  # noqa: F401 (a fixture)
from tests.e2e.test_vms import console_log, qemu_pid, vm_yaml, wait_console, wait_vm

GROUP = "vmoperator.vmware.com"
VM6 = f"virtualmachines.v1alpha6.{GROUP}"
SNAP6 = f"virtualmachinesnapshots.v1alpha6.{GROUP}"
#: the guest prints "tick N <boot id>" every second and writes N to the start of /dev/vda;
#: at boot it says what the disk held
COUNTER = [
    "echo disk-says $(dd if=/dev/vda bs=16 count=1 2>/dev/null | tr -dc 0-9)",
    "(b=$(cat /proc/sys/kernel/random/boot_id); i=0; while true; do i=$((i+1)); "
    "echo tick $i $b; printf '%015d\\n' $i | dd of=/dev/vda bs=16 count=1 conv=notrunc,fsync "
    "2>/dev/null; sleep 1; done) &",
]


@pytest.fixture(scope="module")
def disk_image(platform: Platform) -> str:
    """The tiny image with a writable qcow2 disk, by object name."""
    out = subprocess.run([sys.executable, "-m", "atoll.cli.main", "image", "build", "tiny",
                          "--disk", "64M", "--name", "tiny-snap",
                          "--kubeconfig", str(platform.kubeconfig)],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr

    def found() -> str:
        images = json.loads(platform.kubectl("get", "cvmi", "-o", "json").stdout)["items"]
        return next((str(i["metadata"]["name"]) for i in images
                     if (i.get("status") or {}).get("name") == "tiny-snap"), "")
    return str(wait_until("the tiny-snap image", found, timeout=60, interval=0.5))


def get(platform: Platform, resource: str, ns: str, name: str) -> dict[str, Any]:
    out = platform.kubectl("get", resource, name, "-n", ns, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def cond(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or []
                 if c.get("type") == type_), {})


def snapshot(platform: Platform, ns: str, name: str, vm: str, memory: bool) -> dict[str, Any]:
    platform.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": f"{GROUP}/v1alpha6", "kind": "VirtualMachineSnapshot",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"vmName": vm, "memory": memory, "description": f"test {name}"}}))
    return wait_until(f"snapshot {name} ready", lambda: (lambda s: s if cond(
        s, "VirtualMachineSnapshotReady").get("status") == "True" else None)(
        get(platform, SNAP6, ns, name)), timeout=180, interval=0.5)


def ticks(text: str) -> list[tuple[int, str]]:
    return [(int(n), b) for n, b in re.findall(r"^tick (\d+) (\S+)", text, re.M)]


def last_tick(platform: Platform, ns: str, name: str) -> int:
    seen = ticks(console_log(platform, ns, name))
    return seen[-1][0] if seen else 0


def wait_tick(platform: Platform, ns: str, name: str, at_least: int) -> int:
    return wait_until(f"{name} counting past {at_least}", lambda: (
        lambda t: t if t >= at_least else 0)(last_tick(platform, ns, name)),
        timeout=120, interval=0.5)


def revert(platform: Platform, ns: str, vm: str, snap: str) -> dict[str, Any]:
    platform.kubectl("patch", VM6, vm, "-n", ns, "--type", "merge",
                     "-p", json.dumps({"spec": {"currentSnapshotName": snap}}))
    return wait_until(f"{vm} reverted to {snap}", lambda: (lambda v: v if not (
        v.get("spec") or {}).get("currentSnapshotName") and cond(
        v, "VirtualMachineSnapshotRevertSucceeded").get("status") == "True" else None)(
        get(platform, VM6, ns, vm)), timeout=180, interval=0.5)


def test_memory_snapshot_and_revert_resume_the_guest_where_it_was(
        platform: Platform, namespace: str, disk_image: str) -> None:
    platform.kubectl("apply", "-f", "-", input=vm_yaml(namespace, "mem", disk_image,
                                                       runcmd=COUNTER))
    wait_console(platform, namespace, "mem", "tick 3 ", timeout=180)
    snap = snapshot(platform, namespace, "mem-1", "mem", memory=True)
    taken_by = last_tick(platform, namespace, "mem")  # the counter was at most this
    assert snap["status"]["powerState"] == "PoweredOn"
    assert snap["status"]["uniqueID"].startswith("atoll-")
    assert int(snap["status"]["storage"]["used"]) > 1 << 20  # the guest's RAM went in
    # what quota charged: the disk's capacity and the class's memory (best-effort-xsmall)
    assert snap["status"]["storage"]["requested"] == [
        {"storageClass": "", "total": str((64 << 20) + (2 << 30))}]
    labels = snap["metadata"]["labels"]
    assert labels[f"snapshot.{GROUP}/vm-name"] == "mem"
    assert [o["kind"] for o in snap["metadata"]["ownerReferences"]] == ["VirtualMachine"]
    vm = get(platform, VM6, namespace, "mem")
    assert vm["status"]["currentSnapshot"]["name"] == "mem-1"
    assert [r["name"] for r in vm["status"]["rootSnapshots"]] == ["mem-1"]
    pid = qemu_pid(platform, vm)

    moved_on = wait_tick(platform, namespace, "mem", taken_by + 4)
    vm = revert(platform, namespace, "mem", "mem-1")
    assert vm["spec"]["powerState"] == "PoweredOn"
    seen = wait_until("the counter going back", lambda: (lambda t: t if any(
        b[0] < a[0] and a[0] >= moved_on for a, b in zip(t, t[1:])) else None)(
        ticks(console_log(platform, namespace, "mem"))), timeout=60, interval=0.5)
    drop = next(i for i, (a, b) in enumerate(zip(seen, seen[1:])) if b[0] < a[0])
    before, after = seen[drop], seen[drop + 1]
    assert after[0] <= taken_by + 1, (before, after, taken_by)
    assert after[1] == before[1]  # the same boot: the guest never restarted
    assert console_log(platform, namespace, "mem").count("disk-says") == 1
    assert qemu_pid(platform, vm) == pid  # the same QEMU, its state loaded
    print(f"\ncounter {before[0]} -> {after[0]} after the revert (snapshot at <= {taken_by})")


def test_disk_snapshot_reverts_powered_off_and_deletes_consolidate(
        platform: Platform, namespace: str, disk_image: str) -> None:
    platform.kubectl("apply", "-f", "-", input=vm_yaml(namespace, "dsk", disk_image,
                                                       runcmd=COUNTER))
    wait_console(platform, namespace, "dsk", "tick 3 ", timeout=180)
    snap = snapshot(platform, namespace, "dsk-1", "dsk", memory=False)
    taken_by = last_tick(platform, namespace, "dsk")
    assert snap["status"]["powerState"] == "PoweredOff"  # upstream: no memory, powered off
    moved_on = wait_tick(platform, namespace, "dsk", taken_by + 4)

    vm = revert(platform, namespace, "dsk", "dsk-1")
    assert vm["spec"]["powerState"] == "PoweredOff"
    wait_vm(platform, namespace, "dsk", lambda v: v["status"].get("powerState") == "PoweredOff",
            what="PoweredOff after the revert")
    platform.kubectl("patch", VM6, "dsk", "-n", namespace, "--type", "merge",
                     "-p", '{"spec": {"powerState": "PoweredOn"}}')
    log = wait_until("the second boot", lambda: (lambda t: t if t.count("disk-says") >= 2
                                                  else None)(console_log(platform, namespace,
                                                                         "dsk")),
                     timeout=180, interval=0.5)
    on_disk = int(re.findall(r"disk-says (\d+)", log)[-1])
    assert 1 <= on_disk <= taken_by < moved_on, (on_disk, taken_by, moved_on)

    # a second snapshot hangs from the first (the current one after the revert)
    wait_console(platform, namespace, "dsk", "tick 2 ", timeout=120)
    snapshot(platform, namespace, "dsk-2", "dsk", memory=False)
    first = wait_until("dsk-1's child", lambda: (lambda s: s if [
        c["name"] for c in (s.get("status") or {}).get("children") or []] == ["dsk-2"] else None)(
        get(platform, SNAP6, namespace, "dsk-1")), timeout=30, interval=0.3)
    assert first["status"]["children"][0]["type"] == "Managed"
    vm = get(platform, VM6, namespace, "dsk")
    assert vm["status"]["currentSnapshot"]["name"] == "dsk-2"
    assert [r["name"] for r in vm["status"]["rootSnapshots"]] == ["dsk-1"]

    # a migration would copy the disk without its snapshots: refused, with the reason
    platform.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "migration.atoll.dev/v1alpha1", "kind": "VirtualMachineMigration",
        "metadata": {"name": "dsk-away", "namespace": namespace}, "spec": {"vmName": "dsk"}}))
    mig = wait_until("the migration refused", lambda: (lambda m: m if (m.get("status") or {})
                                                        .get("phase") == "Failed" else None)(
        get(platform, "vmim", namespace, "dsk-away")), timeout=60, interval=0.3)
    assert mig["status"]["reason"] == "HasSnapshots", mig["status"]
    assert "dsk-1, dsk-2" in mig["status"]["message"]

    # deleting the root consolidates: its tag leaves the disk, dsk-2 becomes the root
    platform.kubectl("delete", SNAP6, "dsk-1", "-n", namespace, "--wait=true", timeout=120)
    wait_until("dsk-2 the only root", lambda: [r["name"] for r in (get(
        platform, VM6, namespace, "dsk").get("status") or {}).get("rootSnapshots") or []]
        == ["dsk-2"], timeout=60, interval=0.3)
    boot = platform.data_dir / "agent" / "vms" / vm["metadata"]["uid"] / "boot.qcow2"
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(boot)],
                                     capture_output=True, text=True, check=True).stdout)
    tags = [s["name"] for s in info.get("snapshots") or []]
    second = get(platform, SNAP6, namespace, "dsk-2")
    assert tags == [second["status"]["uniqueID"]], tags

    # the VM goes: its remaining snapshot is garbage-collected (nothing left on a disk)
    platform.kubectl("delete", "vm", "dsk", "-n", namespace, "--wait=false")
    wait_until("dsk-2 collected", lambda: not get(platform, SNAP6, namespace, "dsk-2"),
               timeout=180, interval=0.5)


def test_bad_snapshot_manifests_are_refused_with_the_field(platform: Platform,
                                                          namespace: str) -> None:
    def apply(spec: dict[str, Any], version: str = "v1alpha6") -> subprocess.CompletedProcess:
        return platform.kubectl("apply", "-f", "-", check=False, input=json.dumps({
            "apiVersion": f"{GROUP}/{version}", "kind": "VirtualMachineSnapshot",
            "metadata": {"name": "bad", "namespace": namespace}, "spec": spec}))

    out = apply({"vmName": "x", "memory": "yes"})
    assert out.returncode != 0 and "spec.memory" in out.stderr, out.stderr
    out = apply({"vmName": 7})
    assert out.returncode != 0 and "spec.vmName" in out.stderr, out.stderr
    out = apply({"vmName": "x", "quiesce": {"timeout": 5}})
    assert out.returncode != 0 and "spec.quiesce.timeout" in out.stderr, out.stderr
    out = apply({"vmName": "x"}, version="v1alpha3")  # upstream has no snapshots there
    assert out.returncode != 0
    # a snapshot of no VM says so, and is deleted at once (nothing was taken)
    assert apply({"vmName": "nobody", "memory": True}).returncode == 0
    wait_until("VirtualMachineNotFound", lambda: cond(get(
        platform, SNAP6, namespace, "bad"), "VirtualMachineSnapshotCreated").get("reason")
        == "VirtualMachineNotFound", timeout=30, interval=0.3)
    # and reads back in v1alpha5
    ref = platform.kubectl("get", f"virtualmachinesnapshots.v1alpha5.{GROUP}", "bad", "-n",
                           namespace, "-o", "jsonpath={.spec.vmName}")
    assert ref.stdout == "nobody"
    platform.kubectl("delete", SNAP6, "bad", "-n", namespace, "--wait=true", timeout=60)
    assert not get(platform, SNAP6, namespace, "bad")


def test_snapshots_count_against_the_storage_quota(platform: Platform, namespace: str,
                                                   disk_image: str) -> None:
    """What a snapshot may take (its disk's capacity, plus memory for a running VM's) is the
    server's figure, charged on create: a snapshot over the quota is refused."""
    platform.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": "snaps", "namespace": namespace},
        "spec": {"hard": {"requests.storage": "100Mi"}}}))
    platform.kubectl("apply", "-f", "-", input=vm_yaml(namespace, "q", disk_image,
                                                       power="PoweredOff"))

    def snap(name: str, **status: Any) -> subprocess.CompletedProcess:
        return platform.kubectl("create", "-f", "-", check=False, input=json.dumps({
            "apiVersion": f"{GROUP}/v1alpha6", "kind": "VirtualMachineSnapshot",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"vmName": "q", "memory": True}, **({"status": status} if status else {})}))

    # a client's own figure is replaced by the server's (64Mi: the image's disk)
    wait_until("the quota counted", lambda: (get(platform, "resourcequota", namespace, "snaps")
                                             .get("status") or {}).get("hard"), timeout=30)
    assert snap("q-1", storage={"requested": [{"storageClass": "", "total": "0"}]}).returncode \
        == 0
    first = get(platform, SNAP6, namespace, "q-1")
    assert first["status"]["storage"]["requested"] == [{"storageClass": "", "total": str(
        64 << 20)}]
    wait_until("64Mi used", lambda: (get(platform, "resourcequota", namespace, "snaps").get(
        "status") or {}).get("used", {}).get("requests.storage") == "64Mi", timeout=30,
        interval=0.3)
    refused = snap("q-2")
    assert refused.returncode != 0 and "exceeded quota" in refused.stderr, refused.stderr
    # deleting the first gives its storage back
    platform.kubectl("delete", SNAP6, "q-1", "-n", namespace, "--wait=true", timeout=60)
    wait_until("nothing used", lambda: (get(platform, "resourcequota", namespace, "snaps").get(
        "status") or {}).get("used", {}).get("requests.storage") == "0", timeout=30,
        interval=0.3)
    assert snap("q-2").returncode == 0


def test_a_kernel_only_vm_keeps_its_memory_in_the_hidden_vmstate_disk(
        platform: Platform, namespace: str, tiny_image: str) -> None:  # noqa: F811
    """The plain tiny image has no qcow2 of its own: the VM's vmstate.qcow2 (a drive the
    guest never sees) holds the snapshot, and the revert still puts the guest back."""
    platform.kubectl("apply", "-f", "-", input=vm_yaml(namespace, "kern", tiny_image,
                                                       runcmd=COUNTER))
    wait_console(platform, namespace, "kern", "tick 3 ", timeout=180)
    snapshot(platform, namespace, "kern-1", "kern", memory=True)
    taken_by = last_tick(platform, namespace, "kern")
    moved_on = wait_tick(platform, namespace, "kern", taken_by + 3)
    vm = revert(platform, namespace, "kern", "kern-1")
    seen = wait_until("the counter going back", lambda: (lambda t: t if any(
        b[0] < a[0] and a[0] >= moved_on for a, b in zip(t, t[1:])) else None)(
        ticks(console_log(platform, namespace, "kern"))), timeout=60, interval=0.5)
    drop = next(i for i, (a, b) in enumerate(zip(seen, seen[1:])) if b[0] < a[0])
    assert seen[drop + 1][0] <= taken_by + 1 and seen[drop + 1][1] == seen[drop][1]
    assert (platform.data_dir / "agent" / "vms" / vm["metadata"]["uid"] / "vmstate.qcow2"
            ).exists()
