"""Live migration, maintenance mode, and migrations that fail, in a 2-host dev cluster.

A VM streams a counter over two TCP connections, one to a client on each host; it moves to
the other host and back while they read.  Afterwards the counters have no gap (the guest never
paused for long, never rebooted, lost no connection), exactly one QEMU runs it, and the
objects tell what happened.  Draining a host moves its VMs; killing the target's QEMU during
the copy leaves the VM running where it was, with nothing left on the target.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_SLOT, pids_of
from tests.e2e.devcluster import DevCluster
from tests.e2e.test_vms import GROUP, alive

HOST = "vmoperator.atoll.dev/host"
NS = "mig"
STREAM = ("for p in 7000 7001; do (while true; do (i=0; while true; do i=$((i+1)); "
          "echo tick $i; sleep 0.2; done) | nc -l -p $p; done) & done")
READER = """
import json, signal, socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
f = s.makefile()
ticks, gaps, last, done = [], [], time.monotonic(), False
def stop(*_):
    global done
    done = True
signal.signal(signal.SIGTERM, stop)
print("connected", flush=True)
while not done:
    try:
        line = f.readline()
    except (InterruptedError, OSError) as e:
        if done:
            break
        print(json.dumps({"error": str(e), "ticks": ticks[-3:]}), flush=True)
        sys.exit(1)
    if not line:
        print(json.dumps({"error": "EOF", "ticks": ticks[-3:]}), flush=True)
        sys.exit(1)
    now = time.monotonic()
    gaps.append(now - last)
    last = now
    ticks.append(int(line.split()[1]))
print(json.dumps({"ticks": ticks, "worst_gap": max(gaps[1:] or [0])}), flush=True)
"""
#: the guest writes numbered 16-byte blocks to its disk (fsync'd), acknowledging each on 7002;
#: port 7003 answers with the disk's blocks so far
WRITER = ("(i=0; while true; do i=$((i+1)); printf 'blk %011d\\n' $i | dd of=/dev/vda bs=16 "
          "seek=$i conv=notrunc,fsync 2>/dev/null && echo $i > /n && echo ack $i; sleep 0.05; "
          "done) | nc -l -p 7002 &")
DUMPER = ("printf '#!/bin/sh\\ndd if=/dev/vda bs=16 count=$(($(cat /n)+1)) 2>/dev/null\\n' "
          "> /v.sh; chmod +x /v.sh; echo 0 > /n; nc -ll -p 7003 -e /v.sh &")
ACKS = """
import signal, socket, sys
s = socket.create_connection((sys.argv[1], 7002), timeout=60)
f = s.makefile()
last, done = 0, False
def stop(*_):
    global done
    done = True
signal.signal(signal.SIGTERM, stop)
print("connected", flush=True)
while not done:
    try:
        line = f.readline()
    except (InterruptedError, OSError):
        break
    if not line:
        break
    last = int(line.split()[1])
print(last, flush=True)
"""
DUMP = """
import socket, sys
s = socket.create_connection((sys.argv[1], 7003), timeout=30)
data = b""
while chunk := s.recv(65536):
    data += chunk
sys.stdout.buffer.write(data)
"""


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    cluster = DevCluster(tmp_path_factory.mktemp("migration"), 2, f"amg{TEST_SLOT}-")
    cluster.start()
    try:
        built = cluster.atoll("image", "build", "tiny", timeout=900)
        assert built.returncode == 0, built.stdout + built.stderr
        disk = cluster.atoll("image", "build", "tiny", "--disk", "64M", "--name", "tiny-disk")
        assert disk.returncode == 0, disk.stdout + disk.stderr
        cluster.kubectl("create", "namespace", NS)
        yield cluster
    finally:
        cluster.stop()


def vm_manifest(name: str, host: str, runcmd: list[str] | None = None,
                labels: dict[str, str] | None = None, image: str = "tiny") -> str:
    return json.dumps({
        "apiVersion": f"{GROUP}/v1alpha3", "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": NS, "labels": {HOST: host, **(labels or {})}},
        "spec": {"className": "best-effort-xsmall", "imageName": image,
                 "powerState": "PoweredOn",
                 "bootstrap": {"cloudInit": {"cloudConfig": {
                     "runcmd": runcmd or [f"echo marker-{name}"]}}}}})


def booted(dev: DevCluster, name: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        vm = dev.get("vm", "-n", NS, name)
        ok = any(c["type"] == "GuestBootstrap" and c["status"] == "True"
                 for c in (vm.get("status") or {}).get("conditions") or [])
        return vm if ok else None
    return dev.wait(f"VM {name} booted", done, 180)


def qemus(uid: str) -> list[int]:
    return [p for p in pids_of(f"-uuid {uid}") if alive(p)]


def qemu_on(uid: str, host: str) -> list[int]:
    out = []
    for pid in qemus(uid):
        try:
            if f"/{host}/".encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.append(pid)
        except OSError:
            continue
    return out


def host_of(dev: DevCluster, name: str) -> str:
    return (dev.get("vm", "-n", NS, name).get("metadata") or {}).get("labels", {}).get(HOST, "")


def migrations(dev: DevCluster, vm: str) -> list[dict[str, Any]]:
    return [m for m in dev.get("vmim", "-n", NS).get("items", []) if m["spec"]["vmName"] == vm]


def test_a_running_vm_moves_and_back_keeping_its_address_and_connections(
        dev: DevCluster, tmp_path: Path) -> None:
    dev.kubectl("apply", "-f", "-", input=vm_manifest(
        "mover", dev.host(1), [STREAM, "mkdir -p /w; echo hi > /w/index.html; httpd -p 80 -h /w"]))
    vm = booted(dev, "mover")
    uid, ip = vm["metadata"]["uid"], vm["status"]["network"]["primaryIP4"]
    script = tmp_path / "reader.py"
    script.write_text(READER)
    readers = [dev.in_host(i, [sys.executable, str(script), ip, str(port)],
                           stdout=subprocess.PIPE, text=True)
               for i, port in ((1, 7000), (2, 7001))]
    try:
        for r in readers:
            assert r.stdout is not None and r.stdout.readline().strip() == "connected"
        there = dev.atoll("vm", "migrate", "mover", "-n", NS)
        assert there.returncode == 0, there.stdout + there.stderr
        assert f"now runs on {dev.host(2)}" in there.stdout
        assert host_of(dev, "mover") == dev.host(2)
        assert len(qemus(uid)) == 1 and qemu_on(uid, dev.host(2))
        back = dev.atoll("vm", "migrate", "mover", "-n", NS, "--to", dev.host(1))
        assert back.returncode == 0, back.stdout + back.stderr
        assert host_of(dev, "mover") == dev.host(1)
        assert len(qemus(uid)) == 1 and qemu_on(uid, dev.host(1))
    finally:
        for r in readers:
            if r.poll() is None:
                r.send_signal(signal.SIGTERM)
    results = [json.loads(r.communicate(timeout=30)[0].strip().splitlines()[-1])
               for r in readers]
    for res in results:
        assert "error" not in res, res
        ticks = res["ticks"]
        # every line the guest wrote arrived, in order, on the same connection: no reboot,
        # no reset, nothing lost across two moves
        assert ticks == list(range(ticks[0], ticks[0] + len(ticks))), ticks
        assert res["worst_gap"] < 15, res["worst_gap"]
    print(f"\nworst gaps in the streams: {[round(r['worst_gap'], 2) for r in results]} s")

    done = migrations(dev, "mover")
    assert [m["status"]["phase"] for m in done] == ["Succeeded", "Succeeded"]
    for m in done:
        st = m["status"]
        assert st["completed"] and st["downtime"].endswith("ms") and st["totalTime"]
        assert [p["phase"] for p in st["phaseTransitionTimestamps"]] == [
            "Scheduling", "Scheduled", "PreparingTarget", "TargetReady", "Running", "Succeeded"]
        assert st["source"]["ip"] == ip and st["progress"]["ramTotalBytes"] > 0
    vm = dev.get("vm", "-n", NS, "mover")
    assert vm["status"]["network"]["primaryIP4"] == ip
    assert vm["status"]["powerState"] == "PoweredOn"
    assert any(c["type"] == "GuestBootstrap" and c["status"] == "True"
               for c in vm["status"]["conditions"])
    events = dev.get("events", "-n", NS, "--field-selector", "involvedObject.name=mover")
    reasons = [e["reason"] for e in events["items"]]
    assert reasons.count("Migrated") == 2 and "PowerOff" not in reasons, reasons
    # a fresh connection reaches the guest from both hosts
    for i in (1, 2):
        got = dev.in_host(i, [sys.executable, "-c",
                              f"import urllib.request;print(urllib.request.urlopen("
                              f"'http://{ip}/', timeout=10).read().decode())"],
                          stdout=subprocess.PIPE, text=True)
        assert got.communicate(timeout=30)[0].strip() == "hi"


def test_draining_a_host_moves_its_vms_and_maintenance_waits_for_them(dev: DevCluster) -> None:
    for name in ("drain-a", "drain-b"):
        dev.kubectl("apply", "-f", "-", input=vm_manifest(name, dev.host(2)))
    for name in ("drain-a", "drain-b"):
        booted(dev, name)
    try:
        drained = dev.kubectl("drain", dev.host(2), "--ignore-daemonsets", "--force",
                              "--delete-emptydir-data", "--timeout=120s")
        assert "drained" in drained.stdout
        dev.wait("both VMs off the drained host", lambda: all(
            host_of(dev, n) == dev.host(1) for n in ("drain-a", "drain-b")), 120)
        evacuations = [m for m in dev.get("vmim", "-n", NS)["items"]
                       if m["metadata"]["labels"].get("migration.atoll.dev/reason") ==
                       "evacuation"]
        assert sorted(m["spec"]["vmName"] for m in evacuations) == ["drain-a", "drain-b"]
        assert {m["status"]["phase"] for m in evacuations} == {"Succeeded"}
        dev.kubectl("uncordon", dev.host(2))
        # maintenance mode the other way: the command returns once the VMs have left
        out = dev.atoll("host", "maintenance", dev.host(1))
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"{dev.host(1)} is in maintenance" in out.stdout
        assert all(host_of(dev, n) == dev.host(2) for n in ("drain-a", "drain-b"))
        node = dev.get("node", dev.host(1))
        assert node["spec"]["unschedulable"] is True
    finally:
        dev.atoll("host", "maintenance", dev.host(1), "--off")
        dev.kubectl("uncordon", dev.host(2), check=False)
        dev.kubectl("delete", "vm", "-n", NS, "drain-a", "drain-b", "--wait=false")
    assert not dev.get("node", dev.host(1))["spec"].get("unschedulable")


def test_a_target_killed_during_the_copy_leaves_the_vm_running_where_it_was(
        dev: DevCluster) -> None:
    # a policy so slow the copy takes a while: the test can kill the target mid-way
    dev.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "policy.migration.atoll.dev/v1alpha1", "kind": "MigrationPolicy",
        "metadata": {"name": "crawl"},
        "spec": {"bandwidthPerMigration": "1Mi", "allowAutoConverge": False,
                 "selectors": {"virtualMachineSelector": {"speed": "crawl"}}}}))
    dev.kubectl("apply", "-f", "-", input=vm_manifest("victim", dev.host(1),
                                                      labels={"speed": "crawl"}))
    vm = booted(dev, "victim")
    uid = vm["metadata"]["uid"]
    out = dev.atoll("vm", "migrate", "victim", "-n", NS, "--no-wait")
    assert out.returncode == 0, out.stderr
    running = dev.wait("the copy under way", lambda: next(
        (m for m in migrations(dev, "victim") if m["status"].get("phase") == "Running"), None),
        120)
    assert running["status"]["policy"]["name"] == "crawl"
    assert running["status"]["policy"]["bandwidthBytesPerSecond"] == 1024 * 1024
    target = dev.wait("the target's QEMU", lambda: qemu_on(uid, dev.host(2)), 30)
    for pid in target:
        os.kill(pid, signal.SIGKILL)
    failed = dev.wait("the migration to fail", lambda: next(
        (m for m in migrations(dev, "victim") if m["status"].get("phase") == "Failed"), None),
        120)
    assert failed["status"]["reason"] in ("MigrationFailed", "TargetExited"), failed["status"]
    assert host_of(dev, "victim") == dev.host(1)
    dev.wait("the target side removed", lambda: not qemu_on(uid, dev.host(2)), 30)
    assert len(qemus(uid)) == 1 and qemu_on(uid, dev.host(1))
    vm = dev.get("vm", "-n", NS, "victim")
    assert vm["status"]["powerState"] == "PoweredOn"
    run_dir = Path("/run/atoll-dev") / dev.host(2) / "vms" / uid
    dev.wait("no run directory left on the target", lambda: not run_dir.exists(), 30)
    # it still moves once the target is healthy (no policy throttling this one)
    dev.kubectl("label", "vm", "-n", NS, "victim", "speed-")
    again = dev.atoll("vm", "migrate", "victim", "-n", NS)
    assert again.returncode == 0, again.stdout + again.stderr
    assert host_of(dev, "victim") == dev.host(2) and len(qemus(uid)) == 1


def test_migrations_that_cannot_run_fail_with_a_reason(dev: DevCluster) -> None:
    dev.kubectl("apply", "-f", "-", input=vm_manifest("anchor", dev.host(1)))
    dev.wait("anchor powered on", lambda: (dev.get("vm", "-n", NS, "anchor").get("status")
                                           or {}).get("powerState") == "PoweredOn", 120)
    bad = dev.kubectl("create", "-f", "-", check=False, input=json.dumps({
        "apiVersion": "migration.atoll.dev/v1alpha1", "kind": "VirtualMachineMigration",
        "metadata": {"name": "no-vm-name", "namespace": NS}, "spec": {}}))
    assert bad.returncode != 0 and "spec.vmName" in bad.stderr, bad.stderr
    for name, spec, reason in (
            ("ghost", {"vmName": "nope"}, "VirtualMachineNotFound"),
            ("nowhere", {"vmName": "anchor", "targetNode": "no-such-host"}, "NoTarget"),
            ("stay", {"vmName": "anchor", "targetNode": dev.host(1)}, "NoTarget")):
        dev.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "migration.atoll.dev/v1alpha1", "kind": "VirtualMachineMigration",
            "metadata": {"name": name, "namespace": NS}, "spec": spec}))
        got = dev.wait(f"{name} to fail", lambda: (m := dev.get("vmim", "-n", NS, name)) and
                       (m.get("status") or {}).get("phase") == "Failed" and m)
        assert got["status"]["reason"] == reason, got["status"]
    assert host_of(dev, "anchor") == dev.host(1)


def test_a_vm_writing_to_its_local_disk_moves_without_losing_an_acknowledged_write(
        dev: DevCluster, tmp_path: Path) -> None:
    dev.kubectl("apply", "-f", "-", input=vm_manifest("writer", dev.host(1), [DUMPER, WRITER],
                                                      image="tiny-disk"))
    vm = booted(dev, "writer")
    uid, ip = vm["metadata"]["uid"], vm["status"]["network"]["primaryIP4"]
    (tmp_path / "acks.py").write_text(ACKS)
    (tmp_path / "dump.py").write_text(DUMP)
    acks = dev.in_host(2, [sys.executable, str(tmp_path / "acks.py"), ip],
                       stdout=subprocess.PIPE, text=True)
    try:
        assert acks.stdout is not None and acks.stdout.readline().strip() == "connected"
        for target in (dev.host(2), dev.host(1)):
            out = dev.atoll("vm", "migrate", "writer", "-n", NS, "--to", target)
            assert out.returncode == 0, out.stdout + out.stderr
            assert host_of(dev, "writer") == target and len(qemus(uid)) == 1
    finally:
        acks.send_signal(signal.SIGTERM)
    acked = int(acks.communicate(timeout=30)[0].strip().splitlines()[-1])
    assert acked > 10, "the guest acknowledged almost no writes"
    dump = dev.in_host(2, [sys.executable, str(tmp_path / "dump.py"), ip],
                       stdout=subprocess.PIPE)
    data = dump.communicate(timeout=60)[0]
    lost = [i for i in range(1, acked + 1)
            if data[i * 16:(i + 1) * 16] != b"blk %011d\n" % i]
    assert not lost, f"{len(lost)} of {acked} acknowledged writes lost, first {lost[:5]}"
    moved = [m for m in migrations(dev, "writer") if m["status"]["phase"] == "Succeeded"]
    assert len(moved) == 2 and all(m["status"]["progress"]["diskTotalBytes"] > 0 for m in moved)
    print(f"\n{acked} acknowledged disk writes across two migrations, none lost")


def test_a_source_agent_killed_during_the_copy_lets_the_move_finish(dev: DevCluster) -> None:
    """QEMU carries the copy on while the source's agent is away; the next agent follows it
    to the end (its marker names this migration), and the VM moves once."""
    dev.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "policy.migration.atoll.dev/v1alpha1", "kind": "MigrationPolicy",
        "metadata": {"name": "steady"},
        "spec": {"bandwidthPerMigration": "24Mi",
                 "selectors": {"virtualMachineSelector": {"speed": "steady"}}}}))
    dev.kubectl("apply", "-f", "-", input=vm_manifest("survivor", dev.host(1),
                                                      labels={"speed": "steady"}))
    uid = booted(dev, "survivor")["metadata"]["uid"]
    assert dev.atoll("vm", "migrate", "survivor", "-n", NS, "--no-wait").returncode == 0
    dev.wait("the copy under way", lambda: any(
        m["status"].get("phase") == "Running" for m in migrations(dev, "survivor")), 120)
    agents = pids_of(f"--name {dev.host(1)} --node-ip")
    assert agents, "the source host's agent"
    for pid in agents:
        os.kill(pid, signal.SIGKILL)
    done = dev.wait("the migration to end", lambda: next(
        (m for m in migrations(dev, "survivor")
         if m["status"].get("phase") in ("Succeeded", "Failed")), None), 240)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert host_of(dev, "survivor") == dev.host(2)
    dev.wait("one QEMU, on the target", lambda: len(qemus(uid)) == 1 and
             qemu_on(uid, dev.host(2)), 60)
    dev.wait("the source's copy removed", lambda: not (
        Path("/run/atoll-dev") / dev.host(1) / "vms" / uid).exists(), 60)


def test_a_copy_that_cannot_converge_is_aborted_or_finished_by_post_copy(
        dev: DevCluster) -> None:
    """A guest dirtying memory faster than the policy's bandwidth: aborted at its completion
    timeout (running on where it was), or, with post-copy allowed, moved at that point."""
    policy = {"apiVersion": "policy.migration.atoll.dev/v1alpha1", "kind": "MigrationPolicy",
              "metadata": {"name": "tight"},
              "spec": {"bandwidthPerMigration": "2Mi", "allowAutoConverge": False,
                       "completionTimeoutPerGiB": 2,
                       "selectors": {"virtualMachineSelector": {"speed": "tight"}}}}
    dev.kubectl("apply", "-f", "-", input=json.dumps(policy))
    busy = "mkdir -p /d && mount -t tmpfs -o size=128m tmpfs /d && (while :; do dd " \
           "if=/dev/urandom of=/d/x bs=1M count=96 2>/dev/null; done) &"
    dev.kubectl("apply", "-f", "-", input=vm_manifest(
        "churner", dev.host(1), [busy, "mkdir -p /w; echo up > /w/index.html; httpd -p 80 -h /w"],
        labels={"speed": "tight"}))
    vm = booted(dev, "churner")
    uid, ip = vm["metadata"]["uid"], vm["status"]["network"]["primaryIP4"]
    out = dev.atoll("vm", "migrate", "churner", "-n", NS)
    assert out.returncode == 1, out.stdout + out.stderr
    failed = migrations(dev, "churner")[-1]
    assert failed["status"]["reason"] == "CompletionTimeout", failed["status"]
    assert host_of(dev, "churner") == dev.host(1) and qemu_on(uid, dev.host(1))
    dev.wait("the target side removed", lambda: not qemu_on(uid, dev.host(2)), 30)

    policy["spec"]["allowPostCopy"] = True
    dev.kubectl("apply", "-f", "-", input=json.dumps(policy))
    out = dev.atoll("vm", "migrate", "churner", "-n", NS)
    assert out.returncode == 0, out.stdout + out.stderr
    moved = max(migrations(dev, "churner"), key=lambda m: m["metadata"]["creationTimestamp"])
    assert moved["status"]["phase"] == "Succeeded" and moved["status"]["postCopy"] is True
    assert host_of(dev, "churner") == dev.host(2) and len(qemus(uid)) == 1
    got = dev.in_host(1, [sys.executable, "-c", f"import urllib.request;print(urllib.request."
                                                f"urlopen('http://{ip}/', timeout=10).read()"
                                                f".decode())"], stdout=subprocess.PIPE, text=True)
    assert got.communicate(timeout=30)[0].strip() == "up"


def test_a_vm_bootstrapped_from_a_secret_moves(dev: DevCluster) -> None:
    """The target prepares the VM's seed from its raw cloud-config Secret: the Node authorizer
    lets the host a migration is bringing a VM to read it (and no other host)."""
    dev.kubectl("create", "secret", "generic", "boot-data", "-n", NS,
                "--from-literal=user-data=#cloud-config\nruncmd:\n- echo from-a-secret\n")
    vm = json.loads(vm_manifest("secretive", dev.host(1)))
    vm["spec"]["bootstrap"] = {"cloudInit": {"rawCloudConfig": {"name": "boot-data",
                                                                "key": "user-data"}}}
    dev.kubectl("apply", "-f", "-", input=json.dumps(vm))
    uid = booted(dev, "secretive")["metadata"]["uid"]
    out = dev.atoll("vm", "migrate", "secretive", "-n", NS)
    assert out.returncode == 0, out.stdout + out.stderr
    assert host_of(dev, "secretive") == dev.host(2) and len(qemus(uid)) == 1
    # the host that ran it before may no longer read it; its new host may
    for i, allowed in ((1, "no"), (2, "yes")):
        got = subprocess.run(
            [*dev.kubectl_argv(), "--kubeconfig", str(dev.data / f"{dev.host(i)}.kubeconfig"),
             "auth", "can-i", "get", "secret/boot-data", "-n", NS],
            capture_output=True, text=True, env=dev.env)
        assert got.stdout.split()[0] == allowed, (i, got.stdout, got.stderr)


def test_a_vm_on_a_local_claim_moves_with_its_volume(dev: DevCluster, tmp_path: Path) -> None:
    """A claim on the host's own datastore follows its VM: the target makes an empty volume,
    the mirror fills it while the guest writes, the PV's nodeAffinity moves to the target
    (PersistentVolume nodeAffinity is mutable, as upstream's KEP-5381), the old copy goes."""
    dev.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "keeper-data", "namespace": NS},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {
            "storage": "64Mi"}}}}))
    vm = json.loads(vm_manifest("keeper", dev.host(1), [DUMPER, WRITER]))
    vm["spec"]["volumes"] = [{"name": "data",
                              "persistentVolumeClaim": {"claimName": "keeper-data"}}]
    dev.kubectl("apply", "-f", "-", input=json.dumps(vm))
    vm = booted(dev, "keeper")
    uid, ip = vm["metadata"]["uid"], vm["status"]["network"]["primaryIP4"]
    pv_name = dev.get("pvc", "-n", NS, "keeper-data")["spec"]["volumeName"]
    handle = dev.get("pv", pv_name)["spec"]["csi"]["volumeHandle"]
    (tmp_path / "acks.py").write_text(ACKS)
    (tmp_path / "dump.py").write_text(DUMP)
    acks = dev.in_host(1, [sys.executable, str(tmp_path / "acks.py"), ip],
                       stdout=subprocess.PIPE, text=True)
    try:
        assert acks.stdout is not None and acks.stdout.readline().strip() == "connected"
        for there, left in ((2, 1), (1, 2)):
            out = dev.atoll("vm", "migrate", "keeper", "-n", NS, "--to", dev.host(there))
            assert out.returncode == 0, out.stdout + out.stderr
            assert host_of(dev, "keeper") == dev.host(there) and len(qemus(uid)) == 1
            terms = dev.get("pv", pv_name)["spec"]["nodeAffinity"]["required"]
            assert terms["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == \
                [dev.host(there)]
            dev.wait("the copy on the host it left removed", lambda: not (
                dev.data / dev.host(left) / "volumes" / handle).exists(), 60)
            assert (dev.data / dev.host(there) / "volumes" / handle).exists()
    finally:
        acks.send_signal(signal.SIGTERM)
    acked = int(acks.communicate(timeout=30)[0].strip().splitlines()[-1])
    assert acked > 10
    dump = dev.in_host(1, [sys.executable, str(tmp_path / "dump.py"), ip],
                       stdout=subprocess.PIPE)
    data = dump.communicate(timeout=60)[0]
    lost = [i for i in range(1, acked + 1) if data[i * 16:(i + 1) * 16] != b"blk %011d\n" % i]
    assert not lost, f"{len(lost)} of {acked} acknowledged writes lost, first {lost[:5]}"
    assert dev.get("pvc", "-n", NS, "keeper-data")["status"]["phase"] == "Bound"
