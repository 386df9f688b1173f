"""A pod with ``runtimeClassName: atoll-vm`` runs in its own QEMU microvm (TCG here)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from atoll.agent.podvm.runtime import unavailable
from atoll.agent.podvm.vm import MARKER
from tests.conftest import TEST_NODE, Platform, kill_and_await_restart, wait_until
from tests.e2e.test_pods import phase, pod_yaml, wait_node, wait_pod

pytestmark = pytest.mark.skipif(bool(unavailable()), reason=unavailable() or "")
VM = "  runtimeClassName: atoll-vm"


def qemu_of(uid: str) -> bool:
    return subprocess.run(["pgrep", "-f", MARKER + uid], capture_output=True).returncode == 0


def qemus_of(uid: str) -> int:
    out = subprocess.run(["pgrep", "-f", MARKER + uid], capture_output=True, text=True).stdout
    return len(out.split())


def test_pod_vm_runs_busybox_with_its_own_kernel(platform: Platform, namespace: str) -> None:
    wait_node(platform)
    node = json.loads(platform.kubectl("get", "node", TEST_NODE, "-o", "json").stdout)
    assert "atoll-vm" in [h.get("name") for h in node["status"].get("runtimeHandlers") or []]
    platform.kubectl("apply", "-f", "-", input=pod_yaml(
        namespace, "vm-once", "uname -r; cat /proc/sys/kernel/random/boot_id", extra=VM))
    pod = wait_pod(platform, namespace, "vm-once", phase("Succeeded"), timeout=180)
    state = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert state["exitCode"] == 0
    release, boot_id = platform.kubectl("logs", "-n", namespace, "vm-once").stdout.split()
    assert release.endswith("-cloud-amd64")
    assert boot_id != Path("/proc/sys/kernel/random/boot_id").read_text().strip()

    # a long-running pod-VM: Running, an exec readiness probe through the guest agent, then
    # deleted with its grace period; nothing of its VM is left
    probe = ("    readinessProbe:\n      exec: {command: [cat, /tmp/ready]}\n"
             "      periodSeconds: 1\n      timeoutSeconds: 20")
    t0 = time.monotonic()
    platform.kubectl("apply", "-f", "-", input=pod_yaml(
        namespace, "vm-web", "trap 'echo stopping; exit 0' TERM; touch /tmp/ready; echo up; "
        "while :; do sleep 1; done", restart="Always", extra=VM, container_extra=probe))
    pod = wait_pod(platform, namespace, "vm-web", lambda p: "running" in (
        ((p.get("status") or {}).get("containerStatuses") or [{}])[0].get("state") or {}),
        timeout=180)
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    running_after = time.monotonic() - t0
    uid = pod["metadata"]["uid"]
    assert qemu_of(uid)
    wait_pod(platform, namespace, "vm-web", lambda p: any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (p.get("status") or {}).get("conditions") or []), timeout=120)
    assert "up" in platform.kubectl("logs", "-n", namespace, "vm-web").stdout
    # the pod IP lives in the guest: the host reaches it over the pod bridge and the tc redirect
    ip = wait_pod(platform, namespace, "vm-web", lambda p: bool(p["status"].get("podIP")))[
        "status"]["podIP"]
    wait_until(f"the pod-VM answers on {ip}", lambda: subprocess.run(
        ["busybox", "ping", "-c", "1", "-W", "2", ip], capture_output=True).returncode == 0,
        timeout=30)
    # kubectl exec (no terminal) goes through the guest agent, exit codes included
    out = platform.kubectl("exec", "-n", namespace, "vm-web", "--", "uname", "-r").stdout
    assert out.strip() == release
    failed = platform.kubectl("exec", "-n", namespace, "vm-web", "--", "sh", "-c",
                              "echo err >&2; exit 3", check=False)
    assert failed.returncode == 3 and "err" in failed.stderr
    # an agent killed with -9 leaves the VM to its successor, which (not adopting pod-VMs
    # yet) replaces it: never two QEMUs for one pod
    kill_and_await_restart(f"agent --kubeconfig {platform.data_dir / 'agent.kubeconfig'}")
    wait_pod(platform, namespace, "vm-web", lambda p: any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (p.get("status") or {}).get("conditions") or []), timeout=180)
    wait_until("one QEMU for the pod", lambda: qemus_of(uid) == 1, timeout=60)
    platform.kubectl("delete", "pod", "-n", namespace, "vm-web", "--wait=true", timeout=120)
    wait_until("the pod's QEMU gone", lambda: not qemu_of(uid), timeout=30)
    print(f"pod-VM create->Running {running_after:.1f} s (TCG)")  # shown with -s
