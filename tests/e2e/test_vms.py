"""VirtualMachines on real QEMU (TCG here): boot with cloud-init, power, console, restarts.

The tiny image (Debian's cloud kernel and a busybox initramfs) is built once per
session with `atoll image build tiny` and published to the content library; each
test makes its VMs in its own namespace.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.conftest import TEST_BRIDGE, Platform, kill_and_await_restart, run_dir

GROUP = "vmoperator.vmware.com"


@pytest.fixture(scope="session")
def tiny_image(platform: Platform) -> str:
    """The tiny image's object name, built and uploaded once."""
    out = subprocess.run([sys.executable, "-m", "atoll.cli.main", "image", "build", "tiny",
                          "--kubeconfig", str(platform.kubeconfig)],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        images = json.loads(platform.kubectl("get", "cvmi", "-o", "json").stdout)["items"]
        for image in images:
            if (image.get("status") or {}).get("name") == "tiny":
                return str(image["metadata"]["name"])
        time.sleep(0.3)
    raise AssertionError("the tiny image never showed up as a ClusterVirtualMachineImage")


def vm_yaml(ns: str, name: str, image: str, *, klass: str = "best-effort-xsmall",
            power: str = "PoweredOn", runcmd: list[str] | None = None, extra: str = "") -> str:
    cmds = json.dumps(runcmd or [f"echo marker-{name}"])
    return f"""apiVersion: {GROUP}/v1alpha3
kind: VirtualMachine
metadata: {{name: {name}, namespace: {ns}, labels: {{app: {name}}}}}
spec:
  className: {klass}
  imageName: {image}
  powerState: {power}
  bootstrap:
    cloudInit:
      cloudConfig:
        runcmd: {cmds}
{extra}"""


def get_vm(platform: Platform, ns: str, name: str) -> dict[str, Any]:
    out = platform.kubectl("get", "vm", name, "-n", ns, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def wait_vm(platform: Platform, ns: str, name: str, check: Callable[[dict[str, Any]], bool],
            timeout: float = 120, what: str = "") -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    vm: dict[str, Any] = {}
    while time.monotonic() < deadline:
        vm = get_vm(platform, ns, name)
        if vm and check(vm):
            return vm
        time.sleep(0.3)
    raise AssertionError(f"vm {name} never got {what}: {json.dumps(vm.get('status'), indent=1)}")


def power(state: str) -> Callable[[dict[str, Any]], bool]:
    return lambda vm: (vm.get("status") or {}).get("powerState") == state


def condition(vm: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (vm.get("status") or {}).get("conditions") or []
                 if c.get("type") == type_), {})


def console_log(platform: Platform, ns: str, name: str) -> str:
    out = platform.kubectl("get", "--raw",
                           f"/apis/{GROUP}/v1alpha3/namespaces/{ns}/virtualmachines/{name}/console",
                           check=False)
    return out.stdout or out.stderr


def wait_console(platform: Platform, ns: str, name: str, text: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    log = ""
    while time.monotonic() < deadline:
        log = console_log(platform, ns, name)
        if text in log:
            return log
        time.sleep(0.5)
    raise AssertionError(f"{text!r} never appeared on {name}'s console:\n{log[-3000:]}")


def alive(pid: int) -> bool:
    """Running (a zombie has exited: only its reaping by init is pending)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def qemu_pid(platform: Platform, vm: dict[str, Any]) -> int | None:
    pidfile = run_dir(platform.data_dir) / "vms" / vm["metadata"]["uid"] / "qemu.pid"
    try:
        pid = int(pidfile.read_text())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def test_vm_boots_runs_cloud_init_and_powers_off_and_on(platform: Platform, namespace: str,
                                                        tiny_image: str) -> None:
    platform.kubectl("apply", "-f", "-", input=vm_yaml(
        namespace, "web", tiny_image, runcmd=["echo marker-web", "mkdir -p /www",
                                              "echo hello > /www/index.html",
                                              "httpd -p 8080 -h /www"],
        extra="  readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}\n"))
    vm = wait_vm(platform, namespace, "web", power("PoweredOn"), what="PoweredOn")
    assert vm["metadata"]["labels"]["vmoperator.atoll.dev/host"] == vm["status"]["nodeName"]
    assert condition(vm, "VirtualMachineConditionPlacementReady")["reason"] == "PlacementSatisfied"
    assert condition(vm, "VirtualMachineClassReady")["status"] == "True"
    assert vm["status"]["accelerator"] in ("kvm", "tcg")
    assert "vmoperator.vmware.com/virtualmachine" in vm["metadata"]["finalizers"]
    vm = wait_vm(platform, namespace, "web",
                 lambda v: (v["status"].get("network") or {}).get("primaryIP4"), what="an IP")
    ip = vm["status"]["network"]["primaryIP4"]
    wait_console(platform, namespace, "web", "marker-web")
    vm = wait_vm(platform, namespace, "web",
                 lambda v: condition(v, "Ready").get("status") == "True", what="Ready")
    vm = wait_vm(platform, namespace, "web",
                 lambda v: condition(v, "GuestBootstrap").get("reason") == "CloudInitDone",
                 what="GuestBootstrap=True")
    # the guest answers on the pod network
    with urllib.request.urlopen(f"http://{ip}:8080/", timeout=10) as resp:
        assert resp.read().decode().strip() == "hello"
    table = platform.kubectl("get", "vm", "web", "-n", namespace).stdout
    assert "PoweredOn" in table and ip in table
    pid = qemu_pid(platform, vm)
    assert pid is not None

    platform.kubectl("patch", "vm", "web", "-n", namespace, "--type=merge", "-p",
                     '{"spec":{"powerState":"PoweredOff","powerOffMode":"Soft"}}')
    vm = wait_vm(platform, namespace, "web", power("PoweredOff"), timeout=60, what="PoweredOff")
    assert qemu_pid(platform, vm) is None
    assert condition(vm, "Ready").get("status") != "True"

    platform.kubectl("patch", "vm", "web", "-n", namespace, "--type=merge", "-p",
                     '{"spec":{"powerState":"PoweredOn"}}')
    vm = wait_vm(platform, namespace, "web", power("PoweredOn"), what="PoweredOn again")
    assert qemu_pid(platform, vm) not in (None, pid)
    events = platform.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    reasons = {e["reason"] for e in json.loads(events)["items"]}
    assert {"Placed", "PowerOn", "PowerOff"} <= reasons


def test_suspend_resume_and_restart(platform: Platform, namespace: str, tiny_image: str) -> None:
    platform.kubectl("apply", "-f", "-", input=vm_yaml(namespace, "sr", tiny_image))
    vm = wait_vm(platform, namespace, "sr", power("PoweredOn"), what="PoweredOn")
    wait_console(platform, namespace, "sr", "marker-sr")
    pid = qemu_pid(platform, vm)
    platform.kubectl("patch", "vm", "sr", "-n", namespace, "--type=merge", "-p",
                     '{"spec":{"powerState":"Suspended"}}')
    wait_vm(platform, namespace, "sr", power("Suspended"), what="Suspended")
    platform.kubectl("patch", "vm", "sr", "-n", namespace, "--type=merge", "-p",
                     '{"spec":{"powerState":"PoweredOn"}}')
    vm = wait_vm(platform, namespace, "sr", power("PoweredOn"), what="resumed")
    assert qemu_pid(platform, vm) == pid  # resumed, not restarted
    platform.kubectl("patch", "vm", "sr", "-n", namespace, "--type=merge", "-p",
                     '{"spec":{"nextRestartTime":"now","restartMode":"Hard"}}')
    vm = get_vm(platform, namespace, "sr")
    assert vm["spec"]["nextRestartTime"] not in ("", "now")  # the server stamps the time
    wait_console(platform, namespace, "sr", "marker-sr")
    deadline = time.monotonic() + 60
    while console_log(platform, namespace, "sr").count("marker-sr") < 2:
        assert time.monotonic() < deadline, "the guest never booted a second time"
        time.sleep(0.5)


def test_qemu_crash_and_agent_restart(platform: Platform, namespace: str,
                                      tiny_image: str) -> None:
    platform.kubectl("apply", "-f", "-", input=vm_yaml(namespace, "tough", tiny_image))
    vm = wait_vm(platform, namespace, "tough", power("PoweredOn"), what="PoweredOn")
    pid = qemu_pid(platform, vm)
    assert pid is not None
    # the agent dies: the VM keeps running, and the next agent adopts it
    kill_and_await_restart(f"agent --kubeconfig {platform.data_dir / 'agent.kubeconfig'}")
    assert alive(pid)
    # QEMU dies: the VM is reported and started again
    os.kill(pid, signal.SIGKILL)
    vm = wait_vm(platform, namespace, "tough",
                 lambda v: power("PoweredOn")(v) and qemu_pid(platform, v) not in (None, pid),
                 what="a new QEMU")
    deadline = time.monotonic() + 30
    while True:
        events = json.loads(platform.kubectl("get", "events", "-n", namespace,
                                             "-o", "json").stdout)["items"]
        if any(e["reason"] == "VirtualMachineCrashed" for e in events):
            break
        assert time.monotonic() < deadline, "no VirtualMachineCrashed event"
        time.sleep(0.3)


def test_console_attach_through_the_api_server(platform: Platform, namespace: str,
                                               tiny_image: str) -> None:
    platform.kubectl("apply", "-f", "-", input=vm_yaml(namespace, "con", tiny_image))
    wait_vm(platform, namespace, "con", power("PoweredOn"), what="PoweredOn")
    wait_console(platform, namespace, "con", "marker-con")
    out = subprocess.run([sys.executable, "-m", "atoll.cli.main", "vm", "console", "con",
                          "-n", namespace, "--kubeconfig", str(platform.kubeconfig),
                          "--linger", "3"],
                         input="\necho answer-$((6*7))\n", capture_output=True, text=True,
                         timeout=60)
    assert "answer-42" in out.stdout, out.stdout + out.stderr
    tail = subprocess.run([sys.executable, "-m", "atoll.cli.main", "vm", "console", "con",
                           "-n", namespace, "--kubeconfig", str(platform.kubeconfig), "--log",
                           "--tail", "5"], capture_output=True, text=True, timeout=30)
    assert tail.returncode == 0 and len(tail.stdout.splitlines()) <= 5


def test_bad_inputs_become_conditions(platform: Platform, namespace: str,
                                      tiny_image: str) -> None:
    platform.kubectl("apply", "-f", "-", input=vm_yaml(namespace, "noclass", tiny_image,
                                                       klass="no-such-class"))
    vm = wait_vm(platform, namespace, "noclass",
                 lambda v: condition(v, "VirtualMachineClassReady").get("reason") == "NotFound",
                 what="ClassReady=False/NotFound", timeout=30)
    assert "vmoperator.atoll.dev/host" not in (vm["metadata"].get("labels") or {})
    platform.kubectl("apply", "-f", "-", input=vm_yaml(namespace, "noimage", "no-such-image"))
    wait_vm(platform, namespace, "noimage",
            lambda v: condition(v, "VirtualMachineImageReady").get("reason") == "NotFound",
            what="ImageReady=False/NotFound", timeout=30)
    platform.kubectl("apply", "-f", "-", input=vm_yaml(namespace, "huge", tiny_image,
                                                       klass="best-effort-xlarge"))
    wait_vm(platform, namespace, "huge",
            lambda v: condition(v, "VirtualMachineConditionPlacementReady").get("reason") in
            ("InsufficientResources", "PlacementSatisfied"), what="a placement decision",
            timeout=30)
    # none of them holds the namespace hostage: deleting them is immediate
    platform.kubectl("delete", "vm", "noclass", "noimage", "-n", namespace, "--timeout=30s")


def test_delete_stops_qemu_and_cleans_up(platform: Platform, namespace: str,
                                         tiny_image: str) -> None:
    platform.kubectl("apply", "-f", "-", input=vm_yaml(namespace, "gone", tiny_image))
    vm = wait_vm(platform, namespace, "gone", power("PoweredOn"), what="PoweredOn")
    pid = qemu_pid(platform, vm)
    uid = vm["metadata"]["uid"]
    platform.kubectl("delete", "vm", "gone", "-n", namespace, "--timeout=90s")
    assert pid is not None and not alive(pid)
    assert not (run_dir(platform.data_dir) / "vms" / uid).exists()
    assert not (platform.data_dir / "agent" / "vms" / uid).exists()
    taps = subprocess.run(["ip", "-o", "link", "show", "master", TEST_BRIDGE],
                          capture_output=True, text=True).stdout
    assert ("vm" + uid.replace("-", "")[:13]) not in taps



def test_vmservice_lists_ready_vms(platform: Platform, namespace: str, tiny_image: str) -> None:
    platform.kubectl("apply", "-f", "-", input=vm_yaml(
        namespace, "db", tiny_image, runcmd=["mkdir -p /w", "echo ok > /w/index.html",
                                             "httpd -p 5432 -h /w"],
        extra="  readinessProbe: {tcpSocket: {port: 5432}, periodSeconds: 1}\n"))
    platform.kubectl("apply", "-f", "-", input=f"""apiVersion: {GROUP}/v1alpha3
kind: VirtualMachineService
metadata: {{name: db, namespace: {namespace}}}
spec:
  type: ClusterIP
  selector: {{app: db}}
  ports: [{{name: pg, protocol: TCP, port: 5432, targetPort: 5432}}]
""")
    vm = wait_vm(platform, namespace, "db",
                 lambda v: condition(v, "Ready").get("status") == "True", what="Ready")
    ip = vm["status"]["network"]["primaryIP4"]
    deadline = time.monotonic() + 30
    while True:
        out = platform.kubectl("get", "endpoints", "db", "-n", namespace, "-o", "json",
                               check=False)
        subsets = json.loads(out.stdout).get("subsets") if out.returncode == 0 else None
        if subsets and [a["ip"] for a in subsets[0].get("addresses") or []] == [ip]:
            break
        assert time.monotonic() < deadline, f"endpoints never listed {ip}: {subsets}"
        time.sleep(0.3)
    svc = json.loads(platform.kubectl("get", "service", "db", "-n", namespace, "-o",
                                      "json").stdout)
    assert not svc["spec"].get("selector") and svc["spec"]["ports"][0]["port"] == 5432
    # powered off: the VM leaves the ready addresses
    platform.kubectl("patch", "vm", "db", "-n", namespace, "--type=merge", "-p",
                     '{"spec":{"powerState":"PoweredOff","powerOffMode":"Hard"}}')
    deadline = time.monotonic() + 30
    while True:
        subsets = json.loads(platform.kubectl("get", "endpoints", "db", "-n", namespace, "-o",
                                              "json").stdout).get("subsets") or []
        if not any(s.get("addresses") for s in subsets):
            break
        assert time.monotonic() < deadline, f"a powered-off VM stayed ready: {subsets}"
        time.sleep(0.3)


def test_a_deleted_builtin_crd_comes_back(platform: Platform) -> None:
    name = "virtualmachineservices.vmoperator.vmware.com"
    uid = json.loads(platform.kubectl("get", "crd", name, "-o", "json").stdout)["metadata"]["uid"]
    platform.kubectl("delete", "crd", name, "--timeout=60s")
    deadline = time.monotonic() + 30
    while True:
        out = platform.kubectl("get", "crd", name, "-o", "json", check=False)
        if out.returncode == 0 and json.loads(out.stdout)["metadata"]["uid"] != uid:
            break
        assert time.monotonic() < deadline, "the built-in CRD was not restored"
        time.sleep(0.2)
    platform.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=30s")


def test_raw_cloud_config_secret_and_a_pvc_disk(platform: Platform, namespace: str,
                                                tiny_image: str) -> None:
    from tests.e2e.test_storage_volumes import bound_claim

    pv = bound_claim(platform, namespace, "data", "64Mi", mode="Block")  # a local raw volume
    platform.kubectl("apply", "-f", "-", input=f"""apiVersion: v1
kind: Secret
metadata: {{name: boot, namespace: {namespace}}}
stringData:
  user-data: |
    #!/bin/sh
    echo raw-script-ran disks: $(ls /dev/vd* | tr '\\n' ' ')
---
apiVersion: {GROUP}/v1alpha3
kind: VirtualMachine
metadata: {{name: raw, namespace: {namespace}}}
spec:
  className: best-effort-xsmall
  imageName: tiny
  bootstrap:
    cloudInit:
      rawCloudConfig: {{name: boot, key: user-data}}
  volumes:
  - name: data
    persistentVolumeClaim: {{claimName: data}}
""")
    wait_vm(platform, namespace, "raw", power("PoweredOn"), what="PoweredOn")
    log = wait_console(platform, namespace, "raw", "raw-script-ran")
    line = next(x for x in log.splitlines() if x.startswith("raw-script-ran"))
    assert line.split("disks:")[1].split() == ["/dev/vda", "/dev/vdb"]  # the PVC and the seed
    disk = platform.data_dir / "agent" / "volumes" / pv / "disk.raw"
    assert disk.stat().st_size == 64 << 20
    platform.kubectl("delete", "vm", "raw", "-n", namespace, "--timeout=60s")
    assert disk.exists()  # a VM's deletion leaves its claims' data alone


@pytest.mark.skipif(not os.environ.get("ATOLL_SLOW"), reason="builds Debian with debootstrap "
                    "(about 2 minutes, needs the Debian mirror); set ATOLL_SLOW=1")
def test_debian_image_with_cloud_init_and_a_grown_disk(platform: Platform,
                                                       namespace: str) -> None:
    out = subprocess.run([sys.executable, "-m", "atoll.cli.main", "image", "build", "debian",
                          "--kubeconfig", str(platform.kubeconfig)],
                         capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stdout + out.stderr
    platform.kubectl("apply", "-f", "-", input=vm_yaml(
        namespace, "deb", "debian-12", klass="best-effort-small",
        runcmd=["echo marker-deb-$(df -m / | awk 'NR==2 {print $2}') > /dev/ttyS0"],
        extra="  advanced: {bootDiskCapacity: 4Gi}\n"))
    log = wait_console(platform, namespace, "deb", "marker-deb-", timeout=300)
    size_mb = int(log.split("marker-deb-")[1].split()[0])
    assert size_mb > 3500  # the 2G image's root file system grew to the 4Gi disk
    platform.kubectl("patch", "vm", "deb", "-n", namespace, "--type=merge", "-p",
                     '{"spec":{"powerState":"PoweredOff","powerOffMode":"Soft"}}')
    wait_vm(platform, namespace, "deb", power("PoweredOff"), timeout=120, what="PoweredOff")


def test_an_imported_disk_that_does_not_boot_is_reported(platform: Platform, namespace: str,
                                                         tmp_path: Path) -> None:
    blank = tmp_path / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(blank), "64M"], check=True)
    out = subprocess.run([sys.executable, "-m", "atoll.cli.main", "image", "import", str(blank),
                          "--name", f"blank-{namespace}", "--kubeconfig",
                          str(platform.kubeconfig)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    corrupt = tmp_path / "corrupt.qcow2"
    corrupt.write_bytes(b"QFI\xfb" + b"\0" * 100)
    bad = subprocess.run([sys.executable, "-m", "atoll.cli.main", "image", "import",
                          str(corrupt), "--name", "corrupt", "--kubeconfig",
                          str(platform.kubeconfig)], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "error:" in bad.stderr
    platform.kubectl("apply", "-f", "-", input=vm_yaml(namespace, "nob", f"blank-{namespace}"))
    vm = wait_vm(platform, namespace, "nob",
                 lambda v: condition(v, "GuestBootstrap").get("reason") == "BootFailed",
                 timeout=60, what="GuestBootstrap=False")
    assert "not a bootable disk" in condition(vm, "GuestBootstrap")["message"]
    assert vm["status"]["powerState"] == "PoweredOn"
    platform.kubectl("delete", "vm", "nob", "-n", namespace, "--timeout=90s")
